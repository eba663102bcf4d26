//! Several processes on one PostgreSQL database, killed with real signals: the kill harness's
//! three-process test (`tests/multiprocess.rs` runs it on a shared SQLite file) on a database
//! of its own on the server at `DURABLE_JOBS_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`; `.ci/run` provides one), dropped afterwards.
//!
//! Three `kill_child` processes run the mixed load of all four job kinds, each on its own pool;
//! at random moments one is killed with `SIGKILL` and another started, and after the last kill
//! this process drains the database and checks the ledger: nothing acknowledged lost, no
//! completed step run again, and no instance or run executed by two processes at once (the
//! jobs' markers). `DURABLE_JOBS_PG_KILLS=N` sets the kills (12 by default);
//! `DURABLE_JOBS_KILL_SEED=S` replays a run. Without a server the test fails.
//!
//! The same run again with every connection to the database terminated by the server
//! (`pg_terminate_backend`) after each kill, while the other children are in the middle of
//! their work: their calls get `Storage` errors, their pools connect again, and the ledger
//! still finds nothing acknowledged lost and nothing run twice. And once more on a server of
//! the test's own (`initdb` in a temporary folder), restarted (`pg_ctl restart`) after each
//! kill.
//!
//! And a process stopped with `SIGSTOP` in the middle of an execution, past its lease, while
//! another takes the work over and completes it, then let go on with `SIGCONT`
//! (`pause_child`, jobs in `durable_jobs_tests::pause`): for a step run held inside a step, a
//! step run held after its last step, and a continuous instance's run, what the stopped process
//! writes when it goes on (the step's result, the run's completion, the instance's new state)
//! is refused by the store's fence and reported by its engine as a lost lease, and the other
//! process's work stands, counted once.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::store::BoxFuture;
use durable_jobs_tests::kill::harness::{env_number, processes_survive_random_kills, Db};
use durable_jobs_tests::multiprocess::Proc;
use durable_jobs_tests::pg_server::ThrowawayServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Tells apart the scratch databases of one test process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A database of its own on the test server, dropped when the guard is, with whatever
/// connections a killed child left.
struct ScratchDatabase {
    name: String,
    admin_url: String,
}

impl ScratchDatabase {
    async fn create() -> ScratchDatabase {
        let admin_url = std::env::var("DURABLE_JOBS_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!(
            "dj_kill_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = connect(&admin_url).await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        ScratchDatabase { name, admin_url }
    }

    /// The URL of the scratch database.
    fn url(&self) -> String {
        let (server, _database) = self
            .admin_url
            .rsplit_once('/')
            .expect("a URL with a database");
        format!("{server}/{}", self.name)
    }
}

async fn connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("no PostgreSQL server at {url}: {e}"))
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut admin = connect(&admin_url).await;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await
                })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the scratch database {}: {e}", self.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_database_survive_random_kills() {
    let database = ScratchDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Postgres {
        url: database.url(),
        schema: "durable_jobs".to_owned(),
    };
    let kills = env_number("DURABLE_JOBS_PG_KILLS").unwrap_or(12);
    processes_survive_random_kills(
        env!("CARGO_BIN_EXE_kill_child").as_ref(),
        &db,
        dir.path(),
        kills,
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_lose_nothing_acknowledged() {
    let database = ScratchDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Postgres {
        url: database.url(),
        schema: "durable_jobs".to_owned(),
    };
    let terminated = Arc::new(AtomicU64::new(0));
    let mut outage = {
        let (admin_url, name, terminated) = (
            database.admin_url.clone(),
            database.name.clone(),
            terminated.clone(),
        );
        move || -> BoxFuture<'static, ()> {
            let (admin_url, name, terminated) =
                (admin_url.clone(), name.clone(), terminated.clone());
            Box::pin(async move {
                let mut admin = connect(&admin_url).await;
                let ended: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
                )
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
                terminated.fetch_add(ended as u64, Ordering::SeqCst);
            })
        }
    };
    let kills = env_number("DURABLE_JOBS_PG_KILLS").unwrap_or(12);
    processes_survive_random_kills(
        env!("CARGO_BIN_EXE_kill_child").as_ref(),
        &db,
        dir.path(),
        kills,
        Some(&mut outage),
    )
    .await;
    let terminated = terminated.load(Ordering::SeqCst);
    println!("connections terminated: {terminated}");
    assert!(
        terminated >= kills,
        "only {terminated} connections were terminated in {kills} outages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_loses_nothing_acknowledged() {
    let server = Arc::new(
        tokio::task::spawn_blocking(ThrowawayServer::start)
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Postgres {
        url: server.url(),
        schema: "durable_jobs".to_owned(),
    };
    let restarts = Arc::new(AtomicU64::new(0));
    let mut outage = {
        let (server, restarts) = (server.clone(), restarts.clone());
        move || -> BoxFuture<'static, ()> {
            let (server, restarts) = (server.clone(), restarts.clone());
            Box::pin(async move {
                tokio::task::spawn_blocking(move || server.restart())
                    .await
                    .unwrap();
                restarts.fetch_add(1, Ordering::SeqCst);
            })
        }
    };
    let kills = env_number("DURABLE_JOBS_PG_RESTARTS").unwrap_or(6);
    processes_survive_random_kills(
        env!("CARGO_BIN_EXE_kill_child").as_ref(),
        &db,
        dir.path(),
        kills,
        Some(&mut outage),
    )
    .await;
    assert_eq!(restarts.load(Ordering::SeqCst), kills);
}

