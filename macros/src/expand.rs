//! Code generation of the four job attributes.
//!
//! Generated code names runtime items only through `::durable_jobs::…` and `::core::…`, puts
//! its impls inside `const _: () = { … };` and marks them `#[automatically_derived]`. On error
//! the user's item is still emitted (with stubs for what is missing) next to the
//! `compile_error!`s, so one mistake does not cascade into a page of unrelated errors.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, ImplItem, ItemFn, ItemImpl, LitStr, Type};

use crate::ast::{self, JobFn, JobImpl};
use crate::attr::{self, BackoffArg, JobArgs, Kind, RetryArgs, ScheduleArg};
use crate::errors::Errors;
use crate::names::{pascal_case, snake_case};

/// The entry point of every job attribute.
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let job_args = attr::job_args(kind, args, &mut errors);
    match kind {
        Kind::Continuous | Kind::Step => match syn::parse2::<ItemFn>(item.clone()) {
            Ok(f) => fn_job(kind, &job_args, f, errors),
            Err(_) => misplaced(kind, item, errors),
        },
        Kind::Debounce | Kind::Task => match syn::parse2::<ItemImpl>(item.clone()) {
            Ok(i) => impl_job(kind, &job_args, i, errors),
            Err(_) => misplaced(kind, item, errors),
        },
    }
}

fn misplaced(kind: Kind, item: TokenStream, mut errors: Errors) -> TokenStream {
    let attr = kind.attr();
    let message = match kind {
        Kind::Continuous | Kind::Step => format!("{attr} goes on an `async fn`"),
        _ => format!(
            "{attr} goes on `impl {}<App> for YourType {{ ... }}`",
            ast::trait_name(kind)
        ),
    };
    let span = item
        .clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span());
    errors.push(syn::Error::new(span, message));
    let errors = errors.to_compile_errors();
    quote!(#errors #item)
}

