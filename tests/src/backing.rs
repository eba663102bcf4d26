//! Where the behavioural suites keep their data, chosen per test binary: a SQLite file in a
//! temporary folder, owned exclusively (each suite's own binary) or shared (the `shared`
//! binary), or a schema of its own on a PostgreSQL server (the `postgres` binary). Every engine
//! a suite starts opens its store through a [`TestDb`], so that a binary picks the backing for
//! all of them at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use durable_jobs::postgres::{PostgresOptions, PostgresStore};
use durable_jobs::sqlite::{SqliteOptions, SqliteStore};
use durable_jobs::store::{Ownership, Store, StoreError};
use sqlx::{Connection, Row};

/// The store the suites of this test binary run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A SQLite file of the test's own, opened with this ownership.
    Sqlite(Ownership),
    /// A schema of the test's own on the PostgreSQL server at [`postgres_url`].
    Postgres,
}

/// The backing of this test binary, from its name: SQLite in shared mode in the `shared`
/// binary (cargo names it `shared-<hash>`), PostgreSQL in the `postgres` binary, SQLite owned
/// exclusively in every other. The `shared` and `postgres` binaries check what they see, so
/// the suites cannot silently run on one backing twice.
pub fn backing() -> Backing {
    static BACKING: OnceLock<Backing> = OnceLock::new();
    *BACKING.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let binary = name.split_once('-').map_or(name, |(binary, _hash)| binary);
        match binary {
            "shared" => Backing::Sqlite(Ownership::Shared),
            "postgres" => Backing::Postgres,
            _ => Backing::Sqlite(Ownership::Exclusive),
        }
    })
}

/// The ownership of this binary's stores: a PostgreSQL store is always shared.
pub fn ownership() -> Ownership {
    match backing() {
        Backing::Sqlite(ownership) => ownership,
        Backing::Postgres => Ownership::Shared,
    }
}

/// A SQLite store in the file at `path`, shared in the `shared` binary and owned exclusively
/// elsewhere: for the tests about SQLite files themselves, which no PostgreSQL binary runs.
pub fn store_options(path: impl AsRef<Path>) -> SqliteOptions {
    let ownership = match backing() {
        Backing::Sqlite(ownership) => ownership,
        Backing::Postgres => panic!("a SQLite file in a binary whose backing is PostgreSQL"),
    };
    SqliteOptions::file(path.as_ref()).ownership(ownership)
}

