//! The attribute arguments: a small syntax tree (`key = value`, `key(args)`) read into typed,
//! validated settings. Durations, cron expressions, time zones, names and limits are checked
//! here, at compile time, with the error on the guilty literal.

use std::collections::HashSet;
use std::str::FromStr;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Lit, LitStr, Token};

use crate::duration;
use crate::errors::Errors;
use crate::names::closest;

/// The job kind an attribute defines.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Continuous,
    Debounce,
    Task,
    Step,
}

impl Kind {
    /// The attribute as users write it.
    pub(crate) fn attr(self) -> &'static str {
        match self {
            Kind::Continuous => "#[continuous]",
            Kind::Debounce => "#[debounce]",
            Kind::Task => "#[task]",
            Kind::Step => "#[step_job]",
        }
    }

    /// The arguments the attribute accepts, in documentation order.
    fn accepted(self) -> &'static [&'static str] {
        match self {
            Kind::Continuous => &[
                "every",
                "cron",
                "tz",
                "start_immediately",
                "retry",
                "on_retry_exhausted",
                "state_version",
                "migrate",
                "name",
            ],
            Kind::Debounce => &["flush_after", "quiet", "max_events", "retry", "name"],
            Kind::Task => &["name"],
            Kind::Step => &["retry", "name"],
        }
    }
}

/// One `key = value` or `key(args)` argument.
pub(crate) struct Arg {
    pub(crate) key: Ident,
    pub(crate) value: Value,
}

pub(crate) enum Value {
    /// `key = expr`
    Expr(Expr),
    /// `key(args)`; the span covers the parentheses.
    List(Span, Vec<Arg>),
    /// `key` alone.
    Missing,
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Value::Expr(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            let args = Punctuated::<Arg, Token![,]>::parse_terminated(&content)?;
            Value::List(paren.span.join(), args.into_iter().collect())
        } else {
            Value::Missing
        };
        Ok(Arg { key, value })
    }
}

/// Parses `a = 1, b(c = 2)`.
pub(crate) fn parse_list(tokens: TokenStream) -> syn::Result<Vec<Arg>> {
    let args = Punctuated::<Arg, Token![,]>::parse_terminated.parse2(tokens)?;
    Ok(args.into_iter().collect())
}

/// The settings of one job attribute, each validated.
#[derive(Default)]
pub(crate) struct JobArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) schedule: Option<ScheduleArg>,
    pub(crate) start_immediately: Option<bool>,
    pub(crate) on_retry_exhausted: Option<syn::Path>,
    pub(crate) state_version: Option<u32>,
    pub(crate) migrate: Option<syn::Path>,
    pub(crate) flush_after: Option<u64>,
    pub(crate) quiet: Option<u64>,
    pub(crate) max_events: Option<u64>,
    pub(crate) retry: Option<RetryArgs>,
}

pub(crate) enum ScheduleArg {
    Every(u64),
    Cron {
        expression: LitStr,
        time_zone: Option<LitStr>,
    },
}

pub(crate) struct RetryArgs {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Option<BackoffArg>,
    pub(crate) jitter: Option<bool>,
    pub(crate) max_duration: Option<u64>,
}

pub(crate) enum BackoffArg {
    Constant(u64),
    Linear {
        initial: u64,
        increment: u64,
        max: Option<u64>,
    },
    Exponential {
        initial: u64,
        factor: Option<f64>,
        max: Option<u64>,
    },
}

/// An example of each argument, quoted in errors.
fn example(key: &str) -> &'static str {
    match key {
        "name" => "name = \"token_refresher\"",
        "every" => "every = \"30m\"",
        "cron" => "cron = \"0 4 * * *\"",
        "tz" => "tz = \"Europe/Paris\"",
        "start_immediately" => "start_immediately = false",
        "on_retry_exhausted" => "on_retry_exhausted = alert_ops",
        "state_version" => "state_version = 2",
        "migrate" => "migrate = migrate_tokens",
        "flush_after" => "flush_after = \"5s\"",
        "quiet" => "quiet = \"1s\"",
        "max_events" => "max_events = 100",
        "retry" => "retry(max_attempts = 5)",
        "max_attempts" => "max_attempts = 5",
        "backoff" => "backoff = exponential(\"1s\", max = \"30s\")",
        "jitter" => "jitter = false",
        "max_duration" => "max_duration = \"10m\"",
        _ => "key = value",
    }
}