fn app_generic() -> TokenStream {
    quote!(__DurableApp: ::core::marker::Send + ::core::marker::Sync + 'static)
}

fn duration(ms: u64) -> TokenStream {
    let ms = Literal::u64_unsuffixed(ms);
    quote!(::core::time::Duration::from_millis(#ms))
}

fn retry_policy(retry: &RetryArgs) -> TokenStream {
    let attempts = Literal::u32_unsuffixed(retry.max_attempts);
    let mut policy = quote!(::durable_jobs::RetryPolicy::new(#attempts));
    if let Some(backoff) = &retry.backoff {
        let backoff = match backoff {
            BackoffArg::Constant(d) => {
                let d = duration(*d);
                quote!(::durable_jobs::Backoff::constant(#d))
            }
            BackoffArg::Linear {
                initial,
                increment,
                max,
            } => {
                let (i, inc) = (duration(*initial), duration(*increment));
                let max = max.map(|m| {
                    let m = duration(m);
                    quote!(.max(#m))
                });
                quote!(::durable_jobs::Backoff::linear(#i, #inc) #max)
            }
            BackoffArg::Exponential {
                initial,
                factor,
                max,
            } => {
                let i = duration(*initial);
                let factor = factor.map(|f| {
                    let f = Literal::f64_unsuffixed(f);
                    quote!(.factor(#f))
                });
                let max = max.map(|m| {
                    let m = duration(m);
                    quote!(.max(#m))
                });
                quote!(::durable_jobs::Backoff::exponential(#i) #factor #max)
            }
        };
        policy = quote!(#policy.backoff(#backoff));
    }
    if let Some(jitter) = retry.jitter {
        policy = quote!(#policy.jitter(#jitter));
    }
    if let Some(limit) = retry.max_duration {
        let limit = duration(limit);
        policy = quote!(#policy.max_duration(#limit));
    }
    policy
}

fn retry_call(args: &JobArgs) -> Option<TokenStream> {
    args.retry.as_ref().map(|r| {
        let policy = retry_policy(r);
        quote!(.retry(#policy))
    })
}

/// The persisted name: `name = "..."`, or the item's name in snake_case.
fn persisted_name(args: &JobArgs, item_name: &str, span: Span) -> LitStr {
    match &args.name {
        Some(name) => name.clone(),
        None => LitStr::new(&snake_case(item_name), span),
    }
}

fn kind_variant(kind: Kind) -> TokenStream {
    match kind {
        Kind::Continuous => quote!(Continuous),
        Kind::Debounce => quote!(Debounce),
        Kind::Task => quote!(Task),
        Kind::Step => quote!(Step),
    }
}

fn job_impl(kind: Kind, ty: &TokenStream, name: &LitStr) -> TokenStream {
    let variant = kind_variant(kind);
    quote! {
        #[automatically_derived]
        impl ::durable_jobs::Job for #ty {
            const NAME: &'static ::core::primitive::str = #name;
            const KIND: ::durable_jobs::JobKind = ::durable_jobs::JobKind::#variant;
        }
    }
}

fn register_impl(
    kind: Kind,
    ty: &TokenStream,
    app: &TokenStream,
    generics: &TokenStream,
    where_clause: &TokenStream,
) -> TokenStream {
    let method = match kind {
        Kind::Continuous => quote!(continuous),
        Kind::Debounce => quote!(debounce),
        Kind::Task => quote!(task),
        Kind::Step => quote!(step_job),
    };
    quote! {
        #[automatically_derived]
        impl #generics ::durable_jobs::__private::RegisterJob<#app> for #ty #where_clause {
            fn register_into(self, __durable_jobs: &mut ::durable_jobs::JobSet<#app>) {
                ::durable_jobs::JobSet::#method(__durable_jobs, self);
            }
        }
    }
}

/// Impls of the three other kind traits that never hold: their `where` clause names a trait
/// without implementations whose `#[diagnostic::on_unimplemented]` message says which kind the
/// job is and which client accessor takes it. `client.task::<MyContinuousJob>()` then fails with
/// "`MyContinuousJob` is a #[continuous] job, not a #[task] job" instead of a generic message.
fn wrong_kind_impls(kind: Kind, ty: &TokenStream) -> TokenStream {
    let is = kind_variant(kind);
    let mut out = TokenStream::new();
    for wanted in [Kind::Continuous, Kind::Debounce, Kind::Task, Kind::Step] {
        if wanted == kind {
            continue;
        }
        let not = format_ident!("{}Not{}", is.to_string(), kind_variant(wanted).to_string());
        let never = quote! {
            match <::durable_jobs::__private::kind::#is as ::durable_jobs::__private::kind::#not<#ty, __DurableApp>>::unreachable() {}
        };
        let pending = quote!(::core::future::pending());
        let unit = quote!(());
        let infallible = quote!(::core::convert::Infallible);
        let fut = |output: TokenStream| quote!(impl ::core::future::Future<Output = #output> + ::core::marker::Send);
        let done = fut(quote!(::core::result::Result<(), #infallible>));
        let (trait_, body) = match wanted {
            Kind::Continuous => (
                quote!(ContinuousJob),
                quote! {
                    type State = #unit;
                    type Error = #infallible;
                    fn config(&self) -> ::durable_jobs::ContinuousConfig { #never }
                    fn execute(&self, _: &mut ::durable_jobs::ContinuousContext<#unit>, _: &__DurableApp) -> #done { #pending }
                },
            ),
            Kind::Debounce => (
                quote!(DebounceJob),
                quote! {
                    type Event = #unit;
                    type State = #unit;
                    type Error = #infallible;
                    fn config(&self) -> ::durable_jobs::DebounceConfig { #never }
                    fn on_event(&self, _: ::core::option::Option<#unit>, _: #unit, _: &::durable_jobs::EventContext) -> #unit { #never }
                    fn execute(&self, _: &mut ::durable_jobs::FlushContext<#unit>, _: &__DurableApp) -> #done { #pending }
                },
            ),
            Kind::Task => (
                quote!(TaskJob),
                quote! {
                    type State = #unit;
                    type Event = #unit;
                    type Error = #infallible;
                    fn on_event(&self, _: &mut ::durable_jobs::TaskContext<#unit>, _: #unit, _: &__DurableApp) -> #done { #pending }
                    fn execute(&self, _: &mut ::durable_jobs::TaskContext<#unit>, _: &__DurableApp) -> #done { #pending }
                },
            ),
            Kind::Step => (
                quote!(StepJob),
                quote! {
                    type Input = #unit;
                    type Output = #unit;
                    type Error = #infallible;
                    fn run(&self, _: &mut ::durable_jobs::StepContext, _: #unit, _: &__DurableApp) -> #done { #pending }
                },
            ),
        };
        let generic = app_generic();
        out.extend(quote! {
            #[doc(hidden)]
            #[allow(unreachable_code)]
            #[automatically_derived]
            impl<#generic> ::durable_jobs::#trait_<__DurableApp> for #ty
            where
                ::durable_jobs::__private::kind::#is: ::durable_jobs::__private::kind::#not<#ty, __DurableApp>,
            {
                #body
            }
        });
    }
    out
}

fn cfg_attrs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("cfg")).collect()
}

// ---------------------------------------------------------------------------------------------
// Function jobs: #[continuous] and #[step_job]

fn fn_job(kind: Kind, args: &JobArgs, item: ItemFn, mut errors: Errors) -> TokenStream {
    let fn_ident = item.sig.ident.clone();
    let fn_name = fn_ident.unraw().to_string();
    let type_name = pascal_case(&fn_name);
    if type_name == fn_name {
        errors.at(
            &fn_ident,
            format!(
                "name the function in snake_case, e.g. `{}`: {} generates the type `{type_name}` from it",
                snake_case(&fn_name),
                kind.attr()
            ),
        );
        let errors = errors.to_compile_errors();
        return quote!(#errors #item);
    }
    let ty_ident = syn::Ident::new(&type_name, fn_ident.span());
    let ty = ty_ident.to_token_stream();
    let vis = item.vis.clone();
    let docs: Vec<&Attribute> = item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let default_doc = docs.is_empty().then(|| {
        let doc = format!(
            "The {} job defined by the function `{fn_name}`.",
            kind.attr()
        );
        quote!(#[doc = #doc])
    });
    let cfgs = cfg_attrs(&item.attrs);
    let name = persisted_name(args, &fn_name, fn_ident.span());
    let job = job_impl(kind, &ty, &name);
    let wrong = wrong_kind_impls(kind, &ty);
    let strukt = quote! {
        #(#docs)*
        #default_doc
        #(#cfgs)*
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #ty_ident;
    };

    let parsed = ast::job_fn(kind, item.clone(), &mut errors);
    let Some(parsed) = parsed else {
        let errors = errors.to_compile_errors();
        return quote! {
            #errors
            #item
            #strukt
            #(#cfgs)*
            const _: () = { #job };
        };
    };
    let kind_impl = match kind {
        Kind::Continuous => continuous_impl(args, &parsed, &ty, errors.is_empty()),
        _ => step_impl(args, &parsed, &ty),
    };
    let errors = errors.to_compile_errors();
    quote! {
        #errors
        #item
        #strukt
        #(#cfgs)*
        const _: () = {
            #job
            #kind_impl
            #wrong
        };
    }
}

/// `Result<T, E>` written out gives `T` and `E` as written; anything else (an alias such as
/// `anyhow::Result<()>`) goes through `__private::ResultParts`.
fn result_parts(output: &Type) -> (TokenStream, TokenStream) {
    match ast::type_args(output, "Result") {
        Some(args) if args.len() == 2 => (args[0].to_token_stream(), args[1].to_token_stream()),
        _ => (
            quote_spanned!(output.span()=> <#output as ::durable_jobs::__private::ResultParts>::Ok),
            quote_spanned!(output.span()=> <#output as ::durable_jobs::__private::ResultParts>::Err),
        ),
    }
}

/// The app type and the impl generics: the user's `&App`, or any app.
fn app_of(app: Option<&Type>) -> (TokenStream, TokenStream) {
    match app {
        Some(app) => (app.to_token_stream(), TokenStream::new()),
        None => {
            let generic = app_generic();
            (quote!(__DurableApp), quote!(<#generic>))
        }
    }
}

fn continuous_impl(args: &JobArgs, job: &JobFn, ty: &TokenStream, args_ok: bool) -> TokenStream {
    let context = &job.context;
    let state = match ast::type_args(context, "ContinuousContext") {
        Some(a) if a.len() == 1 => a[0].to_token_stream(),
        _ => {
            quote_spanned!(context.span()=> <#context as ::durable_jobs::__private::ContinuousContextParts>::State)
        }
    };
    let (_, error) = result_parts(&job.output);
    let (app, generics) = app_of(job.app.as_ref());
    let function = &job.item.sig.ident;
    let pass_app = job.app.as_ref().map(|_| quote!(, __durable_app));
    let config = if args_ok {
        let schedule = match &args.schedule {
            Some(ScheduleArg::Every(ms)) => {
                let d = duration(*ms);
                quote!(::durable_jobs::Schedule::every(#d))
            }
            Some(ScheduleArg::Cron {
                expression,
                time_zone,
            }) => {
                let zone = match time_zone {
                    Some(z) => quote!(::core::option::Option::Some(#z)),
                    None => quote!(::core::option::Option::None),
                };
                quote!(::durable_jobs::__private::cron_schedule(#expression, #zone))
            }
            None => quote!(::durable_jobs::Schedule::every(
                ::core::time::Duration::from_secs(60)
            )),
        };
        let start = args
            .start_immediately
            .map(|b| quote!(.start_immediately(#b)));
        let retry = retry_call(args);
        quote!(::durable_jobs::ContinuousConfig::new(#schedule) #start #retry)
    } else {
        // Only emitted next to a compile error: never runs.
        quote!(loop {})
    };
    let hook = args.on_retry_exhausted.as_ref().map(|hook| {
        quote! {
            fn on_retry_exhausted(
                &self,
                __durable_exhausted: ::durable_jobs::RetryExhausted<Self::State>,
                __durable_app: &#app,
            ) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send {
                #hook(__durable_exhausted #pass_app)
            }
        }
    });
    let state_version = args.state_version.map(|v| {
        let v = Literal::u32_unsuffixed(v);
        quote!(const STATE_VERSION: u32 = #v;)
    });
    let migrate = args.migrate.as_ref().map(|migrate| {
        quote! {
            fn migrate_state(
                &self,
                __durable_stored: ::durable_jobs::__private::serde_json::Value,
                __durable_version: u32,
            ) -> ::core::result::Result<Self::State, ::durable_jobs::BoxError> {
                #migrate(__durable_stored, __durable_version).map_err(::core::convert::Into::into)
            }
        }
    });
    let register = register_impl(Kind::Continuous, ty, &app, &generics, &TokenStream::new());
    quote! {
        #[automatically_derived]
        impl #generics ::durable_jobs::ContinuousJob<#app> for #ty {
            type State = #state;
            type Error = #error;
            #state_version

            fn config(&self) -> ::durable_jobs::ContinuousConfig {
                #config
            }

            fn execute(
                &self,
                __durable_ctx: &mut ::durable_jobs::ContinuousContext<Self::State>,
                __durable_app: &#app,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<(), Self::Error>> + ::core::marker::Send {
                #function(__durable_ctx #pass_app)
            }

            #hook
            #migrate
        }
        #register
    }
}

fn step_impl(args: &JobArgs, job: &JobFn, ty: &TokenStream) -> TokenStream {
    let input = &job.input;
    let (output, error) = result_parts(&job.output);
    let (app, generics) = app_of(job.app.as_ref());
    let function = &job.item.sig.ident;
    let pass_app = job.app.as_ref().map(|_| quote!(, __durable_app));
    let config = retry_call(args).map(|retry| {
        quote! {
            fn config(&self) -> ::durable_jobs::StepJobConfig {
                <::durable_jobs::StepJobConfig as ::core::default::Default>::default() #retry
            }
        }
    });
    let register = register_impl(Kind::Step, ty, &app, &generics, &TokenStream::new());
    quote! {
        #[automatically_derived]
        impl #generics ::durable_jobs::StepJob<#app> for #ty {
            type Input = #input;
            type Output = #output;
            type Error = #error;

            #config

            fn run(
                &self,
                __durable_step: &mut ::durable_jobs::StepContext,
                __durable_input: Self::Input,
                __durable_app: &#app,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<Self::Output, Self::Error>> + ::core::marker::Send {
                #function(__durable_step, __durable_input #pass_app)
            }
        }
        #register
    }
}

// ---------------------------------------------------------------------------------------------
// Impl jobs: #[debounce] and #[task]

/// A handler of an impl job: its name, its parameter count with `app` (without `self`), whether
/// the impl must define it, and a stub used when it is missing.
struct Handler {
    name: &'static str,
    arity_with_app: Option<usize>,
    required: bool,
    signature: &'static str,
}

fn handlers(kind: Kind) -> &'static [Handler] {
    match kind {
        Kind::Debounce => &[
            Handler {
                name: "on_event",
                arity_with_app: None,
                required: true,
                signature: "fn on_event(&self, state: Option<Self::State>, event: Self::Event, ctx: &EventContext) -> Self::State",
            },
            Handler {
                name: "execute",
                arity_with_app: Some(2),
                required: true,
                signature: "async fn execute(&self, ctx: &mut FlushContext<Self::State>, app: &App) -> Result<(), Self::Error>",
            },
            Handler { name: "on_retry_exhausted", arity_with_app: Some(2), required: false, signature: "" },
        ],
        Kind::Task => &[
            Handler {
                name: "on_event",
                arity_with_app: Some(3),
                required: true,
                signature: "async fn on_event(&self, ctx: &mut TaskContext<Self::State>, event: Self::Event, app: &App) -> Result<(), Self::Error>",
            },
            Handler {
                name: "execute",
                arity_with_app: Some(2),
                required: true,
                signature: "async fn execute(&self, ctx: &mut TaskContext<Self::State>, app: &App) -> Result<(), Self::Error>",
            },
            Handler { name: "on_idle", arity_with_app: Some(3), required: false, signature: "" },
            Handler { name: "on_error", arity_with_app: Some(4), required: false, signature: "" },
        ],
        _ => &[],
    }
}

/// A stand-in for a missing handler, emitted only next to the error that reports it, so rustc
/// does not report the same omission a second time.
fn stub(kind: Kind, name: &str, app: &TokenStream) -> ImplItem {
    let done = quote!(
        impl ::core::future::Future<Output = ::core::result::Result<(), Self::Error>>
            + ::core::marker::Send
    );
    let tokens = match (kind, name) {
        (Kind::Debounce, "on_event") => quote! {
            fn on_event(&self, _: ::core::option::Option<Self::State>, _: Self::Event, _: &::durable_jobs::EventContext) -> Self::State { loop {} }
        },
        (Kind::Debounce, _) => quote! {
            fn execute(&self, _: &mut ::durable_jobs::FlushContext<Self::State>, _: &#app) -> #done { ::core::future::pending() }
        },
        (_, "on_event") => quote! {
            fn on_event(&self, _: &mut ::durable_jobs::TaskContext<Self::State>, _: Self::Event, _: &#app) -> #done { ::core::future::pending() }
        },
        _ => quote! {
            fn execute(&self, _: &mut ::durable_jobs::TaskContext<Self::State>, _: &#app) -> #done { ::core::future::pending() }
        },
    };
    syn::parse_quote!(#tokens)
}

fn impl_job(kind: Kind, args: &JobArgs, item: ItemImpl, mut errors: Errors) -> TokenStream {
    let original = item.clone();
    let Some(JobImpl {
        mut item,
        self_ident,
        app,
    }) = ast::job_impl(kind, item, &mut errors)
    else {
        let errors = errors.to_compile_errors();
        return quote!(#errors #original);
    };
    let attr = kind.attr();
    let trait_name = ast::trait_name(kind);
    let any_app = app.is_none();
    let app_tokens = app
        .as_ref()
        .map_or_else(|| quote!(__DurableApp), ToTokens::to_token_stream);

    // Handlers: present, missing, and (for an impl for any app) without an `app` parameter.
    let present = ast::method_names(&item);
    for (name, span) in &present {
        if name == "config" && kind == Kind::Debounce {
            errors.push(syn::Error::new(
                *span,
                "remove `fn config`: #[debounce] writes it from its arguments (`flush_after`, `quiet`, `max_events`, `retry`)",
            ));
        }
    }
    let trait_path = item.trait_.as_ref().map(|(_, p, _)| p.clone());
    let mut stubs = Vec::new();
    for handler in handlers(kind) {
        if handler.required && !present.iter().any(|(n, _)| n == handler.name) {
            let signature = if any_app {
                handler.signature.replace(", app: &App", "")
            } else {
                handler.signature.to_owned()
            };
            errors.at(
                &trait_path,
                format!(
                    "this {attr} impl has no `{}` handler; add `{signature} {{ ... }}`",
                    handler.name
                ),
            );
            stubs.push(stub(kind, handler.name, &app_tokens));
        }
    }
    if any_app {
        for impl_item in &mut item.items {
            let ImplItem::Fn(f) = impl_item else { continue };
            let name = f.sig.ident.unraw().to_string();
            let Some(arity) = handlers(kind)
                .iter()
                .find(|h| h.name == name)
                .and_then(|h| h.arity_with_app)
            else {
                continue;
            };
            let params = f
                .sig
                .inputs
                .iter()
                .filter(|a| matches!(a, FnArg::Typed(_)))
                .count();
            if params == arity {
                let last = f.sig.inputs.last().map(ToTokens::to_token_stream);
                // Give the parameter the type the trait expects, so rustc does not add a
                // signature mismatch (suggesting the hidden generic) to the error below.
                if let Some(FnArg::Typed(param)) = f.sig.inputs.last_mut() {
                    param.ty = syn::parse_quote!(&__DurableApp);
                }
                errors.at(
                    last,
                    format!(
                        "`impl {trait_name} for {self_ident}` runs with any app type, so `{name}` takes no `app` parameter; \
                         remove it, or write `impl {trait_name}<App> for {self_ident}` to receive `&App`"
                    ),
                );
            } else if params + 1 == arity {
                f.sig.inputs.push(syn::parse_quote!(_: &__DurableApp));
            }
        }
        let generic = app_generic();
        item.generics.params.push(syn::parse_quote!(#generic));
        if let Some((_, path, _)) = &mut item.trait_ {
            if let Some(last) = path.segments.last_mut() {
                last.arguments =
                    syn::PathArguments::AngleBracketed(syn::parse_quote!(<__DurableApp>));
            }
        }
    }
    item.items.extend(stubs);

    if kind == Kind::Debounce {
        let body = match (errors.is_empty(), args.flush_after) {
            (true, Some(flush_after)) => {
                let flush_after = duration(flush_after);
                let quiet = args.quiet.map(|q| {
                    let q = duration(q);
                    quote!(.quiet(#q))
                });
                let max_events = args.max_events.map(|n| {
                    let n = Literal::u64_unsuffixed(n);
                    quote!(.max_events(#n))
                });
                let retry = retry_call(args);
                quote!(::durable_jobs::DebounceConfig::new(#flush_after) #quiet #max_events #retry)
            }
            // Only emitted next to a compile error: never runs.
            _ => quote!(loop {}),
        };
        item.items.push(syn::parse_quote! {
            fn config(&self) -> ::durable_jobs::DebounceConfig {
                #body
            }
        });
    }

    let self_ty = item.self_ty.to_token_stream();
    let name = persisted_name(args, &self_ident.to_string(), self_ident.span());
    let job = job_impl(kind, &self_ty, &name);
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let register = register_impl(
        kind,
        &self_ty,
        &app_tokens,
        &impl_generics.to_token_stream(),
        &where_clause.to_token_stream(),
    );
    let wrong = wrong_kind_impls(kind, &self_ty);
    let cfgs = cfg_attrs(&item.attrs);
    let errors = errors.to_compile_errors();
    quote! {
        #errors
        #item
        #(#cfgs)*
        const _: () = {
            #job
            #register
            #wrong
        };
    }
}
