//! Typed views of the items the attributes go on: an `async fn` (continuous and step jobs) or a
//! trait impl (debounce and task jobs). They keep the user's tokens, so errors point at them.

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, ImplItem, ItemFn, ItemImpl, PathArguments, ReturnType, Type,
};

use crate::attr::Kind;
use crate::errors::Errors;

/// A function job: `async fn name(ctx: &mut Context, [input: Input,] [app: &App]) -> Result<..>`.
pub(crate) struct JobFn {
    pub(crate) item: ItemFn,
    /// The referent of the context parameter (`ContinuousContext<State>`, `StepContext`).
    pub(crate) context: Type,
    /// The input type of a step job.
    pub(crate) input: Option<Type>,
    /// The referent of the `app` parameter, when there is one.
    pub(crate) app: Option<Type>,
    /// The return type.
    pub(crate) output: Type,
}

fn signature_hint(kind: Kind) -> &'static str {
    match kind {
        Kind::Continuous => "`async fn name(ctx: &mut ContinuousContext<State>, app: &App) -> Result<(), Error>` (`app` is optional)",
        _ => "`async fn name(step: &mut StepContext, input: Input, app: &App) -> Result<Output, Error>` (`app` is optional)",
    }
}

/// Checks the shape of a function job. Records every problem and returns `None` if there was one.
pub(crate) fn job_fn(kind: Kind, item: ItemFn, errors: &mut Errors) -> Option<JobFn> {
    let attr = kind.attr();
    let sig = &item.sig;
    let mut ok = true;
    let mut fail = |errors: &mut Errors, tokens: &dyn ToTokens, message: String| {
        errors.at(tokens, message);
        ok = false;
    };
    if sig.asyncness.is_none() {
        fail(
            errors,
            &sig.fn_token,
            format!("{attr} goes on an `async fn`; add `async` before `fn`"),
        );
    }
    if let Some(t) = &sig.constness {
        fail(errors, t, format!("a {attr} function cannot be `const`"));
    }
    if let Some(t) = &sig.unsafety {
        fail(errors, t, format!("a {attr} function cannot be `unsafe`"));
    }
    if let Some(abi) = &sig.abi {
        fail(
            errors,
            abi,
            format!("a {attr} function cannot have an `extern` ABI"),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        fail(
            errors,
            &sig.generics,
            format!(
                "a {attr} function cannot be generic: the job is one type with one persisted name"
            ),
        );
    }
    if let Some(v) = &sig.variadic {
        fail(errors, v, format!("a {attr} function cannot be variadic"));
    }

    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => fail(
                errors,
                r,
                format!("{attr} goes on a free function, not a method; remove `self`"),
            ),
            FnArg::Typed(pat) => types.push(&*pat.ty),
        }
    }
    let (min, max) = if kind == Kind::Continuous {
        (1, 2)
    } else {
        (2, 3)
    };
    if types.len() < min || types.len() > max {
        let span = if sig.inputs.is_empty() {
            sig.paren_token.span.join()
        } else {
            sig.inputs.span()
        };
        errors.push(syn::Error::new(
            span,
            format!(
                "a {attr} function takes {} parameters; write {}",
                describe(min, max),
                signature_hint(kind)
            ),
        ));
        return None;
    }

    let context = match types[0] {
        Type::Reference(r) if r.mutability.is_some() => Some((*r.elem).clone()),
        other => {
            let expected = if kind == Kind::Continuous {
                "&mut ContinuousContext<State>"
            } else {
                "&mut StepContext"
            };
            fail(
                errors,
                other,
                format!("the first parameter of a {attr} function is the context, `{expected}`"),
            );
            None
        }
    };
    let input = (kind == Kind::Step).then(|| types[1].clone());
    let app = if types.len() == max {
        match types[max - 1] {
            Type::Reference(r) if r.mutability.is_none() => Some((*r.elem).clone()),
            other => {
                fail(
                    errors,
                    other,
                    "the last parameter is the application state, which every run shares: take it by reference, `app: &App`"
                        .to_owned(),
                );
                None
            }
        }
    } else {
        None
    };
    let output = match &sig.output {
        ReturnType::Type(_, ty) => Some((**ty).clone()),
        ReturnType::Default => {
            let expected = if kind == Kind::Continuous {
                "Result<(), Error>"
            } else {
                "Result<Output, Error>"
            };
            fail(
                errors,
                &sig.ident,
                format!("a {attr} function returns `{expected}`; add `-> {expected}`"),
            );
            None
        }
    };
    if !ok {
        return None;
    }
    Some(JobFn {
        context: context?,
        input,
        app,
        output: output?,
        item,
    })
}

