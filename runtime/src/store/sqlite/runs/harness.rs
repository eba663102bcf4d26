//! A stand-in for `SqliteStore` in tests: one writer thread with group commit (each op in its own
//! savepoint inside a shared transaction, replies after commit) and read connections, on a file
//! in WAL mode.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{SqlExecutor, RUNS_SCHEMA};
use crate::store::StoreError;

type Reply = Box<dyn FnOnce(Option<String>) + Send>;
type Op = Box<dyn FnOnce(&Connection) -> Reply + Send>;

pub(crate) struct TestDb {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Database(Box::new(e)))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
        .map_err(|e| StoreError::Database(Box::new(e)))?;
    Ok(conn)
}

impl TestDb {
    pub(crate) fn open(path: &Path) -> Result<std::sync::Arc<Self>, StoreError> {
        let conn = open(path)?;
        conn.execute_batch(RUNS_SCHEMA).map_err(|e| StoreError::Database(Box::new(e)))?;
        let (tx, rx) = mpsc::channel::<Op>();
        let thread = std::thread::spawn(move || writer(conn, rx));
        Ok(std::sync::Arc::new(TestDb {
            path: path.to_owned(),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            readers: Mutex::new(Vec::new()),
        }))
    }

    /// Finishes queued writes and stops the writer.
    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// Runs raw SQL on a fresh connection (test set-up and inspection).
    pub(crate) fn exec(&self, sql: &str) {
        let conn = open(&self.path).expect("open");
        conn.execute_batch(sql).expect("exec");
    }

    pub(crate) fn query_i64(&self, sql: &str) -> i64 {
        let conn = open(&self.path).expect("open");
        conn.query_row(sql, [], |r| r.get(0)).expect("query")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer(conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut replies = Vec::new();
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = began {
            let msg = e.to_string();
            first(&conn)(Some(msg));
            continue;
        }
        replies.push(first(&conn));
        while replies.len() < 512 {
            match rx.try_recv() {
                Ok(op) => replies.push(op(&conn)),
                Err(_) => break,
            }
        }
        let commit = conn.execute_batch("COMMIT").err().map(|e| e.to_string());
        if commit.is_some() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}

impl SqlExecutor for TestDb {
    fn write<T, F>(&self, op: F) -> impl std::future::Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Op = Box::new(move |conn: &Connection| -> Reply {
            let result = match conn.execute_batch("SAVEPOINT op") {
                Err(e) => Err(StoreError::Database(Box::new(e))),
                Ok(()) => {
                    let r = op(conn);
                    let end = if r.is_ok() { "RELEASE op" } else { "ROLLBACK TO op; RELEASE op" };
                    match conn.execute_batch(end) {
                        Ok(()) => r,
                        Err(e) => Err(StoreError::Database(Box::new(e))),
                    }
                }
            };
            Box::new(move |commit_error: Option<String>| {
                let _ = tx.send(match commit_error {
                    Some(msg) => Err(StoreError::Database(msg.into())),
                    None => result,
                });
            })
        });
        let sent = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|s| s.send(job).is_ok());
        async move {
            if sent != Some(true) {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    fn read<T, F>(&self, op: F) -> impl std::future::Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let path = self.path.clone();
        let (tx, rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => match open(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send((Err(e), None));
                        return;
                    }
                },
            };
            let r = op(&conn);
            let _ = tx.send((r, Some(conn)));
        });
        let readers = &self.readers;
        async move {
            let (r, conn) = rx.await.map_err(|_| StoreError::Closed)?;
            if let Some(c) = conn {
                readers.lock().unwrap_or_else(|e| e.into_inner()).push(c);
            }
            r
        }
    }
}
