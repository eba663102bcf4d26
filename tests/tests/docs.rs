//! The crate documentation is for users: how the API came to be lives in `docs/`.

use std::path::Path;

fn workspace_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_design_history_is_in_docs_not_in_the_crate_docs() {
    let crate_docs: String = workspace_file("runtime/src/lib.rs")
        .lines()
        .filter(|line| line.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !crate_docs.contains("API sketch"),
        "the crate docs still tell the design history"
    );
    let history = workspace_file("docs/design-history.md");
    assert!(history.contains("`.app(App)` on the builder, not `.state(App)`"));
    assert!(workspace_file("README.md").contains("(docs/design-history.md)"));
}