/// The PostgreSQL server the `postgres` binary runs on: `DURABLE_JOBS_PG_URL`, or
/// `postgres://postgres@127.0.0.1:5432/test`. Without a reachable server its tests fail.
pub fn postgres_url() -> String {
    std::env::var("DURABLE_JOBS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The data of one test, on this binary's [`backing`], removed when dropped. Each
/// [`open`](Self::open) opens another store on the same data, as an engine started again does.
pub struct TestDb {
    dir: tempfile::TempDir,
    data: Data,
}

enum Data {
    Sqlite(PathBuf),
    Postgres(Schema),
}

impl TestDb {
    /// Fresh, empty data.
    pub async fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let data = match backing() {
            Backing::Sqlite(_) => Data::Sqlite(dir.path().join("jobs.db")),
            Backing::Postgres => Data::Postgres(Schema::new()),
        };
        TestDb { dir, data }
    }

    /// A store on the data; an engine handed it closes it at shutdown.
    pub async fn open(&self) -> Arc<dyn Store> {
        match self.try_open().await {
            Ok(store) => store,
            Err(e) => match &self.data {
                Data::Postgres(_) => panic!(
                    "the postgres binary needs a PostgreSQL server at {} (set \
                     DURABLE_JOBS_PG_URL): {e}",
                    postgres_url()
                ),
                Data::Sqlite(_) => panic!("opening the test's SQLite store: {e}"),
            },
        }
    }

    /// As [`open`](Self::open), returning the store's error.
    pub async fn try_open(&self) -> Result<Arc<dyn Store>, StoreError> {
        match &self.data {
            Data::Sqlite(path) => {
                let store: Arc<dyn Store> = SqliteStore::open(store_options(path))?;
                Ok(store)
            }
            Data::Postgres(schema) => {
                let store: Arc<dyn Store> = Arc::new(PostgresStore::open(schema.options()).await?);
                Ok(store)
            }
        }
    }

    /// The SQLite file, on a SQLite backing; `None` on PostgreSQL.
    pub fn sqlite_file(&self) -> Option<&Path> {
        match &self.data {
            Data::Sqlite(path) => Some(path),
            Data::Postgres(_) => None,
        }
    }

    /// The PostgreSQL schema, on a PostgreSQL backing; `None` on SQLite.
    pub fn postgres_schema(&self) -> Option<&str> {
        match &self.data {
            Data::Sqlite(_) => None,
            Data::Postgres(schema) => Some(&schema.0),
        }
    }

    /// The temporary folder of the test (on SQLite, the data lives in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` (one statement or several) on the data, outside any store: to change what a
    /// store wrote, as an operator or a failing disk would. The tables are named as the store
    /// names them; on PostgreSQL, the schema is the search path.
    pub async fn execute(&self, sql: &str) {
        match &self.data {
            Data::Sqlite(path) => sqlite_connection(path)
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Data::Postgres(schema) => {
                let mut conn = schema.connect().await;
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                conn.close().await.unwrap();
            }
        }
    }

    /// The rows `sql` returns, read outside any store, each value as text (`None` for NULL).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match &self.data {
            Data::Sqlite(path) => {
                let conn = sqlite_connection(path);
                let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let columns = statement.column_count();
                statement
                    .query_map([], |row| {
                        (0..columns)
                            .map(|i| {
                                use rusqlite::types::ValueRef;
                                Ok(match row.get_ref(i)? {
                                    ValueRef::Null => None,
                                    ValueRef::Integer(n) => Some(n.to_string()),
                                    ValueRef::Real(x) => Some(x.to_string()),
                                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                                        Some(String::from_utf8_lossy(t).into_owned())
                                    }
                                })
                            })
                            .collect()
                    })
                    .and_then(|rows| rows.collect())
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Data::Postgres(schema) => {
                let mut conn = schema.connect().await;
                // Without parameters, sqlx sends the simple query protocol: every value comes
                // back as text, whatever its type.
                let rows = sqlx::raw_sql(sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                conn.close().await.unwrap();
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| row.try_get_unchecked::<Option<String>, _>(i).unwrap())
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The one integer `sql` returns (a count, a version).
    pub async fn int(&self, sql: &str) -> i64 {
        let rows = self.rows(sql).await;
        let [row] = rows.as_slice() else {
            panic!("{sql}: {} rows", rows.len())
        };
        let [Some(value)] = row.as_slice() else {
            panic!("{sql}: {row:?}")
        };
        value
            .parse()
            .unwrap_or_else(|e| panic!("{sql}: {value}: {e}"))
    }
}

fn sqlite_connection(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// A schema of one test on the PostgreSQL server, created by the first store that opens it,
/// dropped with everything in it when the guard is.
pub struct Schema(String);

impl Schema {
    /// A unique name; nothing is created yet.
    pub fn new() -> Schema {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Schema(format!("dj_suite_{}_{n}_{nanos}", std::process::id()))
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Options for a store in the schema: a small pool, and a failure within seconds instead
    /// of sqlx's 30 s when the server is missing.
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions::new(postgres_url())
            .schema(&self.0)
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
    }

    /// A connection of the test's own, with the schema as its search path.
    async fn connect(&self) -> sqlx::PgConnection {
        let mut conn = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
        sqlx::raw_sql(&format!("SET search_path TO \"{}\"", self.0))
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }
}

impl Default for Schema {
    fn default() -> Self {
        Schema::new()
    }
}

/// Drops a test's schema. The test is over, but an engine it dropped without shutting down
/// may still hold a connection inside a transaction whose rollback waits for a task of the
/// test's runtime, which is blocked on this very drop: the drop would wait for that
/// transaction's locks forever. So it waits a few seconds, then ends whichever sessions still
/// hold locks on the schema's tables, and drops again.
async fn drop_schema(conn: &mut sqlx::PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("SET lock_timeout = '3s'")
        .execute(&mut *conn)
        .await?;
    let drop = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
    for _ in 0..10 {
        match sqlx::raw_sql(&drop).execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            // 55P03: lock_not_available.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                sqlx::query(
                    "SELECT pg_terminate_backend(l.pid)
                       FROM pg_locks l
                       JOIN pg_class c ON c.oid = l.relation
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                )
                .bind(name)
                .execute(&mut *conn)
                .await?;
            }
            Err(e) => return Err(e),
        }
    }
    sqlx::raw_sql(&drop).execute(&mut *conn).await.map(|_| ())
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the test's runtime: the schema is dropped on a
        // thread of its own with a runtime of its own.
        let name = self.0.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut conn = sqlx::PgConnection::connect(&postgres_url()).await?;
                    drop_schema(&mut conn, &name).await?;
                    conn.close().await
                })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.0);
        }
    }
}
