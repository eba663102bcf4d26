//! Examples of durable-jobs; see the `examples/` folder.
