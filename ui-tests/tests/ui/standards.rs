//! What every compile-fail snapshot must meet, whatever rustc prints, checked before it is
//! compared or written:
//!
//! - it names no internals: no path into `__private`, no generated name, no "the trait is
//!   implemented for" suggestion (which would contradict the error's own sentence), no
//!   const-evaluation panic;
//! - it holds one error per mistake: one, unless the case says otherwise in a comment such as
//!   `// Two mistakes, two errors: ...`;
//! - no two of its errors share a headline.

/// Fragments no snapshot may contain, and why.
const FORBIDDEN: [(&str, &str); 5] = [
    ("__private", "a path into the runtime's hidden module"),
    ("__Durable", "a name the macros generate"),
    ("_::_", "the name of a generated constant"),
    (
        "evaluation panicked",
        "a const-evaluation panic instead of a sentence",
    ),
    (
        "is implemented for",
        "rustc suggesting an implementation the error rules out",
    ),
];

/// The problems of `snapshot`, the output for the case whose source is `source`.
pub(crate) fn check(source: &str, snapshot: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    for (fragment, what) in FORBIDDEN {
        if snapshot.contains(fragment) {
            problems.push(format!("it contains `{fragment}`: {what}"));
        }
    }
    let headlines: Vec<&str> = snapshot
        .lines()
        .filter(|l| l.starts_with("error[") || l.starts_with("error:"))
        .collect();
    let declared = declared_errors(source).unwrap_or(1);
    if headlines.len() != declared {
        problems.push(format!(
            "it has {} errors where the case declares {declared}; a case with several mistakes says so in a comment, `// Two mistakes, two errors: ...`",
            headlines.len()
        ));
    }
    for (i, headline) in headlines.iter().enumerate() {
        if headlines[..i].contains(headline) {
            problems.push(format!("two errors share the headline `{headline}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// `n` of a `// <n> mistakes, <n> errors` comment, in words or digits.
fn declared_errors(source: &str) -> Option<usize> {
    source.lines().find_map(|line| {
        let comment = line.trim_start().strip_prefix("//")?.trim();
        let (mistakes, rest) = comment.split_once(" mistakes, ")?;
        let errors = rest.split_once(" errors")?.0;
        let (mistakes, errors) = (number(mistakes)?, number(errors)?);
        (mistakes == errors).then_some(errors)
    })
}

fn number(word: &str) -> Option<usize> {
    const WORDS: [&str; 6] = ["zero", "one", "two", "three", "four", "five"];
    let word = word.to_ascii_lowercase();
    WORDS
        .iter()
        .position(|w| *w == word)
        .or_else(|| word.parse().ok())
}
