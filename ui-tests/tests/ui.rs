//! Compile-error snapshots: every mistake in `ui/fail/` must fail with its `.stderr`, every
//! program in `ui/pass/` must compile and run. `TRYBUILD=overwrite cargo test -p
//! durable-jobs-ui-tests --test ui` rewrites the snapshots; review the diff before committing.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
