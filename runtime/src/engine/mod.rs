//! The engine: job table, per-instance serialisation, the alarm scheduler and the actions of
//! each job kind.

pub(crate) mod erased;
mod registry;

pub use registry::{JobSet, RegisterJob, Registry};
pub(crate) use registry::Handler;
