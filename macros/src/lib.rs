//! Attribute macros of durable-jobs. Use them through the `durable-jobs` crate.
