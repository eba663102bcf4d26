//! One module per workload of issue 5.

pub(crate) mod continuous;
pub(crate) mod debounce;
pub(crate) mod limit;
pub(crate) mod scale;

#[cfg(feature = "steps")]
pub(crate) mod burndown;
#[cfg(feature = "steps")]
pub(crate) mod latency;
#[cfg(feature = "steps")]
pub(crate) mod steps;

/// Until the step-job client is merged, the step-job workloads say so.
#[cfg(not(feature = "steps"))]
macro_rules! pending {
    ($($name:ident),*) => {$(
        pub(crate) mod $name {
            pub(crate) async fn run(
                _cfg: &crate::Config,
                _dir: &std::path::Path,
                _report: &mut crate::report::Report,
                _peers: &mut crate::peers::Peers,
            ) -> crate::BenchResult {
                Err("step jobs are not in this build yet".into())
            }
        }
    )*};
}
#[cfg(not(feature = "steps"))]
pending!(burndown, latency, steps);
