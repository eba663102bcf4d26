//! Metrics for Prometheus, OpenTelemetry or any other backend of the
//! [`metrics`](https://docs.rs/metrics) facade.
//!
//! With the `metrics` feature on, the engine records counters, gauges and histograms through
//! the facade: install a recorder (`metrics-exporter-prometheus`, `metrics-exporter-otel`, ...)
//! before starting the engine and they reach it. Without the feature nothing is recorded: the
//! engine's recording calls compile to nothing.
//!
//! The names are the constants of this module; every job metric carries the labels `job` (the
//! job's persisted name) and `kind` (`continuous`, `debounce`, `task` or `step`). The full list,
//! with what each one counts, is in
//! [`docs/metrics.md`](https://github.com/durable-jobs/durable-jobs/blob/main/docs/metrics.md).
//!
//! Histograms record seconds (and writes, for the group size); the facade leaves buckets to
//! the exporter. With `metrics-exporter-prometheus`, give buckets to the metrics ending in
//! `_seconds` ([`PrometheusBuilder::set_buckets_for_metric`](https://docs.rs/metrics-exporter-prometheus/latest/metrics_exporter_prometheus/struct.PrometheusBuilder.html#method.set_buckets_for_metric)),
//! or they are exported as summaries.
//!
//! The gauges of step runs by status read the store, so they are refreshed by a call:
//! `Engine::record_step_runs` (with the feature). A program that serves everything to Prometheus
//! is the repository's `examples/examples/prometheus.rs`.

use crate::id::JobKind;
use crate::time::Timestamp;

/// Counter: executions of user code, successful or not (`job`, `kind`).
pub const EXECUTIONS_TOTAL: &str = "durable_jobs_executions_total";
/// Counter: executions whose user code returned an error or panicked (`job`, `kind`).
pub const FAILURES_TOTAL: &str = "durable_jobs_failures_total";
/// Counter: retries scheduled by a retry policy after a failure (`job`, `kind`).
pub const RETRIES_TOTAL: &str = "durable_jobs_retries_total";
/// Counter: times a retry policy gave up (`job`, `kind`).
pub const RETRIES_EXHAUSTED_TOTAL: &str = "durable_jobs_retries_exhausted_total";
/// Histogram: time spent in user code per execution, in seconds (`job`, `kind`).
pub const EXECUTION_DURATION_SECONDS: &str = "durable_jobs_execution_duration_seconds";
/// Histogram: how long after its due time an alarm or a step run started, in seconds, on the
/// engine's clock (`job`, `kind`).
pub const LATENESS_SECONDS: &str = "durable_jobs_lateness_seconds";
/// Gauge: alarms the scheduler found due and has not started yet (`job`, `kind`).
pub const ALARMS_DUE: &str = "durable_jobs_alarms_due";
/// Gauge: step runs in the store by status, as of the last `Engine::record_step_runs`
/// (`job`, `kind`, `status`).
pub const STEP_RUNS: &str = "durable_jobs_step_runs";
/// Counter: step runs that ended, by how (`job`, `kind`, `status`: `completed`, `failed`,
/// `cancelled`).
pub const STEP_RUNS_FINISHED_TOTAL: &str = "durable_jobs_step_runs_finished_total";
/// Histogram: writes committed together by the SQLite writer in one transaction.
pub const SQLITE_WRITE_GROUP_SIZE: &str = "durable_jobs_sqlite_write_group_size";
/// Histogram: time from `BEGIN` to `COMMIT` of one write group, in seconds.
pub const SQLITE_COMMIT_DURATION_SECONDS: &str = "durable_jobs_sqlite_commit_duration_seconds";
/// Histogram: time of one sync of the write-ahead log (`Synchronous::Full` only), in seconds.
pub const SQLITE_SYNC_DURATION_SECONDS: &str = "durable_jobs_sqlite_sync_duration_seconds";

/// How a step run ended, for [`STEP_RUNS_FINISHED_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunEnd {
    Completed,
    Failed,
    Cancelled,
}

impl RunEnd {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            RunEnd::Completed => "completed",
            RunEnd::Failed => "failed",
            RunEnd::Cancelled => "cancelled",
        }
    }
}

