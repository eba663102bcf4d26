//! One module per workload of issue 5.

pub(crate) mod burndown;
pub(crate) mod continuous;
pub(crate) mod debounce;
pub(crate) mod growth;
pub(crate) mod growth_postgres;
pub(crate) mod latency;
pub(crate) mod limit;
pub(crate) mod scale;
pub(crate) mod steps;
