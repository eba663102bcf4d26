//! Waking the engines of every process on the database when one of them writes: each store
//! announces its writes on the schema's channel ([`announce`]) and, when `LISTEN` works on its
//! connection, hears the others' ([`listen`]) and hands them to its engines as a
//! [`ChangeFeed`].

use std::sync::{Arc, Mutex};

use sqlx::postgres::PgPool;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::announce::{self, Announcer};
use super::listen::{self, Listening};
use crate::store::{Change, ChangeFeed};

/// A store's two tasks: the one that announces its writes, and the one that listens, if any.
#[derive(Debug)]
pub(crate) struct Wakeups {
    announcer: Arc<Announcer>,
    /// The changes heard, for the engines; `None` when the store does not listen.
    feed: Option<ChangeFeed>,
    /// Tells the announcing task to send what is pending and end.
    stop: watch::Sender<bool>,
    announcing: Mutex<Option<JoinHandle<()>>>,
    listening: Option<AbortHandle>,
}

impl Wakeups {
    /// Starts announcing on `channel` through `pool` and, when `listen` says so and a probe
    /// shows that notifications arrive, listening on a connection of its own.
    pub(crate) async fn start(pool: &PgPool, channel: &str, listen: bool) -> Wakeups {
        let announcer = Arc::new(Announcer::default());
        let (stop, stopped) = watch::channel(false);
        let announcing = tokio::spawn(announce::run(
            announcer.clone(),
            pool.clone(),
            channel.to_owned(),
            stopped,
        ));
        let (feed, listening) = if listen {
            Self::listen(pool, channel).await
        } else {
            (None, None)
        };
        Wakeups {
            announcer,
            feed,
            stop,
            announcing: Mutex::new(Some(announcing)),
            listening,
        }
    }

    async fn listen(pool: &PgPool, channel: &str) -> (Option<ChangeFeed>, Option<AbortHandle>) {
        let connect = (*pool.connect_options()).clone();
        match listen::start(&connect, pool, channel).await {
            Ok(listener) => {
                let (sender, feed) = ChangeFeed::channel();
                let task = tokio::spawn(listen::run(Listening {
                    listener,
                    connect,
                    pool: pool.clone(),
                    channel: channel.to_owned(),
                    sender,
                }));
                (Some(feed), Some(task.abort_handle()))
            }
            Err(why) => {
                tracing::warn!(
                    channel,
                    reason = %why,
                    "cannot hear other processes' writes through LISTEN; engines on this store \
                     find them by polling (PostgresOptions::poll_interval)"
                );
                (None, None)
            }
        }
    }

    /// Announces `change`, written and committed, to every process listening.
    pub(crate) fn announce(&self, change: Change) {
        self.announcer.announce(change);
    }

    /// What the engines on the store hear; `None` when it does not listen.
    pub(crate) fn feed(&self) -> Option<ChangeFeed> {
        self.feed.clone()
    }

    /// Stops listening, and stops announcing once what is pending was sent.
    pub(crate) async fn stop(&self) {
        self.stop_now();
        let announcing = self
            .announcing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = announcing {
            // Ends unless it panicked; either way it is over.
            let _ = task.await;
        }
    }

    /// Stops listening, and tells the announcing task to send what is pending and end,
    /// without waiting for it.
    pub(crate) fn stop_now(&self) {
        if let Some(listening) = &self.listening {
            listening.abort();
        }
        self.stop.send_replace(true);
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        // The announcing task ends by itself once the stop sender is gone.
        if let Some(listening) = &self.listening {
            listening.abort();
        }
    }
}
