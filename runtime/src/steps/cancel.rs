//! The cancellation token a run's steps observe.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Why a run's execution was stopped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum CancelReason {
    /// `cancel` was called for the run.
    Cancelled,
    /// The worker lost the run's lease (it expired and the run may run elsewhere); nothing this
    /// execution writes is accepted any more.
    LeaseLost,
}

impl CancelReason {
    /// `cancelled` or `lease-lost`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CancelReason::Cancelled => "cancelled",
            CancelReason::LeaseLost => "lease-lost",
        }
    }
}

/// Cooperative cancellation of one run's execution, shared by its steps.
///
/// Cancellation never pre-empts a step: a step that wants to stop early checks
/// [`is_cancelled`](Self::is_cancelled) or awaits [`cancelled`](Self::cancelled). Whatever a step
/// returns after its run was cancelled is not persisted, and the next `step.run` fails.
///
/// # Examples
///
/// ```no_run
/// # use durable_jobs::steps::Cancellation;
/// # async fn long_work() {}
/// # async fn f(token: Cancellation) {
/// tokio::select! {
///     _ = token.cancelled() => { /* stop early */ }
///     _ = long_work() => {}
/// }
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Cancellation {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    // 0: running, 1: cancelled, 2: lease lost.
    reason: AtomicU8,
    notify: Notify,
}

impl Cancellation {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether the run was cancelled or its lease lost.
    pub fn is_cancelled(&self) -> bool {
        self.inner.reason.load(Ordering::Acquire) != 0
    }

    /// Why, once it was.
    pub fn reason(&self) -> Option<CancelReason> {
        match self.inner.reason.load(Ordering::Acquire) {
            1 => Some(CancelReason::Cancelled),
            2 => Some(CancelReason::LeaseLost),
            _ => None,
        }
    }

    /// Resolves once the run is cancelled or its lease lost.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Cancels with `reason`; the first reason wins.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        let code = match reason {
            CancelReason::Cancelled => 1,
            CancelReason::LeaseLost => 2,
        };
        if self
            .inner
            .reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.inner.notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_waiters_wake() {
        let t = Cancellation::new();
        assert!(!t.is_cancelled());
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.cancelled().await }
        });
        tokio::task::yield_now().await;
        t.cancel(CancelReason::LeaseLost);
        t.cancel(CancelReason::Cancelled);
        assert!(waiter.await.is_ok());
        assert_eq!(t.reason(), Some(CancelReason::LeaseLost));
        t.cancelled().await;
    }
}
