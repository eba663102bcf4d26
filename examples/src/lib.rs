//! Examples of durable-jobs, in `examples/`: `quickstart` (all kinds together), `continuous`,
//! `debounce`, `task` and `step_job` (one kind each). Run one with
//! `cargo run -p durable-jobs-examples --example <name>`.
