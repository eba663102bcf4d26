//! Step-job acceptance tests: the scenarios of upstream's test catalogue that apply to a Rust
//! library, plus the features beyond upstream. Each test runs a real [`StepRuntime`] on a SQLite
//! file in a temporary directory.

/// Asserts a result is the given error variant and returns the error.
macro_rules! assert_err {
    ($e:expr, $p:pat) => {
        match $e {
            Err(e @ $p) => e,
            other => panic!("expected {}, got {:?}", stringify!($p), other.map(|_| ())),
        }
    };
}

mod api;
mod coalesce;
mod events;
mod recovery;
mod steps;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::error::BoxError;
use crate::id::JobKind;
use crate::job::Job;
use crate::sqlite::{SqliteOptions, SqliteStore};
use crate::steps::*;
use crate::store::runs::*;
use crate::store::{BoxFuture, StoreError};
use crate::testing::TestClock;
use crate::time::Timestamp;
use crate::{Backoff, RetryPolicy, StepJob};

pub(super) const WAIT: Duration = Duration::from_secs(10);

/// A lease owner id of its own for each runtime a test starts, as each engine has.
pub(super) fn test_owner() -> String {
    format!("engine-{}", ulid::Ulid::new())
}

// ---------------------------------------------------------------------------------------------
// The application the test jobs run against: it records what the steps did and lets a test
// block a step until released.

pub(super) struct App {
    calls: Mutex<HashMap<String, u32>>,
    order: Mutex<Vec<String>>,
    fail: Mutex<HashMap<String, u32>>,
    block: Mutex<HashSet<String>>,
    gate: Semaphore,
    entered_tx: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
    entered_rx: tokio::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    running: AtomicUsize,
    peak: AtomicUsize,
    saw_cancel: Mutex<Vec<String>>,
}