fn unknown_key(key: &Ident, context: &str, accepted: &[&str]) -> syn::Error {
    let name = key.unraw().to_string();
    let list = accepted
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = match closest(&name, accepted.iter().copied()) {
        Some(close) => format!(" (did you mean `{close}`?)"),
        None => String::new(),
    };
    syn::Error::new(
        key.span(),
        format!("unknown argument `{name}`{hint}; {context} accepts {list}"),
    )
}

/// Reads the arguments of a job attribute. Every problem is recorded in `errors`.
pub(crate) fn job_args(kind: Kind, tokens: TokenStream, errors: &mut Errors) -> JobArgs {
    let mut out = JobArgs::default();
    let Some(args) = errors.ok(parse_list(tokens)) else {
        return out;
    };
    let attr = kind.attr();
    let mut seen = HashSet::new();
    let mut every: Option<(Ident, Option<u64>)> = None;
    let mut cron: Option<(Ident, Option<LitStr>)> = None;
    let mut tz: Option<(Ident, Option<LitStr>)> = None;
    let mut flush_after_key = None;
    let mut quiet_key = None;
    for arg in &args {
        let key = arg.key.unraw().to_string();
        if !kind.accepted().contains(&key.as_str()) {
            errors.push(unknown_key(&arg.key, attr, kind.accepted()));
            continue;
        }
        if !seen.insert(key.clone()) {
            errors.at(&arg.key, format!("`{key}` is given twice; keep one"));
            continue;
        }
        match key.as_str() {
            "name" => out.name = errors.ok(name(arg)),
            "every" => every = Some((arg.key.clone(), errors.ok(duration_of(arg, false)))),
            "cron" => cron = Some((arg.key.clone(), errors.ok(cron_expression(arg)))),
            "tz" => tz = Some((arg.key.clone(), errors.ok(time_zone(arg)))),
            "start_immediately" => out.start_immediately = errors.ok(bool_of(arg)),
            "on_retry_exhausted" => {
                out.on_retry_exhausted = errors.ok(path_of(arg, "the path of an async function"));
            }
            "state_version" => out.state_version = errors.ok(int_of::<u32>(arg)),
            "migrate" => {
                let what = "the path of a `fn(serde_json::Value, u32) -> Result<State, E>`";
                out.migrate = errors.ok(path_of(arg, what));
            }
            "flush_after" => {
                flush_after_key = Some(arg.key.clone());
                out.flush_after = errors.ok(duration_of(arg, false));
            }
            "quiet" => {
                quiet_key = Some(arg.key.clone());
                out.quiet = errors.ok(duration_of(arg, false));
            }
            "max_events" => out.max_events = errors.ok(positive_int(arg)),
            "retry" => out.retry = retry(arg, errors),
            _ => unreachable!("every accepted key is handled"),
        }
    }

    if kind == Kind::Continuous {
        match (&every, &cron) {
            (Some(_), Some((cron_key, _))) => errors.at(
                cron_key,
                "`every` and `cron` cannot be combined: a #[continuous] job has one schedule; keep one of them",
            ),
            (None, None) => errors.push(syn::Error::new(
                Span::call_site(),
                "#[continuous] needs a schedule, e.g. #[continuous(every = \"30m\")] or #[continuous(cron = \"0 4 * * *\")]",
            )),
            (Some((_, Some(ms))), None) => out.schedule = Some(ScheduleArg::Every(*ms)),
            (None, Some((_, Some(expression)))) => {
                out.schedule = Some(ScheduleArg::Cron {
                    expression: expression.clone(),
                    time_zone: tz.as_ref().and_then(|(_, zone)| zone.clone()),
                });
            }
            _ => {} // the value was invalid and is reported already
        }
        if let (Some((tz_key, _)), None) = (&tz, &cron) {
            errors.at(
                tz_key,
                "`tz` applies to a `cron` schedule only; remove it, or use `cron = \"...\"`",
            );
        }
    }

    if kind == Kind::Debounce {
        if flush_after_key.is_none() {
            errors.push(syn::Error::new(
                Span::call_site(),
                "#[debounce] needs `flush_after`, the longest a batch waits, e.g. #[debounce(flush_after = \"5s\")]",
            ));
        }
        if let (Some(quiet), Some(flush_after), Some(key)) =
            (out.quiet, out.flush_after, &quiet_key)
        {
            if quiet >= flush_after {
                errors.at(
                    key,
                    "`quiet` must be shorter than `flush_after`, or it never flushes a batch first; shorten it or remove it",
                );
            }
        }
    }
    out
}

