//! The bodies of the fuzz targets: everything durable-jobs parses from untrusted input at run
//! time.
//!
//! - [`by_name`]: instance ids, event ids, idempotency keys and JSON payloads given to the
//!   by-name client (`client.by_name(...)`), the path an HTTP handler or a command-line tool
//!   takes, on every kind and operation.
//! - [`schedule`]: cron expressions and time zones given to `Schedule::cron` at run time, and
//!   the next run they compute.
//! - [`stored_row`]: what the store holds, decoded by the engine: a column of a stored row
//!   (instance state, counters, alarm times, step-run input, status, labels, ...) replaced by
//!   arbitrary bytes, then read, run and shut down.
//!
//! The property is the same everywhere: no panic, no abort, and errors of the documented kinds
//! only. Run one with `cargo fuzz run <target> --features libfuzzer` in this folder (see
//! `RELIABILITY.md`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use durable_jobs::client::DynamicJob;
use durable_jobs::prelude::*;
use durable_jobs::steps::TriggerOptions;
use durable_jobs::testing::TestClock;
use durable_jobs::{Engine, Error, Schedule, Timestamp};
use serde::{Deserialize, Serialize};

/// The error of the fuzzed jobs.
#[derive(Debug)]
pub struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

/// A structured payload, so that decoding has fields, nesting and types to get wrong.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Payload {
    /// A number.
    pub n: i64,
    /// Some text.
    #[serde(default)]
    pub tags: Vec<String>,
    /// An optional nested value.
    #[serde(default)]
    pub inner: Option<Box<Payload>>,
}

/// Runs hourly; its state is a [`Payload`].
#[durable_jobs::continuous(every = "1h", name = "f-cont")]
pub async fn f_cont(ctx: &mut ContinuousContext<Payload>) -> Result<(), Never> {
    ctx.update_state(|p| p.n = p.n.wrapping_add(1));
    Ok(())
}

/// Folds payloads; flushed after a minute or at 5 events.
pub struct FBatch;

#[durable_jobs::debounce(flush_after = "1m", max_events = 5, name = "f-batch")]
impl DebounceJob for FBatch {
    type Event = Payload;
    type State = Vec<Payload>;
    type Error = Never;

    fn on_event(
        &self,
        state: Option<Vec<Payload>>,
        p: Payload,
        _ctx: &EventContext,
    ) -> Vec<Payload> {
        let mut all = state.unwrap_or_default();
        all.push(p);
        all
    }

    async fn execute(&self, _ctx: &mut FlushContext<Vec<Payload>>) -> Result<(), Never> {
        Ok(())
    }
}

/// Keeps the last payload; schedules itself a minute later when `n` is even.
pub struct FTask;

#[durable_jobs::task(name = "f-task")]
impl TaskJob for FTask {
    type State = Payload;
    type Event = Payload;
    type Error = Never;

    async fn on_event(&self, ctx: &mut TaskContext<Payload>, p: Payload) -> Result<(), Never> {
        if p.n % 2 == 0 {
            ctx.schedule_in(Duration::from_secs(60));
        }
        ctx.set_state(p);
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<Payload>) -> Result<(), Never> {
        ctx.update_state(|p| p.n = p.n.wrapping_sub(1));
        Ok(())
    }
}

/// Returns its input's tags, in one step.
#[durable_jobs::step_job(name = "f-step")]
pub async fn f_step(
    step: &mut StepContext,
    input: Payload,
) -> Result<Vec<String>, durable_jobs::steps::StepError> {
    step.run("tags", |_| async move {
        Ok::<_, durable_jobs::BoxError>(input.tags.clone())
    })
    .await
}

durable_jobs::registry! {
    /// One job of each kind.
    pub FuzzJobs { FCont, FBatch, FTask, FStep }
}

const NAMES: [&str; 5] = ["f-cont", "f-batch", "f-task", "f-step", "no-such-job"];

/// A runtime shared by every input of the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// One in-memory engine for every `by_name` input, on a test clock that never moves.
fn shared_engine() -> &'static Engine<FuzzJobs> {
    static ENGINE: OnceLock<Engine<FuzzJobs>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        runtime().block_on(async {
            Engine::<FuzzJobs>::builder()
                .in_memory()
                .clock(TestClock::new())
                .start()
                .await
                .expect("the engine starts")
        })
    })
}

