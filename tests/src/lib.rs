//! Integration tests of durable-jobs; see `tests/tests/`.
