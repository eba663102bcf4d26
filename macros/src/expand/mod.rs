//! Code generation of the four job attributes, by phase: the arguments are read (`attr`), the
//! item's shape is checked (`ast`, `valid`), then a function job (`fn_job`) or a trait-impl job
//! (`impl_job`) is generated; next to an error, `fallback` supplies what is missing so that
//! one mistake stays one error.
//!
//! Generated code names runtime items only through `::durable_jobs::…` and `::core::…`, puts
//! its impls inside `const _: () = { … };` and marks them `#[automatically_derived]`. Each job
//! gets:
//! - `Job` (its persisted name and kind) and `checks::KindOf` (its kind as a type and its
//!   value), from which the runtime derives the wrong-kind errors of the typed client and
//!   `RegisterJob`, which `registry!` calls (see `durable_jobs::checks`);
//! - its kind trait (`ContinuousJob`, ...): the user's own impl for `#[debounce]` and `#[task]`.
//!
//! It carries no `#[diagnostic]` attribute: those live on the runtime's traits and impls, since
//! one emitted here would not resolve in a module under `#[no_implicit_prelude]`.

mod fn_job;
mod impl_job;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{ItemFn, ItemImpl, LitStr, Type};

use crate::attr::{self, BackoffArg, JobArgs, Kind, RetryArgs};
use crate::errors::Errors;
use crate::fallback;
use crate::names::snake_case;

/// The name of the app type parameter of a job defined for any app type. It appears in rustc's
/// messages about such jobs (`expected signature fn(&Job, &mut TaskContext<u32>, &AnyApp)`), so
/// it is written for people.
const ANY_APP: &str = "AnyApp";

/// The entry point of every job attribute.
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let job_args = attr::job_args(kind, args, &mut errors);
    match kind {
        Kind::Continuous | Kind::Step => match syn::parse2::<ItemFn>(item.clone()) {
            Ok(f) => fn_job::expand(kind, &job_args, f, errors),
            Err(_) => fallback::misplaced(kind, item, errors),
        },
        Kind::Debounce | Kind::Task => match syn::parse2::<ItemImpl>(item.clone()) {
            Ok(i) => impl_job::expand(kind, &job_args, i, errors),
            Err(_) => fallback::misplaced(kind, item, errors),
        },
    }
}

fn any_app() -> syn::Ident {
    syn::Ident::new(ANY_APP, Span::call_site())
}

/// `AnyApp: Send + Sync + 'static`, the generic parameter of an impl for any app type.
fn any_app_param() -> TokenStream {
    let any = any_app();
    quote!(#any: ::core::marker::Send + ::core::marker::Sync + 'static)
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

/// `.retry(policy)` when the attribute has `retry(...)`.
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

/// The `JobKind` variant and the `checks` kind type of `kind`.
fn kind_names(kind: Kind) -> (TokenStream, TokenStream) {
    match kind {
        Kind::Continuous => (quote!(Continuous), quote!(ContinuousKind)),
        Kind::Debounce => (quote!(Debounce), quote!(DebounceKind)),
        Kind::Task => (quote!(Task), quote!(TaskKind)),
        Kind::Step => (quote!(Step), quote!(StepKind)),
    }
}

/// `Job` and `KindOf`: what every job is, whatever else failed. `value` makes the job.
fn identity_impls(kind: Kind, ty: &TokenStream, name: &LitStr, value: &TokenStream) -> TokenStream {
    let (variant, marker) = kind_names(kind);
    quote! {
        #[automatically_derived]
        impl ::durable_jobs::Job for #ty {
            const NAME: &'static ::core::primitive::str = #name;
            const KIND: ::durable_jobs::JobKind = ::durable_jobs::JobKind::#variant;
        }

        #[automatically_derived]
        impl ::durable_jobs::checks::KindOf for #ty {
            type Kind = ::durable_jobs::checks::#marker;

            fn job() -> Self {
                #value
            }
        }
    }
}

/// The app type of an impl and its generics: the user's `App`, or `AnyApp`.
fn app_or_any(app: Option<&Type>) -> (TokenStream, TokenStream) {
    match app {
        Some(app) => (app.to_token_stream(), TokenStream::new()),
        None => {
            let param = any_app_param();
            (any_app().to_token_stream(), quote!(<#param>))
        }
    }
}

/// `#[cfg]` attributes of the item, repeated on what is generated for it.
fn cfg_attrs(attrs: &[syn::Attribute]) -> Vec<&syn::Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("cfg")).collect()
}