/// Splits `data` at `0xFF` bytes into at most `n` fields (missing fields are empty).
fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0xFF).collect();
    out.resize(n, &[]);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// JSON from the bytes when they parse (serde's parser stops at 128 levels), else a string.
fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| serde_json::Value::String(text(bytes)))
}

/// Errors a call from outside may get; anything else from a bad input is a bug.
fn expected<T>(call: &str, result: Result<T, Error>) {
    match result {
        Ok(_)
        | Err(Error::Validation { .. })
        | Err(Error::InstanceNotFound { .. })
        | Err(Error::DuplicateEvent { .. })
        | Err(Error::InvalidState { .. })
        | Err(Error::JobNotFound { .. }) => {}
        Err(e) => panic!("{call}: an input got {e:?}"),
    }
}

/// The by-name client with an arbitrary job name, operation, instance id, event id, key and
/// JSON payload. Layout: `[selector] name? 0xFF id 0xFF event-id 0xFF json`.
pub fn by_name(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let f = fields(rest, 4);
    let name = if selector & 0x80 != 0 {
        text(f[0])
    } else {
        NAMES[usize::from(selector) % NAMES.len()].to_owned()
    };
    let (id, event_id, body) = (text(f[1]), text(f[2]), json(f[3]));
    let event_id = (!event_id.is_empty()).then_some(event_id.as_str());
    let op = (selector >> 3) & 0x7;
    let client = shared_engine().client();
    runtime().block_on(async {
        let job = match client.by_name(&name) {
            Ok(job) => job,
            Err(e) => return expected("by_name", Err::<(), _>(e)),
        };
        let _ = job.name();
        expected("get_state", job.get_state(&id).await);
        match job {
            DynamicJob::Continuous(j) => match op {
                0 | 1 => expected("start", j.start(&id, body).await),
                2 => expected("trigger", j.trigger(&id).await),
                3 => expected("terminate", j.terminate(&id, event_id).await),
                _ => expected("status", j.status(&id).await),
            },
            DynamicJob::Debounce(j) => match op {
                0..=2 => expected("add", j.add(&id, body, event_id).await),
                3 => expected("flush", j.flush(&id).await),
                4 => expected("clear", j.clear(&id).await),
                _ => expected("status", j.status(&id).await),
            },
            DynamicJob::Task(j) => match op {
                0..=2 => expected("send", j.send(&id, body, event_id).await),
                3 => expected("trigger", j.trigger(&id).await),
                4 => expected("terminate", j.terminate(&id).await),
                _ => expected("status", j.status(&id).await),
            },
            DynamicJob::Step(j) => {
                let mut options = TriggerOptions::new();
                if op & 1 == 1 {
                    options = options.idempotency_key(id.clone());
                }
                if op & 2 == 2 {
                    options = options.concurrency_key(event_id.unwrap_or_default());
                }
                if op & 4 == 4 {
                    options = options.label(id.clone(), event_id.unwrap_or_default());
                }
                expected("step trigger", j.trigger(body, options).await);
            }
            _ => {}
        }
    });
}

/// A cron expression and a time zone as a program might read them from its configuration, and
/// the next runs they give from several instants. Layout: `expression 0xFF time-zone 0xFF
/// eight bytes of a start time`.
pub fn schedule(data: &[u8]) {
    let f = fields(data, 3);
    let (expression, zone) = (text(f[0]), text(f[1]));
    let zone = (!zone.is_empty()).then_some(zone.as_str());
    let Ok(schedule) = Schedule::cron(&expression, zone) else {
        return;
    };
    let mut start = [0u8; 8];
    for (i, b) in f[2].iter().take(8).enumerate() {
        start[i] = *b;
    }
    for at in [
        Timestamp::from_millis(i64::from_le_bytes(start)),
        Timestamp::from_millis(0),
        Timestamp::from_millis(i64::MAX),
        Timestamp::from_millis(i64::MIN),
        TestClock::DEFAULT_START,
    ] {
        if let Some(next) = schedule.next_after(at) {
            assert!(
                next > at,
                "{expression:?} in {zone:?}: {next} is not after {at}"
            );
        }
    }
}

