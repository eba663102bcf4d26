//! Step jobs through the public client and the `#[step_job]` macro, including an engine dropped
//! mid-run without a shutdown: the run resumes after its last completed step when the store is
//! opened again. (Real `SIGKILL`s of a child process are in `crash.rs` and `kill.rs`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{Disposition, RunStatus, StepError, StepOptions, TriggerOptions};
use durable_jobs::{Engine, Error};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

/// Counts step executions across engines, and can hold one step forever (a worker that is
/// about to be killed).
#[derive(Default)]
pub struct Steps {
    calls: Mutex<HashMap<String, u32>>,
    hold: Mutex<Option<String>>,
    entered: Mutex<Option<mpsc::UnboundedSender<String>>>,
    never: Notify,
    fail_once: AtomicBool,
}

impl Steps {
    fn calls(&self, step: &str) -> u32 {
        self.calls.lock().unwrap().get(step).copied().unwrap_or(0)
    }

    async fn step(&self, name: &str) -> Result<String, durable_jobs::BoxError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default() += 1;
        if let Some(tx) = self.entered.lock().unwrap().as_ref() {
            tx.send(name.to_owned()).ok();
        }
        let held = self.hold.lock().unwrap().as_deref() == Some(name);
        if held {
            self.never.notified().await;
        }
        if name == "sync-b" && self.fail_once.swap(false, Ordering::SeqCst) {
            return Err("crm refused user b".into());
        }
        Ok(format!("{name}-done"))
    }
}

/// What `sync_users` is asked to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncInput {
    /// The organisation.
    pub org_id: String,
}

/// What it returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncOutput {
    /// The org and each synced user's result, in order.
    pub results: Vec<String>,
}

