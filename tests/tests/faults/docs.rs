//! The docs say what the code does: event ids are pruned after `event_id_retention`, as the
//! builder does (`tests/debounce.rs` checks the pruning itself).

/// The "Event ids" section of `docs/jobs.md`.
fn event_ids_section() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/jobs.md");
    let docs = std::fs::read_to_string(path).expect("docs/jobs.md");
    let start = docs.find("\n## Event ids").expect("an Event ids section");
    let rest = &docs[start + 1..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_owned()
}

#[test]
fn the_docs_say_event_ids_are_pruned_after_their_retention() {
    let section = event_ids_section();
    assert!(
        section.contains("event_id_retention") && section.contains("pruned"),
        "the Event ids section does not say when ids are pruned:\n{section}"
    );
    for wrong in ["does not prune", "for as long as the database lives"] {
        assert!(
            !section.contains(wrong),
            "the Event ids section says {wrong:?}, which the code does not do"
        );
    }
}