/// A database holding one instance of each kind and one step run, written once per process.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary folder");
            let path = dir.path().join("template.db");
            runtime().block_on(async {
                let engine = Engine::<FuzzJobs>::builder()
                    .sqlite(&path)
                    .clock(TestClock::new())
                    .start()
                    .await
                    .expect("the engine starts");
                let client = engine.client();
                let p = Payload {
                    n: 2,
                    tags: vec!["a".into()],
                    inner: Some(Box::default()),
                };
                client
                    .continuous::<FCont>()
                    .start("c", p.clone())
                    .await
                    .unwrap();
                client
                    .debounce::<FBatch>()
                    .add_with_id("b", p.clone(), "e1")
                    .await
                    .unwrap();
                client.task::<FTask>().send("t", p.clone()).await.unwrap();
                let run = client
                    .step_job::<FStep>()
                    .trigger(p, TriggerOptions::new().label("k", "v"))
                    .await
                    .unwrap();
                client
                    .step_job::<FStep>()
                    .wait_for_run(&run.run.id, Some(Duration::from_secs(30)))
                    .await
                    .unwrap();
                drop(client);
                engine.shutdown().await.unwrap();
            });
            (dir, path)
        })
        .1
}

/// The columns a stored row is corrupted in.
const COLUMNS: [(&str, &str); 16] = [
    ("instances", "state"),
    ("instances", "alarm_at"),
    ("instances", "run_count"),
    ("instances", "event_count"),
    ("instances", "execute_count"),
    ("instances", "batch_started_at"),
    ("instances", "retry_attempt"),
    ("instances", "retry_started_at"),
    ("instances", "lease_owner"),
    ("instances", "version"),
    ("durably_runs", "input"),
    ("durably_runs", "status"),
    ("durably_runs", "labels"),
    ("durably_runs", "output"),
    ("durably_runs", "attempt"),
    ("durably_runs", "created_at"),
];

/// One column of one stored row replaced by arbitrary bytes (as text, a blob, an integer, a
/// real or NULL); then an engine opens the file, reads every instance and run, lets a day pass
/// (every alarm fires, every pending run runs) and shuts down. Layout: `[column] [row]
/// [type] value`.
pub fn stored_row(data: &[u8]) {
    let [column, row, kind, value @ ..] = data else {
        return;
    };
    let (table, column) = COLUMNS[usize::from(*column) % COLUMNS.len()];
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("jobs.db");
    std::fs::copy(template(), &path).expect("the template copies");
    {
        let conn = rusqlite::Connection::open(&path).expect("the copy opens");
        let value: rusqlite::types::Value = match kind % 5 {
            0 => rusqlite::types::Value::Text(text(value)),
            1 => rusqlite::types::Value::Blob(value.to_vec()),
            2 => {
                let mut b = [0u8; 8];
                for (i, v) in value.iter().take(8).enumerate() {
                    b[i] = *v;
                }
                rusqlite::types::Value::Integer(i64::from_le_bytes(b))
            }
            3 => rusqlite::types::Value::Real(f64::from(value.first().copied().unwrap_or(0)) / 3.0),
            _ => rusqlite::types::Value::Null,
        };
        let sql = format!(
            "UPDATE {table} SET {column} = ?1 WHERE rowid = (SELECT rowid FROM {table} LIMIT 1 OFFSET ?2)"
        );
        // A constraint (NOT NULL, ...) may refuse the value: then the row stays as it was.
        let _ = conn.execute(&sql, rusqlite::params![value, i64::from(*row % 4)]);
    }
    runtime().block_on(async {
        let clock = TestClock::new();
        let engine = match Engine::<FuzzJobs>::builder()
            .sqlite(&path)
            .clock(clock.clone())
            .start()
            .await
        {
            Ok(engine) => engine,
            Err(Error::Storage { .. }) => return,
            Err(e) => panic!("opening a corrupted file: {e:?}"),
        };
        let client = engine.client();
        let _ = client.continuous::<FCont>().status("c").await;
        let _ = client.continuous::<FCont>().get_state("c").await;
        let _ = client.debounce::<FBatch>().status("b").await;
        let _ = client.debounce::<FBatch>().get_state("b").await;
        let _ = client.task::<FTask>().status("t").await;
        let _ = client.task::<FTask>().get_state("t").await;
        let _ = client
            .step_job::<FStep>()
            .get_runs(Default::default())
            .await;
        // A day passes: every alarm fires, with whatever it decodes.
        let day = tokio::time::timeout(
            Duration::from_secs(60),
            clock.advance(Duration::from_secs(24 * 3600)),
        )
        .await;
        assert!(day.is_ok(), "a day of alarms did not end in a minute");
        let _ = client
            .debounce::<FBatch>()
            .add_with_id("b", Payload::default(), "e1")
            .await;
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(60), engine.shutdown()).await;
    });
}
