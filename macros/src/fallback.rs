//! What is generated next to a compile error, so that the error stays the only one.
//!
//! The user's item is always emitted as written (an IDE keeps completing in it). A job whose
//! definition is wrong still gets a complete set of impls, with unit types and bodies that never
//! run, so that the registry listing it and the rest of the crate compile as if it were right.
//! A missing or refused handler gets a stub, so rustc does not report the omission again.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::ImplItem;

use crate::ast;
use crate::attr::Kind;
use crate::errors::Errors;

/// The item of an attribute put on something else than it goes on.
pub(crate) fn misplaced(kind: Kind, item: TokenStream, mut errors: Errors) -> TokenStream {
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

/// A kind impl of a function job whose signature was refused: unit types, bodies that never run.
/// The function itself is emitted with `#[allow(dead_code)]`, since nothing calls it.
pub(crate) fn fn_kind_impl(
    kind: Kind,
    ty: &TokenStream,
    app: &TokenStream,
    generics: &TokenStream,
) -> TokenStream {
    let pending = quote!(::core::future::pending());
    let done = quote!(
        impl ::core::future::Future<Output = ::core::result::Result<(), ::core::convert::Infallible>>
            + ::core::marker::Send
    );
    match kind {
        Kind::Continuous => quote! {
            #[automatically_derived]
            impl #generics ::durable_jobs::ContinuousJob<#app> for #ty {
                type State = ();
                type Error = ::core::convert::Infallible;
                fn config(&self) -> ::durable_jobs::ContinuousConfig {
                    ::durable_jobs::ContinuousConfig::new(::durable_jobs::Schedule::every(
                        ::core::time::Duration::from_secs(60),
                    ))
                }
                fn execute(&self, _: &mut ::durable_jobs::ContinuousContext<()>, _: &#app) -> #done {
                    #pending
                }
            }
        },
        _ => quote! {
            #[automatically_derived]
            impl #generics ::durable_jobs::StepJob<#app> for #ty {
                type Input = ();
                type Output = ();
                type Error = ::core::convert::Infallible;
                fn run(&self, _: &mut ::durable_jobs::StepContext, _: (), _: &#app) -> #done {
                    #pending
                }
            }
        },
    }
}

/// A stand-in for a handler that is missing or was refused.
pub(crate) fn stub(kind: Kind, name: &str, app: &TokenStream) -> ImplItem {
    let done = quote!(
        impl ::core::future::Future<Output = ::core::result::Result<(), Self::Error>>
            + ::core::marker::Send
    );
    let tokens = match (kind, name) {
        (Kind::Debounce, "on_event") => quote! {
            fn on_event(&self, _: ::core::option::Option<Self::State>, _: Self::Event, _: &::durable_jobs::EventContext) -> Self::State { loop {} }
        },
        (Kind::Debounce, "on_retry_exhausted") => quote! {
            fn on_retry_exhausted(&self, _: ::durable_jobs::RetryExhausted<Self::State>, _: &#app) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send { ::core::future::pending() }
        },
        (Kind::Debounce, _) => quote! {
            fn execute(&self, _: &mut ::durable_jobs::FlushContext<Self::State>, _: &#app) -> #done { ::core::future::pending() }
        },
        (_, "on_event") => quote! {
            fn on_event(&self, _: &mut ::durable_jobs::TaskContext<Self::State>, _: Self::Event, _: &#app) -> #done { ::core::future::pending() }
        },
        (_, "on_idle") => quote! {
            fn on_idle(&self, _: &mut ::durable_jobs::TaskContext<Self::State>, _: ::durable_jobs::IdleReason, _: &#app) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send { ::core::future::pending() }
        },
        (_, "on_error") => quote! {
            fn on_error(&self, _: &mut ::durable_jobs::TaskContext<Self::State>, _: Self::Error, _: ::durable_jobs::ErrorSource, _: &#app) -> #done { ::core::future::pending() }
        },
        _ => quote! {
            fn execute(&self, _: &mut ::durable_jobs::TaskContext<Self::State>, _: &#app) -> #done { ::core::future::pending() }
        },
    };
    syn::parse_quote!(#tokens)
}
