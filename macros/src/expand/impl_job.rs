//! Trait-impl jobs: `#[debounce]` on `impl DebounceJob<App> for X` and `#[task]` on
//! `impl TaskJob<App> for X`. The impl is emitted with what the attribute writes into it
//! (`fn config` of a debounce job, the app parameter of an impl for any app type); the job
//! value the registry adds is `Self {}`, written on the user's type so a type with fields is
//! refused there.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ItemImpl, Type};

use super::{any_app, any_app_param, duration, identity_impls, persisted_name, retry_call};
use crate::ast::{self, JobImpl};
use crate::attr::{JobArgs, Kind};
use crate::errors::Errors;
use crate::fallback;
use crate::valid;

/// A handler of an impl job.
struct Handler {
    name: &'static str,
    /// Its parameter count with `app`, without `self`; `None` when it has no `app` parameter.
    arity_with_app: Option<usize>,
    /// Whether the impl must define it.
    required: bool,
    /// The position and name of its context parameter.
    context: Option<(usize, &'static str)>,
    /// The signature quoted when it is missing.
    signature: &'static str,
}

fn handlers(kind: Kind) -> &'static [Handler] {
    match kind {
        Kind::Debounce => &[
            Handler {
                name: "on_event",
                arity_with_app: None,
                required: true,
                context: Some((2, "EventContext")),
                signature: "fn on_event(&self, state: Option<Self::State>, event: Self::Event, ctx: &EventContext) -> Self::State",
            },
            Handler {
                name: "execute",
                arity_with_app: Some(2),
                required: true,
                context: Some((0, "FlushContext")),
                signature: "async fn execute(&self, ctx: &mut FlushContext<Self::State>, app: &App) -> Result<(), Self::Error>",
            },
            Handler {
                name: "on_retry_exhausted",
                arity_with_app: Some(2),
                required: false,
                context: None,
                signature: "",
            },
        ],
        Kind::Task => &[
            Handler {
                name: "on_event",
                arity_with_app: Some(3),
                required: true,
                context: Some((0, "TaskContext")),
                signature: "async fn on_event(&self, ctx: &mut TaskContext<Self::State>, event: Self::Event, app: &App) -> Result<(), Self::Error>",
            },
            Handler {
                name: "execute",
                arity_with_app: Some(2),
                required: true,
                context: Some((0, "TaskContext")),
                signature: "async fn execute(&self, ctx: &mut TaskContext<Self::State>, app: &App) -> Result<(), Self::Error>",
            },
            Handler {
                name: "on_idle",
                arity_with_app: Some(3),
                required: false,
                context: Some((0, "TaskContext")),
                signature: "",
            },
            Handler {
                name: "on_error",
                arity_with_app: Some(4),
                required: false,
                context: Some((0, "TaskContext")),
                signature: "",
            },
        ],
        _ => &[],
    }
}

