//! Checks of what a job's item says about types, made on the tokens before any code is
//! generated: a handler's context must be its kind's context, and a job function returns a
//! `Result`. rustc would catch these too, but late, several times and in generated code; here
//! each is one error on the user's own token that says what to write.
//!
//! Only what the tokens prove is refused: `FlushContext<u32>` is not a `ContinuousContext`,
//! `u32` is not a `Result`. A name the macro cannot know (a type alias) is left to the type
//! system, which checks it through `durable_jobs::checks` with messages of the same kind.

use quote::ToTokens;
use syn::{PathArguments, Type};

use crate::attr::Kind;
use crate::errors::Errors;

/// The contexts jobs receive, and whose they are.
const CONTEXTS: [(&str, &str); 5] = [
    ("ContinuousContext", "a #[continuous] job"),
    ("FlushContext", "the `execute` of a #[debounce] job"),
    ("EventContext", "the `on_event` of a #[debounce] job"),
    ("TaskContext", "the handlers of a #[task] job"),
    ("StepContext", "a #[step_job]"),
];

/// Types that are certainly not a `Result`, by their last path segment.
const NOT_RESULTS: [&str; 21] = [
    "Option", "Vec", "String", "Box", "bool", "char", "str", "u8", "u16", "u32", "u64", "u128",
    "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32", "f64",
];

/// The last segment's name of a path type.
fn last_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        Type::Group(g) => last_name(&g.elem),
        Type::Paren(p) => last_name(&p.elem),
        _ => None,
    }
}

/// Records an error when `context` (the type behind the reference) is the context of another
/// kind of handler than `expected`, which `what` describes ("a #[continuous] function takes
/// `ctx: &mut ContinuousContext<State>`"). Returns whether it did.
pub(crate) fn other_context(
    context: &Type,
    expected: &str,
    what: &str,
    errors: &mut Errors,
) -> bool {
    let Some(name) = last_name(context) else {
        return false;
    };
    let Some((found, owner)) = CONTEXTS.iter().find(|(n, _)| *n == name) else {
        return false;
    };
    if *found == expected {
        return false;
    }
    errors.at(
        context,
        format!("`{found}` is the context of {owner}; {what}"),
    );
    true
}

/// The return type of a job function, as far as the tokens tell.
pub(crate) enum Returns<'a> {
    /// `Result<T, E>` written out.
    Result { ok: &'a Type, err: &'a Type },
    /// A path that may be an alias of a `Result` (`anyhow::Result<()>`, `MyResult`).
    Alias,
    /// Not a `Result`; an error was recorded.
    Wrong,
}

/// Checks the return type of a `kind` function; `expected` is `Result<(), Error>` or
/// `Result<Output, Error>`.
pub(crate) fn returns<'a>(kind: Kind, output: &'a Type, errors: &mut Errors) -> Returns<'a> {
    let attr = kind.attr();
    let expected = match kind {
        Kind::Continuous => "Result<(), Error>",
        _ => "Result<Output, Error>",
    };
    let wrong = |errors: &mut Errors| {
        let found = output.to_token_stream().to_string().replace(' ', "");
        errors.at(
            output,
            format!("a {attr} function returns `{expected}`, not `{found}`"),
        );
        Returns::Wrong
    };
    let Some(name) = last_name(output) else {
        return wrong(errors);
    };
    if NOT_RESULTS.contains(&name.as_str()) {
        return wrong(errors);
    }
    if name != "Result" {
        return Returns::Alias;
    }
    let Type::Path(path) = output else {
        return Returns::Alias;
    };
    let Some(PathArguments::AngleBracketed(args)) = path.path.segments.last().map(|s| &s.arguments)
    else {
        return Returns::Alias;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    let [ok, err] = types[..] else {
        // `io::Result<()>`, `anyhow::Result<()>`: an alias with the error type built in.
        return Returns::Alias;
    };
    if kind == Kind::Continuous && !is_unit(ok) {
        let found = ok.to_token_stream().to_string().replace(' ', "");
        errors.at(
            ok,
            format!("a #[continuous] function returns `Result<(), Error>`, not `Result<{found}, _>`; keep what it computes in the state with `ctx.set_state(..)`"),
        );
        return Returns::Wrong;
    }
    Returns::Result { ok, err }
}

fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(t) => t.elems.is_empty(),
        Type::Paren(p) => is_unit(&p.elem),
        Type::Group(g) => is_unit(&g.elem),
        _ => false,
    }
}