impl App {
    pub(super) fn new() -> Arc<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = App {
            calls: Mutex::default(),
            order: Mutex::default(),
            fail: Mutex::default(),
            block: Mutex::default(),
            gate: Semaphore::new(0),
            entered_tx: Mutex::default(),
            entered_rx: tokio::sync::Mutex::default(),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            saw_cancel: Mutex::default(),
        };
        *app.entered_tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        *app.entered_rx.try_lock().expect("fresh") = Some(rx);
        Arc::new(app)
    }

    /// Step `name` fails its next `times` executions.
    pub(super) fn fail(&self, name: &str, times: u32) {
        self.fail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), times);
    }

    /// Step `name` blocks until [`release`](Self::release)d or its run is cancelled.
    pub(super) fn block(&self, name: &str) {
        self.block
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into());
    }

    pub(super) fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Waits until a blocking step was entered; returns its name.
    pub(super) async fn entered(&self) -> String {
        let mut rx = self.entered_rx.lock().await;
        let rx = rx.as_mut().expect("receiver");
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a step was entered in time")
            .expect("open")
    }

    pub(super) fn calls(&self, name: &str) -> u32 {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn order(&self) -> Vec<String> {
        self.order.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub(super) fn saw_cancel(&self) -> Vec<String> {
        self.saw_cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn step(
        &self,
        tag: &str,
        name: &str,
        scope: StepScope,
        reject_on_cancel: bool,
    ) -> Result<String, BoxError> {
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let n = calls.entry(name.to_owned()).or_default();
            *n += 1;
            *n
        };
        let label = if tag.is_empty() {
            name.to_owned()
        } else {
            tag.to_owned()
        };
        self.order
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("start-{label}"));
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(running, Ordering::SeqCst);
        let result = self.step_body(name, &scope, reject_on_cancel).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        if result.is_ok() {
            self.order
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("end-{label}"));
        }
        result.map(|()| format!("{name}-{n}"))
    }

    async fn step_body(
        &self,
        name: &str,
        scope: &StepScope,
        reject_on_cancel: bool,
    ) -> Result<(), BoxError> {
        let blocks = self
            .block
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name);
        if blocks {
            if let Some(tx) = self
                .entered_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                let _ = tx.send(name.to_owned());
            }
            tokio::select! {
                permit = self.gate.acquire() => {
                    if let Ok(p) = permit {
                        p.forget();
                    }
                }
                _ = scope.cancelled() => {
                    self.saw_cancel.lock().unwrap_or_else(|e| e.into_inner()).push(name.to_owned());
                    if reject_on_cancel {
                        return Err("aborted".into());
                    }
                }
            }
        }
        let mut fail = self.fail.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(left) = fail.get_mut(name).filter(|l| **l > 0) {
            *left -= 1;
            return Err(format!("{name} failed!").into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Test jobs

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ValueIn {
    pub(super) value: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ResultOut {
    pub(super) result: i64,
}

/// `{value}` → `{result: value * 2}` in one step.
pub(super) struct Double;

impl Job for Double {
    const NAME: &'static str = "double";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<App> for Double {
    type Input = ValueIn;
    type Output = ResultOut;
    type Error = BoxError;

    async fn run(
        &self,
        step: &mut StepContext,
        input: ValueIn,
        _app: &App,
    ) -> Result<ResultOut, BoxError> {
        let result = step
            .run("compute", |_| async move { Ok(input.value * 2) })
            .await?;
        Ok(ResultOut { result })
    }
}

/// The same as [`Double`] under another name, for cross-job tests.
pub(super) struct Other;

impl Job for Other {
    const NAME: &'static str = "other";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<App> for Other {
    type Input = ValueIn;
    type Output = ResultOut;
    type Error = BoxError;

    async fn run(
        &self,
        _step: &mut StepContext,
        input: ValueIn,
        _app: &App,
    ) -> Result<ResultOut, BoxError> {
        Ok(ResultOut {
            result: input.value,
        })
    }
}

/// Always fails with `Intentional failure`.
pub(super) struct Failing;

impl Job for Failing {
    const NAME: &'static str = "failing";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<App> for Failing {
    type Input = ValueIn;
    type Output = ResultOut;
    type Error = BoxError;

    async fn run(
        &self,
        _step: &mut StepContext,
        _input: ValueIn,
        _app: &App,
    ) -> Result<ResultOut, BoxError> {
        Err("Intentional failure".into())
    }
}

/// Runs the named steps in order through [`App::step`]; returns their outputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct ScriptIn {
    pub(super) tag: String,
    pub(super) steps: Vec<String>,
    pub(super) reject_on_cancel: bool,
    /// Return `Ok` even when a step failed because the run was cancelled.
    pub(super) swallow_errors: bool,
}

pub(super) fn script(steps: &[&str]) -> ScriptIn {
    ScriptIn {
        steps: steps.iter().map(|s| s.to_string()).collect(),
        ..ScriptIn::default()
    }
}

async fn run_script(
    step: &mut StepContext,
    input: ScriptIn,
    app: &App,
) -> Result<Vec<String>, BoxError> {
    let mut out = Vec::new();
    for name in &input.steps {
        let tag = input.tag.clone();
        let r = step
            .run(name, |s| async move {
                app.step(&tag, name, s, input.reject_on_cancel).await
            })
            .await;
        match r {
            Ok(v) => out.push(v),
            Err(_) if input.swallow_errors => out.push("error".into()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

pub(super) struct Script;

impl Job for Script {
    const NAME: &'static str = "script";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<App> for Script {
    type Input = ScriptIn;
    type Output = Vec<String>;
    type Error = BoxError;

    async fn run(
        &self,
        step: &mut StepContext,
        input: ScriptIn,
        app: &App,
    ) -> Result<Vec<String>, BoxError> {
        run_script(step, input, app).await
    }
}

/// [`Script`] with a retry policy: 3 attempts, 10 s apart.
pub(super) struct Retrying;

impl Job for Retrying {
    const NAME: &'static str = "retrying";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<App> for Retrying {
    type Input = ScriptIn;
    type Output = Vec<String>;
    type Error = BoxError;

    fn config(&self) -> StepJobConfig {
        StepJobConfig::default().retry(
            RetryPolicy::new(3)
                .backoff(Backoff::constant(Duration::from_secs(10)))
                .jitter(false),
        )
    }

    async fn run(
        &self,
        step: &mut StepContext,
        input: ScriptIn,
        app: &App,
    ) -> Result<Vec<String>, BoxError> {
        run_script(step, input, app).await
    }
}

/// Logs and reports progress.
pub(super) struct Chatty;

impl Job for Chatty {
    const NAME: &'static str = "chatty";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<App> for Chatty {
    type Input = ValueIn;
    type Output = ();
    type Error = BoxError;

    async fn run(
        &self,
        step: &mut StepContext,
        _input: ValueIn,
        _app: &App,
    ) -> Result<(), BoxError> {
        step.info("Starting");
        step.progress(Progress::new(1).of(3).message("first")).await;
        step.run("my-step", |s| async move {
            s.info("inside");
            Ok(())
        })
        .await?;
        step.progress((2, 3)).await;
        step.warn("Almost done");
        step.log(
            LogLevel::Error,
            "Failed item",
            Some(serde_json::json!({ "code": 42 })),
        );
        step.progress(Progress::new(3).of(3).message("done")).await;
        Ok(())
    }
}

/// `n` trivial steps, for throughput measurements.
pub(super) struct Trivial;

impl Job for Trivial {
    const NAME: &'static str = "trivial";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<App> for Trivial {
    type Input = u32;
    type Output = u32;
    type Error = BoxError;

    async fn run(&self, step: &mut StepContext, n: u32, _app: &App) -> Result<u32, BoxError> {
        const NAMES: [&str; 4] = ["s0", "s1", "s2", "s3"];
        let mut sum = 0;
        for i in 0..n.min(4) {
            sum += step
                .run(NAMES[i as usize], |_| async move { Ok(i) })
                .await?;
        }
        Ok(sum)
    }
}

pub(super) fn jobs() -> HashMap<&'static str, Arc<dyn ErasedStepJob<App>>> {
    let mut jobs: HashMap<&'static str, Arc<dyn ErasedStepJob<App>>> = HashMap::new();
    jobs.insert(Double::NAME, erase(Double));
    jobs.insert(Other::NAME, erase(Other));
    jobs.insert(Failing::NAME, erase(Failing));
    jobs.insert(Script::NAME, erase(Script));
    jobs.insert(Retrying::NAME, erase(Retrying));
    jobs.insert(Chatty::NAME, erase(Chatty));
    jobs.insert(Trivial::NAME, erase(Trivial));
    jobs
}

// ---------------------------------------------------------------------------------------------
// The environment of one test

pub(super) struct Env {
    pub(super) _dir: Option<tempfile::TempDir>,
    pub(super) path: PathBuf,
    pub(super) db: Arc<SqliteStore>,
    pub(super) store: Arc<dyn RunStore>,
    pub(super) rt: Arc<StepRuntime<App>>,
    pub(super) app: Arc<App>,
    pub(super) clock: Option<TestClock>,
}

pub(super) struct EnvBuilder {
    options: StepOptions,
    clock: Option<TestClock>,
    path: Option<PathBuf>,
    app: Option<Arc<App>>,
    start: bool,
    wrap: Option<Arc<Wrap>>,
}

impl EnvBuilder {
    pub(super) fn options(mut self, options: StepOptions) -> Self {
        self.options = options;
        self
    }

    pub(super) fn test_clock(mut self) -> Self {
        self.clock = Some(TestClock::new());
        self
    }

    pub(super) fn path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    pub(super) fn app(mut self, app: Arc<App>) -> Self {
        self.app = Some(app);
        self
    }

    pub(super) fn stopped(mut self) -> Self {
        self.start = false;
        self
    }

    /// Routes the runtime's store calls through `wrap` (wrapping the test database).
    pub(super) fn wrap(mut self, wrap: Arc<Wrap>) -> Self {
        self.wrap = Some(wrap);
        self
    }

    pub(super) async fn build(self) -> Env {
        let (dir, path) = match self.path {
            Some(p) => (None, p),
            None => {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("steps.db");
                (Some(dir), path)
            }
        };
        let db = SqliteStore::open(SqliteOptions::file(&path)).expect("open db");
        let store: Arc<dyn RunStore> = match &self.wrap {
            Some(w) => {
                *w.inner.lock().unwrap_or_else(|e| e.into_inner()) = Some(db.clone());
                w.clone()
            }
            None => db.clone(),
        };
        let app = self.app.unwrap_or_else(App::new);
        let clock = self.clock.clone().map(Clock::from).unwrap_or_default();
        let rt = StepRuntime::new(
            store.clone(),
            test_owner(),
            true,
            crate::store::changes::OtherWriters::default(),
            jobs(),
            app.clone(),
            clock,
            self.options,
            crate::telemetry::Fanout::new(),
        );
        if self.start {
            rt.start();
        }
        Env {
            _dir: dir,
            path,
            db,
            store,
            rt,
            app,
            clock: self.clock,
        }
    }
}

impl Env {
    pub(super) fn builder() -> EnvBuilder {
        EnvBuilder {
            options: StepOptions::default(),
            clock: None,
            path: None,
            app: None,
            start: true,
            wrap: None,
        }
    }

    pub(super) async fn new() -> Env {
        Env::builder().build().await
    }

    pub(super) fn client<J: StepJob<App>>(&self) -> StepJobClient<App, J> {
        StepJobClient::new(self.rt.clone())
    }

    pub(super) fn clock(&self) -> &TestClock {
        self.clock.as_ref().expect("built with a test clock")
    }

    /// Waits (at most [`WAIT`]) for the run to end.
    pub(super) async fn wait(&self, id: &str) -> Result<RunRecord, crate::Error> {
        self.rt.wait_for_run(None, id, Some(WAIT)).await
    }

    pub(super) async fn run(&self, id: &str) -> RunRecord {
        self.rt
            .get_run(None, id)
            .await
            .expect("get_run")
            .expect("the run exists")
    }

    pub(super) async fn steps(&self, id: &str) -> Vec<StepRecord> {
        self.rt.get_steps(None, id).await.expect("steps")
    }

    /// Runs a query returning one number on a connection of its own.
    pub(super) fn count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(&self.path).expect("open");
        conn.query_row(sql, [], |r| r.get(0)).expect("query")
    }

    /// Runs SQL on a connection of its own, as another process would.
    pub(super) fn exec(&self, sql: &str) {
        let conn = rusqlite::Connection::open(&self.path).expect("open");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn.execute_batch(sql).expect("exec");
    }

    /// Waits until the worker has claimed everything due (test clock only).
    pub(super) async fn settle(&self) {
        self.clock().settle().await;
    }
}

// ---------------------------------------------------------------------------------------------
// A store wrapper that counts calls and can make claims fail.

#[derive(Default)]
pub(super) struct Wrap {
    inner: Mutex<Option<Arc<SqliteStore>>>,
    pub(super) claims: AtomicUsize,
    pub(super) reads: AtomicUsize,
    pub(super) fail_claims: AtomicBool,
    /// When set, `finish_run` waits for a permit before writing.
    pub(super) finish_gate: Mutex<Option<Arc<Semaphore>>>,
    /// When set, `enqueue` returns only after a claim took a run: the caller of `trigger`
    /// resumes after the worker started what it committed.
    pub(super) enqueue_waits_for_a_claim: AtomicBool,
    /// A permit per claim that took runs.
    claimed: Permits,
}

/// A semaphore that starts empty.
struct Permits(Semaphore);

impl Default for Permits {
    fn default() -> Self {
        Permits(Semaphore::new(0))
    }
}

impl Wrap {
    fn inner(&self) -> Arc<SqliteStore> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("wrapped store")
    }
}

impl RunStore for Wrap {
    fn enqueue(
        &self,
        runs: Vec<NewRun>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<EnqueueOutcome, StoreError>> {
        Box::pin(async move {
            let outcome = self.inner().enqueue(runs, now).await;
            if self.enqueue_waits_for_a_claim.load(Ordering::SeqCst) {
                self.claimed
                    .0
                    .acquire()
                    .await
                    .expect("never closed")
                    .forget();
            }
            outcome
        })
    }
    fn get_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.inner().get_run(id).await })
    }
    fn get_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.inner().get_runs(filter).await })
    }
    fn count_runs(
        &self,
        since: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<crate::steps::RunCounts>, StoreError>> {
        Box::pin(async move { self.inner().count_runs(since).await })
    }
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        if self.fail_claims.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(StoreError::Database("claim refused by the test".into()))
            });
        }
        Box::pin(async move {
            let claimed = self.inner().claim(owner, now, until, limit).await;
            if claimed.as_ref().is_ok_and(|c| !c.runs.is_empty()) {
                self.claimed.0.add_permits(1);
            }
            claimed
        })
    }
    fn next_due<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        Box::pin(async move { self.inner().next_due(owner, now).await })
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        now: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(async move { self.inner().renew_leases(owner, now, until).await })
    }
    fn completed_steps<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredStep>, StoreError>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.inner().completed_steps(run_id).await })
    }
    fn persist_step(
        &self,
        fence: Fence,
        step: NewStep,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move { self.inner().persist_step(fence, step, logs).await })
    }
    fn update_progress(
        &self,
        fence: Fence,
        progress: Option<String>,
        logs: Vec<NewLog>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.inner()
                .update_progress(fence, progress, logs, now)
                .await
        })
    }
    fn append_logs(
        &self,
        run_id: String,
        logs: Vec<NewLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.inner().append_logs(run_id, logs).await })
    }
    fn delete_cancelled_steps(&self, run_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.inner().delete_cancelled_steps(run_id).await })
    }
    fn finish_run(
        &self,
        fence: Fence,
        finish: Finish,
        logs: Vec<NewLog>,
        cleanup: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<FinishOutcome, StoreError>> {
        let gate = self
            .finish_gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.acquire().await.expect("open gate").forget();
            }
            self.inner()
                .finish_run(fence, finish, logs, cleanup, now)
                .await
        })
    }
    fn cancel_run<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
        cleanup: bool,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        Box::pin(async move { self.inner().cancel_run(id, now, cleanup).await })
    }
    fn delete_run<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<DeleteOutcome, StoreError>> {
        Box::pin(async move { self.inner().delete_run(id).await })
    }
    fn purge_runs(
        &self,
        job: Option<String>,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.inner().purge_runs(job, before, limit).await })
    }
    fn get_steps<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<StepRow>, StoreError>> {
        Box::pin(async move { self.inner().get_steps(run_id).await })
    }
    fn get_logs<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Vec<LogRow>, StoreError>> {
        Box::pin(async move { self.inner().get_logs(run_id).await })
    }
    fn recover(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.inner().recover(now).await })
    }
}
