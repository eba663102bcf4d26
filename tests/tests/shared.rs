//! The behavioural suites again, on SQLite stores that answer [`Ownership::Shared`]: every
//! alarm execution claims its row with a durable lease that is renewed while it runs, nothing
//! is cached, and nothing is released at start. Each suite's own binary runs it on an exclusive
//! store (the default); `durable_jobs_tests::ownership` tells the two apart. Left out: the
//! suites about the file, the process and the disk themselves (crash, kill, power cut, storage
//! faults) and the system-clock one; the crash and kill suites expect the exclusive recovery at
//! start, and shared stores across processes are not there yet. `history` opens stores of both
//! kinds itself.

// The suites are written as crate roots of their own binaries, where their `pub` items are
// reachable; here they are modules.
#![allow(unreachable_pub)]

use durable_jobs::store::Ownership;

#[path = "continuous.rs"]
mod continuous;
#[path = "debounce.rs"]
mod debounce;
#[path = "error_table.rs"]
mod error_table;
#[path = "errors.rs"]
mod errors;
#[path = "faults/main.rs"]
mod faults;
#[path = "introspection.rs"]
mod introspection;
#[path = "model.rs"]
mod model;
#[path = "restart.rs"]
mod restart;
#[path = "serialisation.rs"]
mod serialisation;
#[path = "steps.rs"]
mod steps;
#[path = "steps_client.rs"]
mod steps_client;
#[path = "task.rs"]
mod task;
#[path = "telemetry.rs"]
mod telemetry;

#[test]
fn this_binary_runs_the_suites_on_shared_stores() {
    assert_eq!(durable_jobs_tests::ownership(), Ownership::Shared);
}
