//! The compile-fail driver's own rules: how rustc's output becomes a snapshot, and what a
//! snapshot may not contain. The driver (`tests/ui/main.rs`) runs without the test harness, so
//! its modules are tested here.

#[path = "ui/normalize.rs"]
mod normalize;
#[path = "ui/standards.rs"]
mod standards;

use std::path::Path;

fn snapshot(stderr: &str) -> String {
    normalize::normalize(
        stderr,
        &normalize::Context {
            workspace: Path::new("/work/repo"),
            case: "ui-tests/ui/fail/case.rs",
        },
    )
}

#[test]
fn summary_lines_and_trailing_blank_lines_are_dropped() {
    let out = snapshot(
        "error: oops\n --> ui-tests/ui/fail/case.rs:3:1\n\nerror: aborting due to 1 previous error\n\nFor more information about this error, try `rustc --explain E0277`.\n",
    );
    assert_eq!(out, "error: oops\n --> ui-tests/ui/fail/case.rs:3:1\n");
}

#[test]
fn other_files_lose_their_line_numbers_and_the_case_keeps_its_own() {
    let out = snapshot(concat!(
        "error[E0277]: bad\n",
        "  --> ui-tests/ui/fail/case.rs:10:19\n",
        "   |\n",
        "10 |     client.task::<J>();\n",
        "note: required by a bound\n",
        "  --> /work/repo/runtime/src/client/mod.rs:71:12\n",
        "   |\n",
        "71 |     pub fn task<J>(&self)\n",
        "help: a fix\n",
        "   |\n",
        "10 |     client.task::<K>();\n",
    ));
    assert_eq!(
        out,
        concat!(
            "error[E0277]: bad\n",
            "  --> ui-tests/ui/fail/case.rs:10:19\n",
            "   |\n",
            "10 |     client.task::<J>();\n",
            "note: required by a bound\n",
            "  --> runtime/src/client/mod.rs\n",
            "   |\n",
            "   |     pub fn task<J>(&self)\n",
            "help: a fix\n",
            "   |\n",
            "10 |     client.task::<K>();\n",
        )
    );
}

#[test]
fn lists_of_other_implementations_are_elided() {
    let out = snapshot(concat!(
        "error[E0277]: the trait bound `X: Serialize` is not satisfied\n",
        "   = help: the following other types implement trait `Serialize`:\n",
        "             &'a T\n",
        "             ()\n",
        "           and 139 others\n",
        "   = note: required for `X` to implement `Payload`\n",
    ));
    assert_eq!(
        out,
        concat!(
            "error[E0277]: the trait bound `X: Serialize` is not satisfied\n",
            "   = help: the following other types implement trait `Serialize`:\n",
            "             ...\n",
            "   = note: required for `X` to implement `Payload`\n",
        )
    );
}

#[test]
fn the_toolchain_and_registry_sources_get_fixed_names() {
    let out = snapshot(concat!(
        "error: e\n",
        "  --> /rustc/59807616e1234/library/core/src/ops.rs:5:1\n",
        "  ::: /home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde-1.0.0/src/de.rs:9:9\n",
    ));
    assert_eq!(
        out,
        "error: e\n  --> $RUST/library/core/src/ops.rs\n  ::: $CARGO/serde-1.0.0/src/de.rs\n"
    );
}

#[test]
fn a_snapshot_may_not_name_internals() {
    for fragment in [
        "__private::kind",
        "__DurableApp",
        "`_::_`",
        "evaluation panicked",
        "the trait `X` is implemented for `Y`",
    ] {
        let snapshot = format!("error: one\n  = note: {fragment}\n");
        assert!(
            standards::check("", &snapshot).is_err(),
            "{fragment} was accepted"
        );
    }
    assert!(standards::check(
        "",
        "error: one\n  = help: the trait `X` is not implemented for `Y`\n"
    )
    .is_ok());
}

#[test]
fn several_errors_need_a_comment_that_counts_them() {
    let two = "error: one\nerror: two\n";
    assert!(standards::check("fn main() {}", two).is_err());
    assert!(standards::check("// Two mistakes, two errors: a and b.", two).is_ok());
    assert!(standards::check("// 2 mistakes, 2 errors", two).is_ok());
    assert!(standards::check("// Three mistakes, three errors", two).is_err());
}

#[test]
fn two_errors_may_not_share_a_headline() {
    let twice = "error: same\nerror: same\n";
    assert!(standards::check("// Two mistakes, two errors", twice).is_err());
}

#[test]
fn every_compile_fail_case_is_explained_in_the_docs() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(manifest.join("../docs/compile-errors.md"))
        .expect("docs/compile-errors.md");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(manifest.join("ui/fail")).expect("ui/fail") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let case = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if !docs.contains(&format!("`{case}`")) {
                missing.push(case.to_owned());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/compile-errors.md: {missing:?}"
    );
}
