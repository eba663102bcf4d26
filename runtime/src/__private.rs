//! Not public API. Used by generated code.
//!
//! The attribute macros and `registry!` name runtime items only through this module (and the
//! crate's public paths), so user code that shadows `Result`, `Option` or `core` cannot break
//! them. Nothing here is covered by semver.

pub use serde;
pub use serde_json;
pub use std::time::Duration;

use crate::error::Error;
use crate::job::schedule::Schedule;

/// `a == b`, usable in constants: `registry!` compares persisted names at compile time.
// In range: `i < a.len()`, and `b` has the same length. (A `const fn` cannot use `get` or
// iterators; and it runs at compile time, where a panic would be a compile error.)
#[allow(clippy::indexing_slicing)]
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The schedule of `#[continuous(cron = "...", tz = "...")]`.
///
/// # Panics
///
/// Never for arguments written by the macro: it validated the expression with the same
/// `croner` parser and settings as [`Schedule::cron`] and the zone with the same `chrono-tz`
/// (one lockfile resolves one version of each for both crates), and rejected the attribute at
/// compile time otherwise. `ContinuousJob::config` cannot return an error, and a wrong schedule
/// must not be replaced silently by another one, hence the `expect`. It would run once, when
/// the engine registers the job at start-up.
#[allow(clippy::expect_used)]
pub fn cron_schedule(expression: &'static str, time_zone: Option<&'static str>) -> Schedule {
    Schedule::cron(expression, time_zone)
        .expect("cron expression validated by #[continuous] at compile time")
}

/// The error of `JobsName::from_str` for a name that is not in the registry.
pub fn job_not_found(name: &str) -> Error {
    Error::JobNotFound {
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_eq_compares_bytes() {
        assert!(str_eq("", ""));
        assert!(str_eq("token_refresher", "token_refresher"));
        assert!(!str_eq("a", "b"));
        assert!(!str_eq("ab", "a"));
    }
}
