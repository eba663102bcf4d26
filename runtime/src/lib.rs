//! Durable background jobs for Rust services.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

extern crate self as durable_jobs;

pub mod client;
mod clock;
mod engine;
mod error;
mod id;
pub mod job;
mod retry;
pub mod steps;
pub mod store;
pub mod telemetry;
mod time;

pub use client::Client;
pub use clock::Clock;
pub use engine::{
    AddResult, ClearResult, ContinuousState, ContinuousStatus, DebounceState, DebounceStatus,
    Engine, EngineBuilder, FlushOutcome, FlushResult, JobSet, Limits, NoApp, Registry, SendResult,
    StartResult, TaskState, TaskStatus, TaskTriggerResult, TerminateResult, TriggerResult, WithApp,
};
pub use error::{BoxError, Error, Operation, Result, ValidationTarget};
pub use id::{InstanceKey, JobKind, MAX_ID_BYTES};
pub use job::continuous::{ContinuousConfig, ContinuousContext, ContinuousJob};
pub use job::debounce::{DebounceConfig, DebounceJob, EventContext, FlushContext, FlushReason};
pub use job::schedule::{CronSchedule, Schedule};
pub use job::step::StepJob;
pub use job::task::{ErrorSource, IdleReason, TaskContext, TaskJob};
pub use job::{Job, JobError, Payload, Registered, RetryExhausted};
pub use retry::{Backoff, ExhaustionReason, RetryPolicy};
pub use steps::{StepContext, StepJobConfig, StepOptions};
pub use store::sqlite::Synchronous;
pub use telemetry::{EventKind, EventStream, HttpTelemetry, JobEvent};
pub use time::Timestamp;

/// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private;

#[doc(inline)]
pub use durable_jobs_macros::{continuous, debounce, registry, step_job, task};

/// Helpers for testing code that uses durable jobs.
pub mod testing {
    pub use crate::clock::TestClock;
}

/// The names most job definitions need.
pub mod prelude {
    pub use crate::{
        Backoff, ContinuousConfig, ContinuousContext, ContinuousJob, DebounceConfig, DebounceJob,
        ErrorSource, EventContext, FlushContext, FlushReason, IdleReason, Job, JobKind,
        RetryPolicy, Schedule, StepContext, StepJob, StepJobConfig, TaskContext, TaskJob,
        Timestamp,
    };
}
