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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use durable_jobs::store::BoxFuture;
use durable_jobs_tests::kill::harness::{env_number, processes_survive_random_kills, Db};
use durable_jobs_tests::pg_server::ThrowawayServer;

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
