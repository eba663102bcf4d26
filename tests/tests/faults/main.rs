//! Regression tests for the faults found by attacking the engine from outside: panicking user
//! code, values that do not survive a round trip through JSON, deeply nested input, a database
//! file reached by another path or deleted under the engine, deploys that change or remove
//! jobs, a shutdown behind an unreachable telemetry endpoint, and docs that disagreed with the
//! code. Each test is named after the fault it pins, runs through the public API on real files,
//! and failed before its fix.

mod deploys;
mod docs;
mod files;
mod input;
mod panics;
mod shutdown;
