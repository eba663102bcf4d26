//! Turns rustc's output for one case into its snapshot: stable across machines, checkouts and
//! edits to the rest of the workspace.
//!
//! - Paths are relative to the workspace root; the toolchain's sources read `$RUST`, the
//!   cargo registry `$CARGO`, anything else under the workspace `$WORKSPACE`.
//! - Outside the case's own file, line and column numbers are dropped (the snippet stays), so
//!   an edit to the runtime does not rewrite every snapshot that quotes it.
//! - rustc's summary lines (`aborting due to`, `For more information`, `warnings emitted`) and
//!   the notes about files it wrote long type names to are removed: they say nothing about the
//!   case.
//! - The lists under "the following other types implement trait `X`:" become `...`: they name
//!   the implementations of a dependency's trait (serde's, say), which change with its version
//!   and with the features cargo resolved for this build (`cargo test -p` and `--workspace`
//!   resolve different ones), while the header says what matters.

use std::path::Path;

/// What a snapshot depends on besides rustc's output.
pub(crate) struct Context<'a> {
    /// The workspace root, as rustc may print it.
    pub(crate) workspace: &'a Path,
    /// The case's path as given to rustc, relative to the workspace root.
    pub(crate) case: &'a str,
}

/// The snapshot of `stderr`.
pub(crate) fn normalize(stderr: &str, cx: &Context<'_>) -> String {
    let workspace = format!("{}/", cx.workspace.display());
    let mut out = Vec::new();
    // Whether the snippet lines that follow belong to the case's own file.
    let mut in_case = true;
    // The indentation of the list being elided, while in one.
    let mut eliding: Option<usize> = None;
    for line in stderr.lines() {
        if is_summary(line) {
            continue;
        }
        if let Some(indent) = eliding {
            if line.len() - line.trim_start().len() > indent && !line.trim_start().starts_with('=')
            {
                continue;
            }
            eliding = None;
        }
        if line.trim_start().starts_with("= help: the following")
            && line.contains("types implement trait `")
            && line.ends_with(':')
        {
            let indent = line.len() - line.trim_start().len();
            out.push(line.trim_end().to_owned());
            out.push(format!("{}...", " ".repeat(indent + 10)));
            eliding = Some(indent);
            continue;
        }
        let line = line.replace(&workspace, "");
        let line = rename_roots(&line);
        if starts_diagnostic(&line) {
            // A new message or sub-message: its snippets are in the case's file unless an
            // arrow line says otherwise.
            in_case = true;
        }
        if let Some((prefix, location)) = arrow(&line) {
            let file = file_of(location);
            in_case = file == cx.case;
            if in_case {
                out.push(line.trim_end().to_owned());
            } else {
                out.push(format!("{prefix}{file}"));
            }
            continue;
        }
        if !in_case {
            if let Some(blanked) = blank_gutter_number(&line) {
                out.push(blanked.trim_end().to_owned());
                continue;
            }
        }
        out.push(line.trim_end().to_owned());
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// `error[E0277]: ..`, `warning: ..`, `note: ..`, `help: ..` at the start of a line.
fn starts_diagnostic(line: &str) -> bool {
    ["error", "warning", "note:", "help:"]
        .iter()
        .any(|p| line.starts_with(p))
}

/// Lines rustc adds after the diagnostics, or that name a temporary file.
fn is_summary(line: &str) -> bool {
    line.starts_with("error: aborting due to")
        || line.starts_with("For more information about")
        || line.starts_with("Some errors have detailed explanations")
        || (line.starts_with("warning: ") && line.ends_with("emitted"))
        || line.contains("the full name for the type has been written to")
        || line.contains("consider using `--verbose` to print the full type name")
}

/// The toolchain's and the registry's sources under a fixed name.
fn rename_roots(line: &str) -> String {
    let mut line = line.to_owned();
    if let Some(start) = line.find("/rustc/") {
        // `/rustc/<commit hash>/library/...`
        let rest = &line[start + "/rustc/".len()..];
        if let Some(slash) = rest.find('/') {
            line = format!("{}$RUST{}", &line[..start], &rest[slash..]);
        }
    }
    if let Some(start) = line.find("/.cargo/registry/src/") {
        // `/home/u/.cargo/registry/src/index.crates.io-<hash>/crate-1.0/src/...`
        let rest = &line[start + "/.cargo/registry/src/".len()..];
        if let Some(slash) = rest.find('/') {
            let begin = line[..start].rfind([' ', '\'', '`']).map_or(0, |i| i + 1);
            line = format!("{}$CARGO{}", &line[..begin], &rest[slash..]);
        }
    }
    line
}

/// `  --> file:1:2` or `  ::: file:1:2`: the part up to the path, and the location.
fn arrow(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    let marker = ["--> ", "::: "]
        .into_iter()
        .find(|m| trimmed.starts_with(m))?;
    let prefix_len = line.len() - trimmed.len() + marker.len();
    Some((&line[..prefix_len], &line[prefix_len..]))
}

/// `file` of `file:12:5`.
fn file_of(location: &str) -> &str {
    let mut end = location.len();
    for _ in 0..2 {
        match location[..end].rfind(':') {
            Some(colon) if location[colon + 1..end].chars().all(|c| c.is_ascii_digit()) => {
                end = colon;
            }
            _ => break,
        }
    }
    &location[..end]
}

/// `  12 |     code` into `     |     code` (the width kept, the number gone).
fn blank_gutter_number(line: &str) -> Option<String> {
    let bar = line.find(" |")?;
    let gutter = &line[..bar];
    let number = gutter.trim_start();
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{}{}", " ".repeat(bar), &line[bar..]))
}