pub(super) fn expand(
    kind: Kind,
    args: &JobArgs,
    item: ItemImpl,
    mut errors: Errors,
) -> TokenStream {
    if let Some((other, trait_ident)) = impl_of_other_kind(kind, &item) {
        // `#[debounce] impl TaskJob for X`: reported once, then generated as the impl says, so
        // that its handlers are not reported again against the wrong trait.
        errors.at(
            &trait_ident,
            format!(
                "{} goes on an impl of `{}`, not `{trait_ident}`; an impl of `{trait_ident}` takes {}",
                kind.attr(),
                ast::trait_name(kind),
                other.attr()
            ),
        );
        return expand(other, &JobArgs::default(), item, errors);
    }
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
    let any = app.is_none();
    let app_tokens = app
        .as_ref()
        .map_or_else(|| any_app().to_token_stream(), ToTokens::to_token_stream);

    let mut config_written = false;
    for (name, span) in ast::method_names(&item) {
        if name == "config" && kind == Kind::Debounce {
            config_written = true;
            errors.push(syn::Error::new(
                span,
                "remove `fn config`: #[debounce] writes it from its arguments (`flush_after`, `quiet`, `max_events`, `retry`)",
            ));
        }
    }

    // Handlers given the context of another kind are replaced by stubs: their bodies would only
    // add errors about the wrong context's methods.
    let mut stubs = Vec::new();
    item.items.retain(|impl_item| {
        let ImplItem::Fn(f) = impl_item else {
            return true;
        };
        let name = f.sig.ident.unraw().to_string();
        let Some(handler) = handlers(kind).iter().find(|h| h.name == name) else {
            return true;
        };
        let Some((position, expected)) = handler.context else {
            return true;
        };
        let Some(context) = typed_params(&f.sig).nth(position).map(referent) else {
            return true;
        };
        let what = format!("the `{name}` of a {attr} job takes `&mut {expected}<Self::State>`");
        let what = if expected == "EventContext" {
            format!("the `{name}` of a {attr} job takes `ctx: &EventContext`")
        } else {
            what
        };
        if valid::other_context(context, expected, &what, &mut errors) {
            stubs.push(fallback::stub(kind, handler.name, &app_tokens));
            return false;
        }
        true
    });

    let trait_path = item.trait_.as_ref().map(|(_, p, _)| p.clone());
    let present = ast::method_names(&item);
    for handler in handlers(kind) {
        let refused = stubs
            .iter()
            .any(|s| matches!(s, ImplItem::Fn(f) if f.sig.ident == handler.name));
        if handler.required && !refused && !present.iter().any(|(n, _)| n == handler.name) {
            let signature = if any {
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
            stubs.push(fallback::stub(kind, handler.name, &app_tokens));
        }
    }
    if any {
        for_any_app(&mut item, kind, trait_name, &self_ident, &mut errors);
    }
    item.items.extend(stubs);

    if kind == Kind::Debounce && !config_written {
        item.items.push(debounce_config(args, errors.is_empty()));
    }

    let self_ty = item.self_ty.to_token_stream();
    let name = persisted_name(args, &self_ident.to_string(), self_ident.span());
    // `Self {}` on the user's type: a job type with fields is refused there, by rustc's
    // "missing field" error, rather than where the registry names the job.
    let value = quote_spanned!(item.self_ty.span()=> Self {});
    let identity = identity_impls(kind, &self_ty, &name, &value);
    let cfgs = super::cfg_attrs(&item.attrs);
    let errors = errors.to_compile_errors();
    quote! {
        #errors
        #item
        #(#cfgs)*
        const _: () = {
            #identity
        };
    }
}

/// The other trait-impl kind, when the impl is of its trait.
fn impl_of_other_kind(kind: Kind, item: &ItemImpl) -> Option<(Kind, syn::Ident)> {
    let (_, path, _) = item.trait_.as_ref()?;
    let ident = &path.segments.last()?.ident;
    [Kind::Debounce, Kind::Task]
        .into_iter()
        .find(|k| *k != kind && ident == ast::trait_name(*k))
        .map(|k| (k, ident.clone()))
}

fn typed_params(sig: &syn::Signature) -> impl Iterator<Item = &Type> {
    sig.inputs.iter().filter_map(|a| match a {
        FnArg::Typed(t) => Some(&*t.ty),
        FnArg::Receiver(_) => None,
    })
}

/// `T` of `&mut T` or `&T`; the type itself otherwise.
fn referent(ty: &Type) -> &Type {
    match ty {
        Type::Reference(r) => &r.elem,
        other => other,
    }
}

/// An impl for any app type (`impl TaskJob for X`) becomes `impl<AnyApp: ..> TaskJob<AnyApp>
/// for X`, and its handlers get the `app: &AnyApp` parameter the trait has. A handler that
/// takes an app parameter anyway is refused: it cannot name a type every app has.
fn for_any_app(
    item: &mut ItemImpl,
    kind: Kind,
    trait_name: &str,
    self_ident: &syn::Ident,
    errors: &mut Errors,
) {
    let any = any_app();
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
        let params = typed_params(&f.sig).count();
        if params == arity {
            let last = f.sig.inputs.last().map(ToTokens::to_token_stream);
            // Give the parameter the type the trait expects, so rustc does not add a
            // signature mismatch to the error below.
            if let Some(FnArg::Typed(param)) = f.sig.inputs.last_mut() {
                param.ty = syn::parse_quote!(&#any);
            }
            errors.at(
                last,
                format!(
                    "`impl {trait_name} for {self_ident}` runs with any app type, so `{name}` takes no `app` parameter; \
                     remove it, or write `impl {trait_name}<App> for {self_ident}` to receive `&App`"
                ),
            );
        } else if params + 1 == arity {
            f.sig.inputs.push(syn::parse_quote!(_: &#any));
        }
    }
    let param = any_app_param();
    item.generics.params.push(syn::parse_quote!(#param));
    if let Some((_, path, _)) = &mut item.trait_ {
        if let Some(last) = path.segments.last_mut() {
            last.arguments = syn::PathArguments::AngleBracketed(syn::parse_quote!(<#any>));
        }
    }
}

/// `fn config` of a debounce job, from its arguments.
fn debounce_config(args: &JobArgs, args_ok: bool) -> ImplItem {
    let body = match (args_ok, args.flush_after) {
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
    syn::parse_quote! {
        fn config(&self) -> ::durable_jobs::DebounceConfig {
            #body
        }
    }
}