fn expr_of(arg: &Arg) -> syn::Result<&Expr> {
    let key = arg.key.unraw().to_string();
    match &arg.value {
        Value::Expr(expr) => Ok(strip_groups(expr)),
        Value::Missing => Err(syn::Error::new(
            arg.key.span(),
            format!("`{key}` needs a value, e.g. `{}`", example(&key)),
        )),
        Value::List(span, _) => Err(syn::Error::new(
            *span,
            format!("`{key}` takes a value after `=`, e.g. `{}`", example(&key)),
        )),
    }
}

/// Tokens passed through `macro_rules!` arrive wrapped in invisible groups.
fn strip_groups(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => strip_groups(&group.expr),
        Expr::Paren(paren) => strip_groups(&paren.expr),
        other => other,
    }
}

fn lit_of(expr: &Expr) -> Option<&Lit> {
    match strip_groups(expr) {
        Expr::Lit(lit) => Some(&lit.lit),
        _ => None,
    }
}

fn str_of(expr: &Expr, key: &str) -> syn::Result<LitStr> {
    match lit_of(expr) {
        Some(Lit::Str(s)) => Ok(s.clone()),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` takes a string, e.g. `{}`", example(key)),
        )),
    }
}

fn name(arg: &Arg) -> syn::Result<LitStr> {
    let lit = str_of(expr_of(arg)?, "name")?;
    check_name(&lit)?;
    Ok(lit)
}

/// The rules the runtime applies to persisted names, checked at compile time.
pub(crate) fn check_name(lit: &LitStr) -> syn::Result<()> {
    let value = lit.value();
    let problem = if value.is_empty() {
        Some("a persisted job name cannot be empty".to_owned())
    } else if value.len() > 512 {
        Some(format!(
            "a persisted job name is at most 512 bytes; this one has {}",
            value.len()
        ))
    } else if value.contains(':') {
        // Instance keys display as `kind:name:id`; a name without `:` keeps that unambiguous.
        Some(format!(
            "a persisted job name cannot contain `:`, which separates it from the instance id in `kind:name:id`; write e.g. \"{}\"",
            value.replace(':', "_")
        ))
    } else {
        value
            .chars()
            .find(|c| c.is_control())
            .map(|c| format!("a persisted job name cannot contain the control character {c:?}"))
    };
    match problem {
        Some(problem) => Err(syn::Error::new(lit.span(), problem)),
        None => Ok(()),
    }
}

fn duration_lit(lit: &LitStr, key: &str, allow_zero: bool) -> syn::Result<u64> {
    let text = lit.value();
    let millis = duration::parse(&text).map_err(|why| {
        syn::Error::new(
            lit.span(),
            format!(
                "invalid duration \"{text}\" for `{key}`: {why}; {}",
                duration::FORMAT_HINT
            ),
        )
    })?;
    if millis == 0 && !allow_zero {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{key}` must be longer than zero, e.g. `{}`", example(key)),
        ));
    }
    Ok(millis)
}

fn duration_of(arg: &Arg, allow_zero: bool) -> syn::Result<u64> {
    let key = arg.key.unraw().to_string();
    let lit = str_of(expr_of(arg)?, &key)?;
    duration_lit(&lit, &key, allow_zero)
}

fn cron_expression(arg: &Arg) -> syn::Result<LitStr> {
    let lit = str_of(expr_of(arg)?, "cron")?;
    let expression = lit.value();
    // The same parser and settings as `Schedule::cron` in the runtime, so an expression
    // accepted here is accepted there.
    croner::Cron::new(&expression)
        .with_seconds_optional()
        .parse()
        .map_err(|why| {
            let why = why.to_string();
            let why = why.trim_end_matches('.').to_lowercase();
            syn::Error::new(
                lit.span(),
                format!(
                    "invalid cron expression \"{expression}\": {why}; write 5 fields (minute hour \
                     day-of-month month day-of-week) or 6 with leading seconds, e.g. \"0 4 * * *\""
                ),
            )
        })?;
    Ok(lit)
}

