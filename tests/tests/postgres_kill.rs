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

use durable_jobs_tests::kill::harness::{env_number, processes_survive_random_kills, Db};

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
        let name = format!("dj_kill_{}", std::process::id());
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
    )
    .await;
}