/// Starts `pause_child <db> <dir> <role>` and waits for it to be ready.
fn pause_child(db: &Db, dir: &Path, role: &str) -> Proc {
    let mut child = Proc::spawn(
        env!("CARGO_BIN_EXE_pause_child").as_ref(),
        &[db.arg().as_os_str(), dir.as_os_str(), OsStr::new(role)],
    );
    child.expect("ready");
    child
}

/// Sends `signal` to `child`.
fn signal(child: &Proc, signal: Signal) {
    let pid = i32::try_from(child.pid()).expect("a pid");
    kill(Pid::from_raw(pid), signal).unwrap_or_else(|e| panic!("{signal} to {pid}: {e}"));
}

/// Waits, polling the database, until `check` gives a value, at most [`PAUSE_PATIENCE`].
async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PAUSE_PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PAUSE_PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long the other process may take to take the work over: the lease, the poll that finds
/// it lapsed, and the work.
const PAUSE_PATIENCE: Duration = Duration::from_secs(30);

/// Stops the holder at its hold, with `SIGSTOP`: what it holds lapses while it is stopped.
fn stop_held(holder: &mut Proc, what: &str) {
    holder.tell("arm");
    holder.expect(&format!("held {what}"));
    signal(holder, Signal::SIGSTOP);
}

/// Lets the holder go on, with `SIGCONT`, its hold released.
fn resume(holder: &Proc, dir: &Path, what: &str) {
    std::fs::write(dir.join(format!("release-{what}")), b"").unwrap();
    signal(holder, Signal::SIGCONT);
}

