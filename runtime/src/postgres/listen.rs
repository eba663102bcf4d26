//! Hearing what other processes wrote: `LISTEN` on the schema's channel, over a connection of
//! the store's own (never one of the pool, which a transaction-mode pooler may hand to another
//! client between statements), turned into [`Change`]s for the engines on the store.
//!
//! Whether notifications arrive is checked, not assumed: behind a transaction-mode pooler
//! (PgBouncer's `pool_mode = transaction`) `LISTEN` succeeds and then hears nothing, because
//! the server connection it ran on goes to other clients. So the store sends a probe (a
//! notification with a payload of its own) through its pool at start and waits for it to come
//! back; the probe is sent again every [`HEARTBEAT`] while it listens, and a connection that
//! no longer hears it (a network path that died without closing) is replaced.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::announce;
use crate::store::{Change, ChangeSender};

/// How long the probe sent at start may take to come back before the store gives up listening.
pub(crate) const PROBE_PATIENCE: Duration = Duration::from_secs(1);

/// How often a listening store checks that its connection still hears notifications.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The longest pause between two attempts to connect the listener again.
const RECONNECT_MOST: Duration = Duration::from_secs(10);

/// Why a store does not listen.
#[derive(Debug)]
pub(crate) enum Unheard {
    /// The listener could not connect or `LISTEN`, or the probe could not be sent.
    Failed(sqlx::Error),
    /// The probe did not come back within [`PROBE_PATIENCE`].
    Silent,
}

impl std::fmt::Display for Unheard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unheard::Failed(e) => write!(f, "{e}"),
            Unheard::Silent => write!(
                f,
                "a notification sent through the pool did not arrive within {PROBE_PATIENCE:?} \
                 (a transaction-mode pooler between the store and the server?)"
            ),
        }
    }
}

/// A connection listening on `channel`, made with `connect`, that hears a probe sent through
/// `pool`.
pub(crate) async fn start(
    connect: &PgConnectOptions,
    pool: &PgPool,
    channel: &str,
) -> Result<PgListener, Unheard> {
    let mut listener = connect_listener(connect, channel)
        .await
        .map_err(Unheard::Failed)?;
    let token = send_probe(pool, channel).await.map_err(Unheard::Failed)?;
    let heard: Result<Result<bool, sqlx::Error>, _> = tokio::time::timeout(PROBE_PATIENCE, async {
        loop {
            match listener.try_recv().await? {
                Some(notification) if notification.payload() == token => return Ok(true),
                // Another process's change or probe: nobody to wake yet.
                Some(_) => {}
                // The connection was lost: what was sent before is gone with it.
                None => return Ok(false),
            }
        }
    })
    .await;
    match heard {
        Ok(Ok(true)) => Ok(listener),
        Ok(Ok(false)) | Err(_) => Err(Unheard::Silent),
        Ok(Err(e)) => Err(Unheard::Failed(e)),
    }
}

/// A listener on `channel` over a connection of its own: a pool of one connection, which
/// sqlx's listener reconnects through when the connection is lost.
async fn connect_listener(
    connect: &PgConnectOptions,
    channel: &str,
) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(RECONNECT_MOST)
        .connect_lazy_with(connect.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Sends a probe on `channel` through `pool`: a payload no change has, unique to this call,
/// returned.
async fn send_probe(pool: &PgPool, channel: &str) -> Result<String, sqlx::Error> {
    let token = format!("probe {}", ulid::Ulid::new());
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(&token)
        .execute(pool)
        .await?;
    Ok(token)
}

/// What the listening task needs.
pub(crate) struct Listening {
    /// The listener [`start`] returned.
    pub(crate) listener: PgListener,
    /// How to connect it again.
    pub(crate) connect: PgConnectOptions,
    /// The store's pool, for heartbeats.
    pub(crate) pool: PgPool,
    pub(crate) channel: String,
    /// Where the changes heard go.
    pub(crate) sender: ChangeSender,
}

/// The listening task of a store: forwards every change heard to the engines, until aborted.
/// After the connection was lost, and once it listens again, it sends every kind of change,
/// since notifications sent meanwhile were missed.
pub(crate) async fn run(mut listening: Listening) {
    let start = tokio::time::Instant::now() + HEARTBEAT;
    let mut heartbeat = tokio::time::interval_at(start, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The heartbeat sent and not heard yet.
    let mut unanswered: Option<String> = None;
    loop {
        tokio::select! {
            received = listening.listener.try_recv() => match received {
                Ok(Some(notification)) => {
                    let payload = notification.payload();
                    if unanswered.as_deref() == Some(payload) {
                        unanswered = None;
                    } else if let Some(change) = announce::parse(payload) {
                        listening.sender.send(change);
                    }
                }
                Ok(None) => {
                    // sqlx connected again and listens again.
                    tracing::info!(channel = listening.channel, "the connection listening for other processes' writes was lost and made again");
                    unanswered = None;
                    listening.missed_some();
                }
                Err(e) => {
                    tracing::warn!(error = %e, channel = listening.channel, "listening for other processes' writes failed; connecting again");
                    listening.reconnect().await;
                    unanswered = None;
                }
            },
            _ = heartbeat.tick() => {
                if unanswered.is_some() {
                    tracing::warn!(channel = listening.channel, "the connection listening for other processes' writes no longer hears them; connecting again");
                    listening.reconnect().await;
                }
                unanswered = send_probe(&listening.pool, &listening.channel).await.ok();
            }
        }
    }
}

impl Listening {
    /// Replaces the listener by a new one, trying again with a growing pause until it listens.
    async fn reconnect(&mut self) {
        let mut pause = Duration::from_millis(100);
        loop {
            match connect_listener(&self.connect, &self.channel).await {
                Ok(listener) => {
                    self.listener = listener;
                    self.missed_some();
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?pause, "could not listen again yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECONNECT_MOST);
                }
            }
        }
    }

    /// Wakes the engines for every kind of change: some may have been announced while nobody
    /// listened.
    fn missed_some(&self) {
        for change in [Change::Alarms, Change::Runs, Change::RunEnded] {
            self.sender.send(change);
        }
    }
}
