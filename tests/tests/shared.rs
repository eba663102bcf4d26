//! The behavioural suites again, on SQLite stores opened in shared mode
//! ([`SqliteOptions::shared`](durable_jobs::sqlite::SqliteOptions::shared)): each takes a
//! shared lock on its file, as several processes do, and answers [`Ownership::Shared`]. Every
//! alarm execution claims its row with a durable lease that is renewed while it runs, client
//! actions that run user code claim it too, nothing is cached, nothing is released at start, and
//! the engine also polls for other processes' writes. Each suite's own binary runs it on an
//! exclusive store (the default); `durable_jobs_tests::ownership` tells the two apart. Left out:
//! the suites about the file, the process and the disk themselves (crash, kill, power cut,
//! storage faults), which expect the exclusive recovery at start, and the system-clock one.
//! Several processes on one shared file are `tests/multiprocess.rs`; `history` opens stores
//! of both kinds itself.

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
    // Shared in earnest: the file takes a second shared store beside this one (another
    // process's, as far as the lock can tell), and refuses an exclusive one.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let store =
        durable_jobs::sqlite::SqliteStore::open(durable_jobs_tests::store_options(&db)).unwrap();
    assert_eq!(
        durable_jobs::store::Store::ownership(&*store),
        Ownership::Shared
    );
    let other = std::fs::File::open(&db).unwrap();
    other
        .try_lock_shared()
        .expect("a shared lock beside the store's");
    assert!(
        other.try_lock().is_err(),
        "an exclusive lock beside the store's"
    );
    // Closed first: closing a descriptor of the file would drop the POSIX locks of the
    // store's SQLite connections.
    store.close_blocking();
    drop(other);
}

/// Two engines on one shared store, as two processes would be: the instance lock of one does
/// not reach the other, the durable claim does.
mod two_engines {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use durable_jobs::prelude::*;
    use durable_jobs::sqlite::SqliteStore;
    use durable_jobs::store::Store;
    use durable_jobs::Engine;
    use tokio::sync::{Notify, Semaphore};

    /// Bounds each wait; a regression fails instead of hanging.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Runs log when they begin and end, and wait in between for a permit.
    pub struct Gate {
        log: Mutex<Vec<String>>,
        logged: Notify,
        open: Semaphore,
    }

    impl Default for Gate {
        fn default() -> Self {
            Gate {
                log: Mutex::default(),
                logged: Notify::new(),
                open: Semaphore::new(0),
            }
        }
    }

    impl Gate {
        fn log(&self, line: String) {
            self.log.lock().unwrap().push(line);
            self.logged.notify_waiters();
        }

        async fn until(&self, line: &str) {
            tokio::time::timeout(PATIENCE, async {
                loop {
                    let logged = self.logged.notified();
                    if self.log.lock().unwrap().iter().any(|l| l == line) {
                        return;
                    }
                    logged.await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{line:?} never logged: {:?}", self.log.lock().unwrap()));
        }
    }

    #[durable_jobs::continuous(every = "1h")]
    pub async fn held(
        ctx: &mut ContinuousContext<u64>,
        gate: &Arc<Gate>,
    ) -> Result<(), std::convert::Infallible> {
        let run = ctx.run_count();
        gate.log(format!("run {run} begins"));
        gate.open.acquire().await.expect("the gate opens").forget();
        gate.log(format!("run {run} ends"));
        ctx.update_state(|runs| *runs += 1);
        Ok(())
    }

    durable_jobs::registry! {
        /// One job that waits at the gate.
        pub HeldJobs<Arc<Gate>> { Held }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trigger_in_one_engine_waits_for_the_run_another_engine_is_making() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = SqliteStore::open(durable_jobs_tests::store_options(
            dir.path().join("jobs.db"),
        ))
        .unwrap();
        let gate = Arc::new(Gate::default());
        let engine = |gate: Arc<Gate>| {
            Engine::<HeldJobs>::builder()
                .store_arc(store.clone())
                .app(gate)
                .start()
        };
        let a = engine(gate.clone()).await.unwrap();
        let b = engine(gate.clone()).await.unwrap();
        // The first run is made by `start` in engine A, and waits at the gate.
        let start = tokio::spawn({
            let client = a.client();
            async move { client.continuous::<Held>().start("x", 0).await }
        });
        gate.until("run 1 begins").await;
        // Engine B's trigger finds the instance claimed by A and waits for A's run to end.
        let trigger = tokio::spawn({
            let client = b.client();
            async move { client.continuous::<Held>().trigger("x").await }
        });
        gate.open.add_permits(1);
        assert!(start.await.unwrap().unwrap().created);
        gate.until("run 2 begins").await;
        gate.open.add_permits(1);
        tokio::time::timeout(PATIENCE, trigger)
            .await
            .expect("the trigger ends")
            .unwrap()
            .unwrap();
        assert_eq!(
            *gate.log.lock().unwrap(),
            ["run 1 begins", "run 1 ends", "run 2 begins", "run 2 ends"]
        );
        assert_eq!(
            a.client()
                .continuous::<Held>()
                .get_state("x")
                .await
                .unwrap(),
            Some(2),
            "both runs are in the state"
        );
        b.shutdown().await.unwrap();
        a.shutdown().await.unwrap();
    }
}