fn time_zone(arg: &Arg) -> syn::Result<LitStr> {
    let lit = str_of(expr_of(arg)?, "tz")?;
    let zone = lit.value();
    if chrono_tz::Tz::from_str(&zone).is_ok() {
        return Ok(lit);
    }
    let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
    let hint = match closest(&zone, names) {
        Some(close) => format!("did you mean \"{close}\"?"),
        None => "use an IANA name such as \"Europe/Paris\" or \"America/New_York\"".to_owned(),
    };
    Err(syn::Error::new(
        lit.span(),
        format!("unknown time zone \"{zone}\"; {hint}"),
    ))
}

fn bool_of(arg: &Arg) -> syn::Result<bool> {
    let key = arg.key.unraw().to_string();
    let expr = expr_of(arg)?;
    match lit_of(expr) {
        Some(Lit::Bool(b)) => Ok(b.value),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` takes `true` or `false`, e.g. `{}`", example(&key)),
        )),
    }
}

fn int_of<T: FromStr<Err = std::num::ParseIntError>>(arg: &Arg) -> syn::Result<T> {
    let key = arg.key.unraw().to_string();
    let expr = expr_of(arg)?;
    match lit_of(expr) {
        Some(Lit::Int(int)) => int
            .base10_parse::<T>()
            .map_err(|_| syn::Error::new_spanned(int, format!("`{key}` is too large"))),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` takes a whole number, e.g. `{}`", example(&key)),
        )),
    }
}

fn positive_int(arg: &Arg) -> syn::Result<u64> {
    let n = int_of::<u64>(arg)?;
    if n == 0 {
        let key = arg.key.unraw().to_string();
        return Err(syn::Error::new_spanned(
            expr_of(arg)?,
            format!("`{key}` must be at least 1, e.g. `{}`", example(&key)),
        ));
    }
    Ok(n)
}