fn describe(min: usize, max: usize) -> String {
    format!("{min} or {max}")
}

/// The generic arguments of the last path segment of `ty` when it is named `name`.
pub(crate) fn type_args<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// A trait-impl job: `impl DebounceJob<App> for MyJob { ... }`.
pub(crate) struct JobImpl {
    pub(crate) item: ItemImpl,
    /// The name of the implementing type, for the derived persisted name.
    pub(crate) self_ident: Ident,
    /// The app type argument of the trait; `None` for `impl DebounceJob for X` (any app).
    pub(crate) app: Option<Type>,
}

/// The trait each impl attribute goes on.
pub(crate) fn trait_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Continuous => "ContinuousJob",
        Kind::Debounce => "DebounceJob",
        Kind::Task => "TaskJob",
        Kind::Step => "StepJob",
    }
}

fn attr_for_trait(name: &str) -> Option<&'static str> {
    [Kind::Continuous, Kind::Debounce, Kind::Task, Kind::Step]
        .into_iter()
        .find(|k| trait_name(*k) == name)
        .map(Kind::attr)
}

/// Checks the shape of a trait-impl job.
pub(crate) fn job_impl(kind: Kind, item: ItemImpl, errors: &mut Errors) -> Option<JobImpl> {
    let attr = kind.attr();
    let expected = trait_name(kind);
    let Some((bang, path, _)) = &item.trait_ else {
        errors.at(
            &item.self_ty,
            format!("{attr} goes on an impl of `{expected}`; write `impl {expected}<App> for YourType {{ ... }}`"),
        );
        return None;
    };
    if let Some(bang) = bang {
        errors.at(
            bang,
            format!("{attr} goes on a positive impl of `{expected}`; remove `!`"),
        );
        return None;
    }
    let Some(last) = path.segments.last() else {
        errors.at(path, format!("{attr} goes on an impl of `{expected}`"));
        return None;
    };
    if last.ident != expected {
        let found = last.ident.to_string();
        let hint = match attr_for_trait(&found) {
            Some(other) => format!("; an impl of `{found}` takes {other}"),
            None => String::new(),
        };
        errors.at(
            &last.ident,
            format!("{attr} goes on an impl of `{expected}`, not `{found}`{hint}"),
        );
        return None;
    }
    let app = match &last.arguments {
        PathArguments::None => None,
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match &args.args[0] {
            GenericArgument::Type(t) => Some(t.clone()),
            other => {
                errors.at(
                    other,
                    format!("`{expected}<App>` takes the application state type"),
                );
                return None;
            }
        },
        other => {
            errors.at(other, format!("write `{expected}<App>` with the application state type, or `{expected}` for any app"));
            return None;
        }
    };
    let self_ident = match &*item.self_ty {
        Type::Path(p) if p.qself.is_none() => match p.path.segments.last() {
            Some(seg) if seg.arguments.is_none() => Some(seg.ident.unraw()),
            Some(seg) => {
                errors.at(
                    &seg.arguments,
                    "a job type cannot be generic: each job has one persisted name",
                );
                return None;
            }
            None => None,
        },
        _ => None,
    };
    let Some(self_ident) = self_ident else {
        errors.at(
            &item.self_ty,
            format!(
                "{attr} goes on an impl for a named type, e.g. `impl {expected}<App> for MyJob`"
            ),
        );
        return None;
    };
    if app.is_none() && !item.generics.params.is_empty() {
        errors.at(
            &item.generics,
            format!("`impl<..> {expected} for ..` has no app type to be generic over; write `impl<A: Send + Sync + 'static> {expected}<A> for ..`, or drop the generics"),
        );
        return None;
    }
    Some(JobImpl {
        item,
        self_ident,
        app,
    })
}

/// The names of the methods an impl defines.
pub(crate) fn method_names(item: &ItemImpl) -> Vec<(String, Span)> {
    item.items
        .iter()
        .filter_map(|i| match i {
            ImplItem::Fn(f) => Some((f.sig.ident.unraw().to_string(), f.sig.ident.span())),
            _ => None,
        })
        .collect()
}
