//! How a store tells the engines on it that other processes wrote something they may have to
//! act on, so that they need not poll for it.
//!
//! A store that hears of other processes' writes (PostgreSQL through `LISTEN`, for example)
//! keeps a [`ChangeSender`] and hands engines the matching [`ChangeFeed`] from
//! [`Store::changes`](super::Store::changes). A change only says "look again": the engine
//! reads the store to learn what changed, so a change sent twice, or for a write this engine
//! made itself, costs one read and nothing else. Changes are never needed for correctness:
//! the engine still looks every [`Store::poll_interval`](super::Store::poll_interval), which a
//! store with a feed sets longer, and a lease that lapses (a process that died) sends nothing.

use std::time::Duration;

use tokio::sync::watch;

/// What another process wrote that an engine may have to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Change {
    /// An instance's alarm was written: set earlier, released, or created with the instance.
    Alarms,
    /// A step run may have become claimable: enqueued, released, or set to retry.
    Runs,
    /// A step run ended: completed, failed or cancelled.
    RunEnded,
}

/// A feed of [`Change`]s: the sending side, kept by the store. Sending never blocks and never
/// fails; changes sent while nobody waits coalesce into one.
#[derive(Debug)]
pub struct ChangeSender {
    alarms: watch::Sender<u64>,
    runs: watch::Sender<u64>,
    ended: watch::Sender<u64>,
}

impl ChangeSender {
    /// Tells every engine on the feed to look again for `change`.
    pub fn send(&self, change: Change) {
        let sender = match change {
            Change::Alarms => &self.alarms,
            Change::Runs => &self.runs,
            Change::RunEnded => &self.ended,
        };
        sender.send_modify(|count| *count = count.wrapping_add(1));
    }
}

/// A feed of [`Change`]s: the receiving side, handed to engines by
/// [`Store::changes`](super::Store::changes). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChangeFeed {
    alarms: watch::Receiver<u64>,
    runs: watch::Receiver<u64>,
    ended: watch::Receiver<u64>,
}

impl ChangeFeed {
    /// A new feed: the sender for the store, the feed for its engines.
    pub fn channel() -> (ChangeSender, ChangeFeed) {
        let (alarms, alarms_rx) = watch::channel(0);
        let (runs, runs_rx) = watch::channel(0);
        let (ended, ended_rx) = watch::channel(0);
        (
            ChangeSender {
                alarms,
                runs,
                ended,
            },
            ChangeFeed {
                alarms: alarms_rx,
                runs: runs_rx,
                ended: ended_rx,
            },
        )
    }

    /// A subscription to `change` that sees what is sent from now on.
    pub fn subscribe(&self, change: Change) -> Subscription {
        let mut receiver = match change {
            Change::Alarms => self.alarms.clone(),
            Change::Runs => self.runs.clone(),
            Change::RunEnded => self.ended.clone(),
        };
        receiver.mark_unchanged();
        Subscription(receiver)
    }
}

/// One waiter's view of a [`ChangeFeed`], made by [`ChangeFeed::subscribe`].
#[derive(Debug)]
pub struct Subscription(watch::Receiver<u64>);

impl Subscription {
    /// Returns once a change was sent since the subscription was made or last returned.
    /// Never returns once the sender is gone.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How an engine learns of what other processes wrote to its store: by looking again every
/// `poll` (none for a store nobody else writes) and, when the store has a feed, as soon as a
/// change arrives. Made once, at start, from [`Store::poll_interval`](super::Store::poll_interval)
/// and [`Store::changes`](super::Store::changes).
#[derive(Clone, Debug, Default)]
pub(crate) struct OtherWriters {
    poll: Option<Duration>,
    feed: Option<ChangeFeed>,
}

impl OtherWriters {
    pub(crate) fn new(poll: Option<Duration>, feed: Option<ChangeFeed>) -> Self {
        OtherWriters { poll, feed }
    }

    /// How often to look at most, for waits that pace themselves: the poll interval, or
    /// [`DEFAULT_POLL_INTERVAL`](super::DEFAULT_POLL_INTERVAL) for a store nobody else writes.
    pub(crate) fn pace(&self) -> Duration {
        self.poll.unwrap_or(super::DEFAULT_POLL_INTERVAL)
    }

    /// A waiter for `change`: made before reading what it guards, so that nothing written
    /// between the read and the wait is missed.
    pub(crate) fn watch(&self, change: Change) -> Watcher {
        Watcher {
            poll: self.poll,
            subscription: self.feed.as_ref().map(|feed| feed.subscribe(change)),
        }
    }
}

/// Waits for the next time to look again for one kind of change: see [`OtherWriters::watch`].
#[derive(Debug)]
pub(crate) struct Watcher {
    poll: Option<Duration>,
    subscription: Option<Subscription>,
}

impl Watcher {
    /// Returns when another process may have written: a change arrived, or the poll interval
    /// passed. Never returns on a store nobody else writes.
    pub(crate) async fn next(&mut self) {
        let tick = async {
            match self.poll {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        match &mut self.subscription {
            Some(subscription) => {
                tokio::select! {
                    () = subscription.changed() => {}
                    () = tick => {}
                }
            }
            None => tick.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscription_sees_changes_sent_after_it_was_made_and_only_of_its_kind() {
        let (sender, feed) = ChangeFeed::channel();
        sender.send(Change::Runs);
        let mut runs = feed.subscribe(Change::Runs);
        let mut ended = feed.subscribe(Change::RunEnded);
        let waits = |subscription: &mut Subscription| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let changed = std::pin::pin!(subscription.changed());
            changed.poll(&mut cx).is_ready()
        };
        use std::future::Future;
        assert!(!waits(&mut runs), "a change sent before subscribing");
        sender.send(Change::Runs);
        sender.send(Change::Runs);
        assert!(waits(&mut runs), "two changes coalesce into one");
        assert!(!waits(&mut runs));
        assert!(!waits(&mut ended), "another kind");
        sender.send(Change::RunEnded);
        assert!(waits(&mut ended));
        drop(sender);
        assert!(!waits(&mut ended), "a gone sender never wakes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_wakes_on_a_change_before_its_poll_interval() {
        let (sender, feed) = ChangeFeed::channel();
        let writers = OtherWriters::new(Some(Duration::from_secs(3600)), Some(feed));
        let mut watcher = writers.watch(Change::Alarms);
        let start = tokio::time::Instant::now();
        let waiting = tokio::spawn(async move { watcher.next().await });
        tokio::task::yield_now().await;
        sender.send(Change::Alarms);
        waiting.await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(3600));
        // Without a feed, only the poll interval wakes it.
        let mut polling =
            OtherWriters::new(Some(Duration::from_secs(5)), None).watch(Change::Alarms);
        let start = tokio::time::Instant::now();
        polling.next().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
