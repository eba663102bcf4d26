//! Start-up and shutdown: counting work in flight, stopping background tasks, closing the store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::Inner;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::telemetry::HttpSender;

/// Counts actions and executions in flight so shutdown can wait for them.
pub(crate) struct Activity {
    closing: AtomicBool,
    count: AtomicUsize,
    idle: Notify,
}

pub(crate) struct ActivityGuard<'a>(&'a Activity);

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            closing: AtomicBool::new(false),
            count: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    pub(crate) fn enter(&self) -> Option<ActivityGuard<'_>> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.closing.load(Ordering::SeqCst) {
            self.leave();
            return None;
        }
        Some(ActivityGuard(self))
    }

    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn close_and_drain(&self, timeout: Duration) -> bool {
        self.closing.store(true, Ordering::SeqCst);
        let drained = async {
            loop {
                let idle = self.idle.notified();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, drained).await.is_ok()
    }
}

impl Drop for ActivityGuard<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// What the `Engine` handles share: the engine's state plus its background tasks.
pub(crate) struct EngineHandle<A: Send + Sync + 'static> {
    pub(crate) inner: Arc<Inner<A>>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The store, to close it from `Drop`.
    pub(crate) store: Arc<dyn Store>,
    pub(crate) http: Mutex<Option<HttpSender>>,
    pub(crate) shutdown_timeout: Duration,
    stopped: AtomicBool,
    // Keeps the test clock's handle on the scheduler alive as long as the engine.
    _clock_driver: Option<Arc<dyn crate::clock::ClockDriven>>,
}

impl<A: Send + Sync + 'static> EngineHandle<A> {
    pub(crate) fn new(
        inner: Arc<Inner<A>>,
        tasks: Vec<JoinHandle<()>>,
        store: Arc<dyn Store>,
        http: Option<HttpSender>,
        shutdown_timeout: Duration,
        clock_driver: Option<Arc<dyn crate::clock::ClockDriven>>,
    ) -> Self {
        EngineHandle {
            inner,
            tasks: Mutex::new(tasks),
            store,
            http: Mutex::new(http),
            shutdown_timeout,
            stopped: AtomicBool::new(false),
            _clock_driver: clock_driver,
        }
    }

    pub(crate) async fn shutdown(&self) -> Result<()> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let timeout = self.shutdown_timeout;
        let inner = &self.inner;
        inner.scheduler.stop();
        inner.steps.shutdown(timeout).await;
        if !inner.activity.close_and_drain(timeout).await {
            tracing::warn!(
                ?timeout,
                "shutdown timed out with executions still running; they resume after a restart"
            );
        }
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        let http = self.http.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(http) = http {
            http.shutdown(timeout).await;
        }
        inner
            .store
            .close()
            .await
            .map_err(|e| Error::storage("close", e))
    }
}

impl<A: Send + Sync + 'static> Drop for EngineHandle<A> {
    fn drop(&mut self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Dropped without a shutdown: stop at once, like a crash, but release the file.
        self.inner.scheduler.stop();
        self.inner.activity.closing.store(true, Ordering::SeqCst);
        self.inner.steps.abort();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.store.close_blocking();
    }
}
