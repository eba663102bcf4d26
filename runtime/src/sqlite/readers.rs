//! A small pool of read-only connections to the file. WAL lets them read committed data while
//! the writer thread writes.
//!
//! Reads block, so they run on tokio's blocking pool: this module is their one crossing from
//! async to blocking code. Connections are opened on demand, at most as many as the pool allows,
//! and kept for the next read.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::lock::DatabaseFile;
use super::{database_error, open_reader, shared_database_error};
use crate::store::StoreError;

pub(super) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    max: u32,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be in use. Closed when the store closes.
    permits: Arc<Semaphore>,
    /// The file the store opened: a read of a file deleted or replaced meanwhile fails.
    file: Arc<DatabaseFile>,
}

impl Readers {
    pub(super) fn new(
        path: PathBuf,
        busy_timeout: Duration,
        max: usize,
        file: Arc<DatabaseFile>,
    ) -> Self {
        // More connections than this would only contend for the same cores.
        let max = max.clamp(1, 1024) as u32;
        Readers {
            path,
            busy_timeout,
            max,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max as usize)),
            file,
        }
    }

    /// Runs `op` on an idle connection (opening one if none is idle), waiting while every
    /// connection is in use.
    pub(super) async fn run<T, F>(self: Arc<Self>, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            self.with_connection(op)
        });
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(database_error("a store read panicked")),
            Err(_) => Err(StoreError::Closed),
        }
    }

    fn with_connection<T>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.file
            .check_recent()
            .map_err(|e| shared_database_error("reading", e))?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => match open_reader(&self.path, self.busy_timeout) {
                Ok(conn) => conn,
                // The path may have stopped naming the file since the last check trusted here
                // (its folder removed, say): then that is the error to give, not how the open
                // of the missing path failed.
                Err(open_failed) => {
                    self.file
                        .check()
                        .map_err(|e| shared_database_error("reading", e))?;
                    return Err(open_failed);
                }
            },
        };
        let result = op(&conn);
        // A read that left a transaction open would pin an old snapshot for the next one.
        if conn.is_autocommit() && !self.permits.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        result
    }

    /// Refuses new reads and drops the idle connections; reads in flight finish and drop theirs.
    pub(super) fn close(&self) {
        self.permits.close();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// As [`close`](Self::close), after the reads in flight finished.
    pub(super) async fn close_and_wait(&self) {
        // Every permit back means no read is running.
        if let Ok(all) = self.permits.acquire_many(self.max).await {
            all.forget();
        }
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Context;
    use crate::store::Backend;

    #[tokio::test]
    async fn concurrent_reads_share_a_bounded_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        let reads: Vec<_> = (0..64)
            .map(|_| {
                store.read(|conn| {
                    conn.query_row("SELECT count(*) FROM instances", [], |r| r.get::<_, i64>(0))
                        .context("count")
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap(), 0);
        }
        let readers = store.readers.as_ref().unwrap();
        let idle = readers.idle.lock().unwrap().len();
        assert!((1..=4).contains(&idle), "{idle} idle connections");
        store.close().await.unwrap();
        assert!(readers.idle.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_panicking_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir);
        let result = store.read(|_| -> Result<(), _> { panic!("boom") }).await;
        assert!(result.unwrap_err().to_string().contains("panicked"));
        assert!(store.outbox_peek(1).await.unwrap().is_empty());
    }
}