/// Measures one execution or write group from its start. Empty without the feature.
#[must_use]
pub(crate) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Stopwatch {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// Records an execution of `job` that started with this stopwatch: counted, failed or
    /// not, with its duration.
    pub(crate) fn executed(self, kind: JobKind, job: &str, succeeded: bool) {
        #[cfg(feature = "metrics")]
        {
            let elapsed = self.started.elapsed();
            let labels = job_labels(kind, job);
            ::metrics::counter!(EXECUTIONS_TOTAL, labels.clone()).increment(1);
            if !succeeded {
                ::metrics::counter!(FAILURES_TOTAL, labels.clone()).increment(1);
            }
            ::metrics::histogram!(EXECUTION_DURATION_SECONDS, labels).record(elapsed);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (self, kind, job, succeeded);
    }

    /// Records a write group of `size` writes committed since the start.
    pub(crate) fn group_committed(self, size: usize) {
        #[cfg(feature = "metrics")]
        {
            ::metrics::histogram!(SQLITE_COMMIT_DURATION_SECONDS).record(self.started.elapsed());
            ::metrics::histogram!(SQLITE_WRITE_GROUP_SIZE).record(size as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (self, size);
    }
}

/// Runs `sync`, a sync of the write-ahead log, and records how long it took.
pub(crate) fn log_sync<T>(sync: impl FnOnce() -> T) -> T {
    #[cfg(feature = "metrics")]
    {
        let started = std::time::Instant::now();
        let synced = sync();
        ::metrics::histogram!(SQLITE_SYNC_DURATION_SECONDS).record(started.elapsed());
        synced
    }
    #[cfg(not(feature = "metrics"))]
    sync()
}

/// Counts what follows a failed execution of `key`: a retry, or the retry policy giving up.
pub(crate) fn failure_handled(key: &crate::id::InstanceKey, failure: &crate::engine::Failure) {
    match failure {
        crate::engine::Failure::Retry(_) => retry_scheduled(key.kind(), key.job()),
        crate::engine::Failure::Exhausted { .. } => retries_exhausted(key.kind(), key.job()),
        crate::engine::Failure::NoPolicy => {}
    }
}

/// A failed execution of `job` will be retried.
pub(crate) fn retry_scheduled(kind: JobKind, job: &str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(RETRIES_TOTAL, job_labels(kind, job)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, job);
}

/// The retry policy of `job` gave up.
pub(crate) fn retries_exhausted(kind: JobKind, job: &str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(RETRIES_EXHAUSTED_TOTAL, job_labels(kind, job)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, job);
}

/// An alarm or a run of `job` due at `due` started at `now`.
pub(crate) fn started(kind: JobKind, job: &str, due: Timestamp, now: Timestamp) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(LATENESS_SECONDS, job_labels(kind, job))
        .record(now.saturating_duration_since(due));
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, job, due, now);
}

/// A step run of `job` ended.
pub(crate) fn step_run_finished(job: &str, end: RunEnd) {
    #[cfg(feature = "metrics")]
    {
        let mut labels = job_labels(JobKind::Step, job);
        labels.push(::metrics::Label::from_static_parts("status", end.as_str()));
        ::metrics::counter!(STEP_RUNS_FINISHED_TOTAL, labels).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (job, end);
}

/// The scheduler's queue of due alarms was replaced by `due` (read by a scan): sets the
/// gauge of every job in `jobs`, zero for those with nothing due.
pub(crate) fn alarms_due<'a>(
    jobs: &[(JobKind, &'static str)],
    due: impl Iterator<Item = &'a crate::id::InstanceKey>,
) {
    #[cfg(feature = "metrics")]
    {
        let mut counts: std::collections::HashMap<(JobKind, &str), u32> =
            jobs.iter().map(|&job| (job, 0)).collect();
        for key in due {
            if let Some(n) = counts.get_mut(&(key.kind(), key.job())) {
                *n += 1;
            }
        }
        for ((kind, job), n) in counts {
            ::metrics::gauge!(ALARMS_DUE, job_labels(kind, job)).set(n);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (jobs, due.count());
}

/// A due alarm left the scheduler's queue (started, or skipped as running or held).
pub(crate) fn alarm_dequeued(key: &crate::id::InstanceKey) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(ALARMS_DUE, job_labels(key.kind(), key.job())).decrement(1);
    #[cfg(not(feature = "metrics"))]
    let _ = key;
}

/// An engine with these jobs started: describes every metric, and creates the counters and
/// gauges of each job at zero, so that a job that never failed shows `0` failures rather than
/// nothing.
pub(crate) fn engine_started<'a>(jobs: impl Iterator<Item = (JobKind, &'a str)>) {
    #[cfg(feature = "metrics")]
    {
        describe();
        for (kind, job) in jobs {
            let labels = job_labels(kind, job);
            for counter in [
                EXECUTIONS_TOTAL,
                FAILURES_TOTAL,
                RETRIES_TOTAL,
                RETRIES_EXHAUSTED_TOTAL,
            ] {
                ::metrics::counter!(counter, labels.clone()).increment(0);
            }
            if kind == JobKind::Step {
                for end in [RunEnd::Completed, RunEnd::Failed, RunEnd::Cancelled] {
                    let mut labels = labels.clone();
                    labels.push(::metrics::Label::from_static_parts("status", end.as_str()));
                    ::metrics::counter!(STEP_RUNS_FINISHED_TOTAL, labels).increment(0);
                }
            } else {
                ::metrics::gauge!(ALARMS_DUE, labels).increment(0.0);
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = jobs.count();
}

#[cfg(feature = "metrics")]
fn job_labels(kind: JobKind, job: &str) -> Vec<::metrics::Label> {
    vec![
        ::metrics::Label::new("job", job.to_owned()),
        ::metrics::Label::from_static_parts("kind", kind.as_str()),
    ]
}

#[cfg(feature = "metrics")]
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        EXECUTIONS_TOTAL,
        Unit::Count,
        "Executions of user code, successful or not."
    );
    describe_counter!(
        FAILURES_TOTAL,
        Unit::Count,
        "Executions whose user code returned an error or panicked."
    );
    describe_counter!(
        RETRIES_TOTAL,
        Unit::Count,
        "Retries scheduled by a retry policy after a failure."
    );
    describe_counter!(
        RETRIES_EXHAUSTED_TOTAL,
        Unit::Count,
        "Times a retry policy gave up."
    );
    describe_histogram!(
        EXECUTION_DURATION_SECONDS,
        Unit::Seconds,
        "Time spent in user code per execution."
    );
    describe_histogram!(
        LATENESS_SECONDS,
        Unit::Seconds,
        "How long after its due time an alarm or a step run started."
    );
    describe_gauge!(
        ALARMS_DUE,
        Unit::Count,
        "Alarms the scheduler found due and has not started yet."
    );
    describe_gauge!(
        STEP_RUNS,
        Unit::Count,
        "Step runs in the store by status, as of the last sample."
    );
    describe_counter!(
        STEP_RUNS_FINISHED_TOTAL,
        Unit::Count,
        "Step runs that ended, by status."
    );
    describe_histogram!(
        SQLITE_WRITE_GROUP_SIZE,
        Unit::Count,
        "Writes committed together in one SQLite transaction."
    );
    describe_histogram!(
        SQLITE_COMMIT_DURATION_SECONDS,
        Unit::Seconds,
        "Time from BEGIN to COMMIT of one SQLite write group."
    );
    describe_histogram!(
        SQLITE_SYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Time of one sync of the SQLite write-ahead log."
    );
}

#[cfg(feature = "metrics")]
impl<R: crate::Registry> crate::Engine<R> {
    /// Sets the [`STEP_RUNS`] gauges (`durable_jobs_step_runs{job, kind, status}`) to the
    /// number of runs of each registered step job in each status (`pending`, `leased`,
    /// `completed`, `failed`, `cancelled`). `pending` is the step jobs' queue depth.
    ///
    /// The counts come from one query that reads every run, so this is not done on each
    /// change: call it periodically, or before each scrape.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use durable_jobs::{Engine, Registry};
    /// # async fn serve<R: Registry>(engine: Engine<R>) -> durable_jobs::Result<()> {
    /// let mut every = tokio::time::interval(std::time::Duration::from_secs(15));
    /// loop {
    ///     every.tick().await;
    ///     engine.record_step_runs().await?;
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `Storage` when the store cannot be read.
    pub async fn record_step_runs(&self) -> crate::Result<()> {
        let inner = self.inner();
        let counts = inner.steps.count_runs(inner.clock.now()).await?;
        for (name, handler) in &inner.jobs.jobs {
            if handler.kind() != JobKind::Step {
                continue;
            }
            let found = counts.iter().find(|c| c.job_name == *name);
            let by_status = found.map_or([0; 5], |c| {
                [c.pending, c.leased, c.completed, c.failed, c.cancelled]
            });
            let statuses = ["pending", "leased", "completed", "failed", "cancelled"];
            for (status, n) in statuses.into_iter().zip(by_status) {
                let mut labels = job_labels(JobKind::Step, name);
                labels.push(::metrics::Label::from_static_parts("status", status));
                ::metrics::gauge!(STEP_RUNS, labels).set(n as f64);
            }
        }
        Ok(())
    }
}