/// A function named by its path, without calling it; `what` says which kind of function.
fn path_of(arg: &Arg, what: &str) -> syn::Result<syn::Path> {
    let key = arg.key.unraw().to_string();
    match expr_of(arg)? {
        Expr::Path(p) if p.qself.is_none() => Ok(p.path.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{key}` takes {what}, e.g. `{}`", example(&key)),
        )),
    }
}

fn retry(arg: &Arg, errors: &mut Errors) -> Option<RetryArgs> {
    let Value::List(span, args) = &arg.value else {
        errors.at(&arg.key, "write the retry policy in parentheses, e.g. `retry(max_attempts = 5, backoff = exponential(\"1s\", max = \"30s\"))`");
        return None;
    };
    const ACCEPTED: &[&str] = &["max_attempts", "backoff", "jitter", "max_duration"];
    let mut seen = HashSet::new();
    let mut max_attempts = None;
    let mut backoff = None;
    let mut jitter = None;
    let mut max_duration = None;
    let mut ok = true;
    for arg in args {
        let key = arg.key.unraw().to_string();
        if !ACCEPTED.contains(&key.as_str()) {
            errors.push(unknown_key(&arg.key, "`retry(...)`", ACCEPTED));
            ok = false;
            continue;
        }
        if !seen.insert(key.clone()) {
            errors.at(&arg.key, format!("`{key}` is given twice; keep one"));
            ok = false;
            continue;
        }
        let done = match key.as_str() {
            "max_attempts" => int_of::<u32>(arg).and_then(|n| {
                if n == 0 {
                    Err(syn::Error::new_spanned(
                        expr_of(arg)?,
                        "`max_attempts` counts the first run, so it is at least 1, e.g. `max_attempts = 5`",
                    ))
                } else {
                    max_attempts = Some(n);
                    Ok(())
                }
            }),
            "backoff" => expr_of(arg).and_then(backoff_of).map(|b| backoff = Some(b)),
            "jitter" => bool_of(arg).map(|b| jitter = Some(b)),
            "max_duration" => duration_of(arg, false).map(|d| max_duration = Some(d)),
            _ => unreachable!("every accepted key is handled"),
        };
        if let Err(e) = done {
            errors.push(e);
            ok = false;
        }
    }
    let Some(max_attempts) = max_attempts else {
        if !seen.contains("max_attempts") {
            errors.push(syn::Error::new(
                *span,
                "`retry(...)` needs `max_attempts`, the number of runs counting the first, e.g. `retry(max_attempts = 5)`",
            ));
        }
        return None;
    };
    ok.then_some(RetryArgs {
        max_attempts,
        backoff,
        jitter,
        max_duration,
    })
}

const BACKOFF_HINT: &str = "use constant(\"5s\"), linear(\"1s\", \"2s\", max = \"30s\") or exponential(\"1s\", factor = 2.0, max = \"30s\")";

fn backoff_of(expr: &Expr) -> syn::Result<BackoffArg> {
    let Expr::Call(call) = expr else {
        return Err(syn::Error::new_spanned(
            expr,
            format!("`backoff` takes a strategy; {BACKOFF_HINT}"),
        ));
    };
    let func = match strip_groups(&call.func) {
        Expr::Path(p) if p.path.get_ident().is_some() => p.path.get_ident().cloned(),
        _ => None,
    };
    let Some(func) = func else {
        return Err(syn::Error::new_spanned(
            &call.func,
            format!("unknown backoff; {BACKOFF_HINT}"),
        ));
    };
    let mut positional = Vec::new();
    let mut named: Vec<(Ident, &Expr)> = Vec::new();
    for arg in &call.args {
        match strip_groups(arg) {
            Expr::Assign(assign) => match strip_groups(&assign.left) {
                Expr::Path(p) if p.path.get_ident().is_some() => {
                    let ident = p.path.get_ident().cloned().unwrap_or_else(|| func.clone());
                    named.push((ident, &assign.right));
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        format!("expected an option name; {BACKOFF_HINT}"),
                    ))
                }
            },
            other => positional.push(other),
        }
    }
    let kind = func.to_string();
    let (arity, options): (usize, &[&str]) = match kind.as_str() {
        "constant" => (1, &[]),
        "linear" => (2, &["max"]),
        "exponential" => (1, &["factor", "max"]),
        _ => {
            let hint = closest(&kind, ["constant", "linear", "exponential"])
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(syn::Error::new_spanned(
                &func,
                format!("unknown backoff `{kind}`{hint}; {BACKOFF_HINT}"),
            ));
        }
    };
    if positional.len() != arity {
        return Err(syn::Error::new_spanned(
            call,
            format!(
                "`{kind}` takes {arity} duration{}; {BACKOFF_HINT}",
                if arity == 1 { "" } else { "s" }
            ),
        ));
    }
    let durations = positional
        .iter()
        .map(|e| duration_lit(&str_of(e, "backoff")?, "backoff", true))
        .collect::<syn::Result<Vec<_>>>()?;
    let mut max = None;
    let mut factor = None;
    for (ident, value) in named {
        let option = ident.to_string();
        if !options.contains(&option.as_str()) {
            let list = if options.is_empty() {
                "no options".to_owned()
            } else {
                options
                    .iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            return Err(syn::Error::new_spanned(
                &ident,
                format!("`{kind}` takes {list}, not `{option}`"),
            ));
        }
        if option == "max" {
            max = Some(duration_lit(&str_of(value, "backoff")?, "max", false)?);
        } else {
            let f = match lit_of(value) {
                Some(Lit::Float(f)) => f.base10_parse::<f64>().ok(),
                Some(Lit::Int(i)) => i.base10_parse::<f64>().ok(),
                _ => None,
            };
            match f {
                Some(f) if f.is_finite() && f >= 1.0 => factor = Some(f),
                _ => {
                    return Err(syn::Error::new_spanned(
                        value,
                        "`factor` is a number of at least 1.0, e.g. `factor = 2.0`",
                    ))
                }
            }
        }
    }
    Ok(match kind.as_str() {
        "constant" => BackoffArg::Constant(durations[0]),
        "linear" => BackoffArg::Linear {
            initial: durations[0],
            increment: durations[1],
            max,
        },
        _ => BackoffArg::Exponential {
            initial: durations[0],
            factor,
            max,
        },
    })
}
