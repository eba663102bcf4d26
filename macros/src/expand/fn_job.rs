//! Function jobs: `#[continuous]` and `#[step_job]` on an `async fn`. The function stays as
//! written; the macro adds the job type (the function's name in PascalCase) and its impls,
//! which call the function.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, ItemFn};

use super::{app_or_any, cfg_attrs, duration, identity_impls, persisted_name, retry_call};
use crate::ast::{self, JobFn};
use crate::attr::{JobArgs, Kind, ScheduleArg};
use crate::errors::Errors;
use crate::fallback;
use crate::names::{pascal_case, snake_case};
use crate::valid::{self, Returns};

pub(super) fn expand(kind: Kind, args: &JobArgs, item: ItemFn, mut errors: Errors) -> TokenStream {
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
    let cfgs: Vec<Attribute> = cfg_attrs(&item.attrs).into_iter().cloned().collect();
    let strukt = job_struct(kind, &item, &ty_ident, &fn_name);
    let name = persisted_name(args, &fn_name, fn_ident.span());
    let identity = identity_impls(kind, &ty, &name, &quote!(Self));

    let parsed = ast::job_fn(kind, item.clone(), &mut errors);
    let signature = parsed
        .as_ref()
        .and_then(|job| types(kind, job, &mut errors));
    let mut item = item;
    let kind_impl = match (&parsed, signature) {
        (Some(job), Some(types)) => match kind {
            Kind::Continuous => continuous_impl(args, job, &ty, &types, errors.is_empty()),
            _ => step_impl(args, job, &ty, &types),
        },
        _ => {
            item.attrs.push(syn::parse_quote!(#[allow(dead_code)]));
            let (app, generics) = app_or_any(parsed.as_ref().and_then(|j| j.app.as_ref()));
            fallback::fn_kind_impl(kind, &ty, &app, &generics)
        }
    };
    let errors = errors.to_compile_errors();
    quote! {
        #errors
        #item
        #strukt
        #(#cfgs)*
        const _: () = {
            #identity
            #kind_impl
        };
    }
}

/// `pub struct TokenRefresher;`, with the function's visibility, documentation and `#[cfg]`s.
fn job_struct(kind: Kind, item: &ItemFn, ty_ident: &syn::Ident, fn_name: &str) -> TokenStream {
    let vis = &item.vis;
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
    quote! {
        #(#docs)*
        #default_doc
        #(#cfgs)*
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #ty_ident;
    }
}

/// The types a function job's impl declares, read from its signature.
struct Types {
    /// The continuous job's state.
    state: TokenStream,
    /// The step job's output.
    output: TokenStream,
    /// The error type.
    error: TokenStream,
}

/// Reads the state, output and error types, refusing what cannot be right.
fn types(kind: Kind, job: &JobFn, errors: &mut Errors) -> Option<Types> {
    let attr = kind.attr();
    let context = &job.context;
    let state = match kind {
        Kind::Continuous => {
            let what = format!("a {attr} function takes `ctx: &mut ContinuousContext<State>`");
            if valid::other_context(context, "ContinuousContext", &what, errors) {
                return None;
            }
            match ast::type_args(context, "ContinuousContext") {
                Some(a) if a.len() == 1 => a[0].to_token_stream(),
                _ => quote_spanned! {context.span()=>
                    <#context as ::durable_jobs::checks::ContinuousContextParts>::State
                },
            }
        }
        _ => {
            let what = format!("a {attr} function takes `step: &mut StepContext`");
            if valid::other_context(context, "StepContext", &what, errors) {
                return None;
            }
            TokenStream::new()
        }
    };
    let (output, error) = match valid::returns(kind, &job.output, errors) {
        Returns::Wrong => return None,
        Returns::Result { ok, err } => (ok.to_token_stream(), err.to_token_stream()),
        Returns::Alias => {
            let out = &job.output;
            (
                quote_spanned!(out.span()=> <#out as ::durable_jobs::checks::ResultParts>::Ok),
                quote_spanned!(out.span()=> <#out as ::durable_jobs::checks::ResultParts>::Err),
            )
        }
    };
    Some(Types {
        state,
        output,
        error,
    })
}

/// The call of the user's function with the impl's arguments.
fn call(job: &JobFn, first: TokenStream, input: Option<TokenStream>) -> TokenStream {
    let function = &job.item.sig.ident;
    let app = job.app.as_ref().map(|_| quote!(, __durable_app));
    let input = input.map(|i| quote!(, #i));
    quote!(#function(#first #input #app))
}

/// `impl Future<Output = ..> + Send`, on the function's name: a future that is not `Send` is
/// reported there, as "future returned by `name` is not `Send`".
fn future(job: &JobFn, output: TokenStream) -> TokenStream {
    let function = &job.item.sig.ident;
    quote_spanned! {function.span()=>
        impl ::core::future::Future<Output = #output> + ::core::marker::Send
    }
}

fn continuous_impl(
    args: &JobArgs,
    job: &JobFn,
    ty: &TokenStream,
    types: &Types,
    args_ok: bool,
) -> TokenStream {
    let Types { state, error, .. } = types;
    let (app, generics) = app_or_any(job.app.as_ref());
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
    let pass_app = job.app.as_ref().map(|_| quote!(, __durable_app));
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
        let v = proc_macro2::Literal::u32_unsuffixed(v);
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
    let call = call(job, quote!(__durable_ctx), None);
    let future = future(job, quote!(::core::result::Result<(), Self::Error>));
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
            ) -> #future {
                #call
            }

            #hook
            #migrate
        }
    }
}

fn step_impl(args: &JobArgs, job: &JobFn, ty: &TokenStream, types: &Types) -> TokenStream {
    let input = job.input.as_ref().map(ToTokens::to_token_stream);
    let Types { output, error, .. } = types;
    let (app, generics) = app_or_any(job.app.as_ref());
    let config = retry_call(args).map(|retry| {
        quote! {
            fn config(&self) -> ::durable_jobs::StepJobConfig {
                <::durable_jobs::StepJobConfig as ::core::default::Default>::default() #retry
            }
        }
    });
    let call = call(job, quote!(__durable_step), Some(quote!(__durable_input)));
    let future = future(
        job,
        quote!(::core::result::Result<Self::Output, Self::Error>),
    );
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
            ) -> #future {
                #call
            }
        }
    }
}