/// A step run's status and output, and its steps as (name, status, output) in order.
async fn run_and_steps(
    conn: &mut sqlx::PgConnection,
    id: &str,
) -> (
    String,
    Option<String>,
    Vec<(String, String, Option<String>)>,
) {
    let (status, output): (String, Option<String>) =
        sqlx::query_as("SELECT status, output FROM durable_jobs.runs WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let steps = sqlx::query_as(
        r#"SELECT name, status, output FROM durable_jobs.run_steps
            WHERE run_id = $1 ORDER BY "index", started_at"#,
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    (status, output, steps)
}

/// A step run's status.
async fn run_status(conn: &mut sqlx::PgConnection, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM durable_jobs.runs WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// The state (runs and the processes that ran them) and run count of the ticker `c`.
async fn ticks(conn: &mut sqlx::PgConnection) -> (Vec<(u64, u32)>, i64) {
    let (state, run_count): (Option<String>, i64) = sqlx::query_as(
        "SELECT state, run_count FROM durable_jobs.instances
          WHERE kind = 'continuous' AND job = 'pause-tick' AND id = 'c'",
    )
    .fetch_one(conn)
    .await
    .unwrap();
    let state = state.map_or_else(Vec::new, |s| serde_json::from_str(&s).unwrap());
    (state, run_count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_process_cannot_complete_the_work_another_took_over() {
    let database = ScratchDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Postgres {
        url: database.url(),
        schema: "durable_jobs".to_owned(),
    };
    let mut conn = connect(&database.url()).await;
    let mut holder = pause_child(&db, dir.path(), "holder");
    let a = holder.pid();

    // 1. A step run held inside its second step: the held step's result is refused.
    holder.tell("trigger in-step");
    let line = holder.expect("run in-step ");
    let run = line.trim_start_matches("run in-step ").to_owned();
    holder.expect("entered in-step");
    let taker = pause_child(&db, dir.path(), "taker");
    let b = taker.pid();
    stop_held(&mut holder, "in-step");
    wait_for("the taker completes the run", async || {
        (run_status(&mut conn, &run).await == "completed").then_some(())
    })
    .await;
    resume(&holder, dir.path(), "in-step");
    assert_eq!(
        holder.expect("step-error in-step "),
        format!("step-error in-step {a} lease-lost"),
        "the holder's step was refused as a lost lease"
    );
    let (status, output, steps) = run_and_steps(&mut conn, &run).await;
    assert_eq!(status, "completed");
    assert_eq!(
        output.as_deref(),
        Some(format!("\"first {a} second {b} finished by {b}\"").as_str())
    );
    let completed = |name: &str, pid: u32| {
        (
            name.to_owned(),
            "completed".to_owned(),
            Some(pid.to_string()),
        )
    };
    assert_eq!(
        steps,
        [completed("first", a), completed("second", b)],
        "the taker's second step stands, and the holder's left nothing"
    );
    taker.kill();

    // 2. A step run held after its last step: the holder's completion is refused.
    holder.tell("trigger at-end");
    let line = holder.expect("run at-end ");
    let run = line.trim_start_matches("run at-end ").to_owned();
    holder.expect("entered at-end");
    let taker = pause_child(&db, dir.path(), "taker");
    let b = taker.pid();
    stop_held(&mut holder, "at-end");
    wait_for("the taker completes the run", async || {
        (run_status(&mut conn, &run).await == "completed").then_some(())
    })
    .await;
    resume(&holder, dir.path(), "at-end");
    holder.expect(&format!("finishing at-end {a}"));
    holder.expect(&format!("run-event worker:error {run} run-completion"));
    let (status, output, steps) = run_and_steps(&mut conn, &run).await;
    assert_eq!(status, "completed");
    assert_eq!(
        output.as_deref(),
        Some(format!("\"first {a} second {a} finished by {b}\"").as_str()),
        "the taker's completion stands"
    );
    assert_eq!(steps, [completed("first", a), completed("second", a)]);
    taker.kill();

    // 3. A continuous instance's run held: the holder's commit of it is refused.
    holder.tell("start-tick");
    holder.expect("started");
    holder.expect("entered tick");
    let taker = pause_child(&db, dir.path(), "taker");
    let b = taker.pid();
    stop_held(&mut holder, "tick");
    wait_for("the taker runs the first tick", async || {
        let (state, _) = ticks(&mut conn).await;
        state.iter().any(|&(run, _)| run == 1).then_some(())
    })
    .await;
    resume(&holder, dir.path(), "tick");
    holder.expect(&format!("tick 1 {a}"));
    let refused = holder.expect("log ERROR alarm execution failed");
    // The instance was written by the process that took it over: the holder's write, checked
    // against the version it claimed, conflicts.
    assert!(
        refused.contains("instance=continuous:pause-tick:c")
            && refused.contains("conflicting write to continuous:pause-tick:c"),
        "the refusal names the instance and the conflict: {refused}"
    );
    // The taker goes on ticking (and the holder may too, from the second run on).
    let (state, run_count) = ticks(&mut conn).await;
    let first: Vec<u32> = state
        .iter()
        .filter(|&&(run, _)| run == 1)
        .map(|&(_, pid)| pid)
        .collect();
    assert_eq!(
        first,
        [b],
        "the first run counted once, the taker's: {state:?}"
    );
    assert_eq!(
        usize::try_from(run_count).unwrap(),
        state.len(),
        "every run counted once: {state:?}"
    );

    // Nothing the holder did while it held the leases was reported as a success.
    for line in holder.drain() {
        assert!(
            !line.starts_with("run-event run:complete"),
            "the holder: {line}"
        );
        assert_ne!(
            *line,
            format!("finishing in-step {a}"),
            "the refused step went on"
        );
        assert_ne!(
            line, "job-event job.executed c 1",
            "the holder ran the first tick"
        );
    }
}