/// Fetches users, then syncs each one in its own step.
#[durable_jobs::step_job(name = "sync-users")]
pub async fn sync_users(
    step: &mut StepContext,
    input: SyncInput,
    app: &Arc<Steps>,
) -> Result<SyncOutput, StepError> {
    let users: Vec<String> = step
        .run("fetch-users", |_| async {
            app.step("fetch-users").await?;
            Ok(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        })
        .await?;
    let mut results = vec![input.org_id];
    for user in &users {
        let name = format!("sync-{user}");
        results.push(step.run(&name, |_| app.step(&name)).await?);
    }
    Ok(SyncOutput { results })
}

durable_jobs::registry! {
    /// The step job of these tests.
    pub StepTests<Arc<Steps>> { SyncUsers }
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn trigger_and_wait_returns_the_typed_output() {
    let app = Arc::new(Steps::default());
    let dir = durable_jobs_tests::TestDb::new().await;
    let engine = StepTests::builder()
        .store_arc(dir.open().await)
        .app(app.clone())
        .start()
        .await
        .unwrap();
    let jobs = engine.client().step_job::<SyncUsers>();
    let done = jobs
        .trigger_and_wait(
            SyncInput {
                org_id: "org-1".into(),
            },
            TriggerOptions::new().idempotency_key("k1"),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        done.output.results,
        vec!["org-1", "sync-a-done", "sync-b-done", "sync-c-done"]
    );
    assert_eq!(done.disposition, Disposition::Created);
    // The same idempotency key returns the same run without running it again.
    let again = jobs
        .trigger_and_wait(
            SyncInput {
                org_id: "other".into(),
            },
            TriggerOptions::new().idempotency_key("k1"),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.disposition),
        (done.id.as_str(), Disposition::Idempotent)
    );
    assert_eq!(app.calls("fetch-users"), 1);
    let run = jobs.get_run(&done.id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.completed_step_count, 4);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_run_reports_the_step_error_and_retrigger_runs_it_afresh_once() {
    let app = Arc::new(Steps::default());
    app.fail_once.store(true, Ordering::SeqCst);
    let db = durable_jobs_tests::TestDb::new().await;
    let engine = StepTests::builder()
        .store_arc(db.open().await)
        .app(app.clone())
        .start()
        .await
        .unwrap();
    let jobs = engine.client().step_job::<SyncUsers>();
    let err = jobs
        .trigger_and_wait(
            SyncInput { org_id: "o".into() },
            TriggerOptions::new(),
            WAIT,
        )
        .await
        .unwrap_err();
    match &err {
        Error::Execution { source, .. } => assert!(
            source.to_string().contains("crm refused user b"),
            "{source}"
        ),
        other => panic!("expected Execution, got {other:?}"),
    }
    assert_eq!(
        (
            app.calls("sync-a"),
            app.calls("sync-b"),
            app.calls("sync-c")
        ),
        (1, 1, 0)
    );
    let Error::Execution { instance, .. } = &err else {
        unreachable!()
    };
    let failed = instance.id().to_owned();
    // A retrigger is a new run of the same input: it runs each step once, from the start, and
    // leaves the failed run as it was.
    let again = jobs.retrigger(&failed).await.unwrap();
    assert_ne!(again.id, failed);
    assert_eq!(again.status, RunStatus::Pending);
    let done = jobs.wait_for_run(&again.id, Some(WAIT)).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(
        done.output.unwrap().results,
        vec!["o", "sync-a-done", "sync-b-done", "sync-c-done"]
    );
    assert_eq!(
        (
            app.calls("fetch-users"),
            app.calls("sync-a"),
            app.calls("sync-b"),
            app.calls("sync-c")
        ),
        (2, 2, 2, 1),
        "each run ran each step once"
    );
    assert_eq!(
        jobs.get_run(&failed).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_on_the_dynamic_path_is_refused_and_creates_nothing() {
    let app = Arc::new(Steps::default());
    let db = durable_jobs_tests::TestDb::new().await;
    let engine = StepTests::builder()
        .store_arc(db.open().await)
        .app(app.clone())
        .start()
        .await
        .unwrap();
    let client = engine.client();
    let Ok(durable_jobs::client::DynamicJob::Step(job)) = client.by_name("sync-users") else {
        panic!("sync-users is a step job")
    };
    let err = job
        .trigger(serde_json::json!({ "org": 1 }), TriggerOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err:?}");
    let runs = client
        .step_job::<SyncUsers>()
        .get_runs(Default::default())
        .await
        .unwrap();
    assert!(runs.is_empty());
    let (id, disposition) = job
        .trigger(serde_json::json!({ "org_id": "x" }), TriggerOptions::new())
        .await
        .unwrap();
    assert_eq!(disposition, Disposition::Created);
    let run = client
        .step_job::<SyncUsers>()
        .wait_for_run(&id, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    engine.shutdown().await.unwrap();
}

/// `crash.rs` kills a real process inside a step instead, in both of SQLite's synchronous modes
/// (with `FULL` a step's write is acknowledged only after another thread synced the log).
#[tokio::test]
async fn a_worker_killed_mid_run_resumes_after_its_last_completed_step() {
    // On an exclusive store the restarted engine expires every lease at once; on a shared one
    // the crashed worker's lease must lapse first (it could be another live process), so it is
    // short here.
    let options = StepOptions::default()
        .lease_duration(Duration::from_secs(2))
        .lease_renew_interval(Duration::from_millis(500));
    let app = Arc::new(Steps::default());
    let (tx, mut entered) = mpsc::unbounded_channel();
    *app.entered.lock().unwrap() = Some(tx);
    *app.hold.lock().unwrap() = Some("sync-b".into());
    let db = durable_jobs_tests::TestDb::new().await;

    let engine = StepTests::builder()
        .store_arc(db.open().await)
        .step_options(options.clone())
        .app(app.clone())
        .start()
        .await
        .unwrap();
    let triggered = engine
        .client()
        .step_job::<SyncUsers>()
        .trigger(
            SyncInput {
                org_id: "org-9".into(),
            },
            TriggerOptions::new(),
        )
        .await
        .unwrap();
    let run_id = triggered.run.id.clone();
    // Wait until the run is inside `sync-b`, with `fetch-users` and `sync-a` persisted.
    while tokio::time::timeout(WAIT, entered.recv())
        .await
        .unwrap()
        .unwrap()
        != "sync-b"
    {}
    // Drop the engine: no graceful stop, the step in flight never finishes.
    drop(engine);

    *app.hold.lock().unwrap() = None;
    let engine = Engine::<StepTests>::builder()
        .store_arc(db.open().await)
        .step_options(options)
        .app(app.clone())
        .start()
        .await
        .unwrap();
    let run = engine
        .client()
        .step_job::<SyncUsers>()
        .wait_for_run(&run_id, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(
        run.output.unwrap().results,
        vec!["org-9", "sync-a-done", "sync-b-done", "sync-c-done"]
    );
    assert_eq!(
        app.calls("fetch-users"),
        1,
        "completed steps are not re-executed"
    );
    assert_eq!(
        app.calls("sync-a"),
        1,
        "completed steps are not re-executed"
    );
    assert_eq!(app.calls("sync-b"), 2, "the interrupted step runs again");
    assert_eq!(app.calls("sync-c"), 1);
    engine.shutdown().await.unwrap();
}
