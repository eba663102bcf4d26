//! Compile-error tests of durable-jobs; see `tests/ui.rs`.
