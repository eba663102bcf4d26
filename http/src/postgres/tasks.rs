//! A node's three tasks: appending its engine's events, tailing the table, and the heartbeat
//! that also prunes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use durable_jobs::EventStream;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;
use tokio::time::Instant;

use super::tables::APPEND_MOST;
use super::{FeedError, Inner, ResultExt, FORGET};
use crate::sse::feed::WireEvent;

/// The longest pause between two attempts of a failing append.
const RETRY_MOST: Duration = Duration::from_secs(5);
/// Events held while appends fail; beyond it the oldest are dropped.
const HELD_MOST: usize = 50_000;

pub(super) async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener, FeedError> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .context("opening the feed's listening connection")?;
    listener
        .listen(channel)
        .await
        .context("listening for the feed's appends")?;
    Ok(listener)
}

/// The wire form to store: source and JSON text.
fn encode(event: &durable_jobs::Event) -> Option<(&'static str, String)> {
    let wire = WireEvent::from_event(event)?;
    Some((wire.source().as_str(), wire.json().to_string()))
}

/// Appends the engine's events, gathered for `append_every` at a time, until the engine is
/// gone or the feed stops (then what was gathered is appended first).
pub(super) async fn append(
    inner: Arc<Inner>,
    mut events: EventStream,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch: Vec<(&'static str, String)> = Vec::new();
    let mut pause = inner.options.append_every;
    loop {
        let mut ended = false;
        if batch.is_empty() {
            tokio::select! {
                event = events.next() => match event {
                    Some(event) => batch.extend(encode(&event)),
                    None => {
                        ended = true;
                        inner.engine_gone.store(true, Ordering::Release);
                    }
                },
                _ = stop.wait_for(|stop| *stop) => ended = true,
            }
        }
        // Gathers for one period (no longer than that after the first event).
        let until = Instant::now() + inner.options.append_every;
        while !ended && batch.len() < APPEND_MOST {
            tokio::select! {
                event = events.next() => match event {
                    Some(event) => batch.extend(encode(&event)),
                    None => {
                        ended = true;
                        inner.engine_gone.store(true, Ordering::Release);
                    }
                },
                _ = tokio::time::sleep_until(until) => break,
                _ = stop.wait_for(|stop| *stop) => ended = true,
            }
        }
        if ended {
            batch.extend(events.drain().iter().filter_map(encode));
        }
        while !batch.is_empty() {
            let take = batch.len().min(APPEND_MOST);
            match inner
                .tables
                .append(&inner.pool, &inner.node.id, &batch[..take])
                .await
            {
                Ok(()) => {
                    batch.drain(..take);
                    pause = inner.options.append_every;
                }
                Err(e) if !ended => {
                    tracing::warn!(error = %e, held = batch.len(), "appending to the shared event feed failed; trying again");
                    if batch.len() > HELD_MOST {
                        let dropped = batch.len() - HELD_MOST;
                        batch.drain(..dropped);
                        tracing::warn!(
                            dropped,
                            "the shared event feed dropped its oldest unappended events"
                        );
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MOST);
                    // Gather what came meanwhile into the next attempt.
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, lost = batch.len(), "the shared event feed could not append its last events");
                    return;
                }
            }
        }
        if ended && batch.is_empty() {
            return;
        }
    }
}

/// Reads the table's new rows whenever a node announces an append, and every `poll_every`.
pub(super) async fn tail(inner: Arc<Inner>, mut listener: PgListener) {
    let mut poll = tokio::time::interval(inner.options.poll_every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        read_new(&inner).await;
        tokio::select! {
            heard = listener.try_recv() => match heard {
                // A notification, or the connection was made again (and some may be lost):
                // either way, read.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "listening for the shared event feed failed; polling until it listens again");
                    poll.tick().await;
                }
            },
            _ = poll.tick() => {}
        }
    }
}

async fn read_new(inner: &Inner) {
    loop {
        let last = i64::try_from(inner.ring().last).unwrap_or(i64::MAX);
        match inner.tables.read_after(&inner.pool, last).await {
            Ok(rows) => {
                let full = rows.len() as i64 == super::tables::READ_MOST;
                // Rolled-back appends leave gaps too; a prune that passed this node by (it
                // could not read for longer than the retention) is told apart by the watermark.
                if rows.first().is_some_and(|(seq, _, _)| *seq > last + 1) {
                    match inner.tables.pruned_through(&inner.pool).await {
                        Ok(pruned) if pruned > last => inner.pruned_past(pruned),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the shared event feed failed")
                        }
                    }
                }
                inner.push(rows);
                if !full {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the shared event feed failed");
                return;
            }
        }
    }
}

/// Records every `heartbeat` that the node is alive, and prunes the table.
pub(super) async fn heartbeat(inner: Arc<Inner>) {
    let mut beat = tokio::time::interval(inner.options.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first beat was made when the node joined.
    beat.tick().await;
    loop {
        beat.tick().await;
        if inner.engine_gone.load(Ordering::Acquire) {
            // The engine shut down: the node holds nothing and produces nothing any more.
            if let Err(e) = inner.tables.leave(&inner.pool, &inner.node.id).await {
                tracing::warn!(error = %e, "could not remove the node's row; it lapses");
            }
            return;
        }
        if let Err(e) = inner
            .tables
            .heartbeat(&inner.pool, &inner.node, FORGET)
            .await
        {
            tracing::warn!(error = %e, "the shared event feed's heartbeat failed");
        }
        match inner
            .tables
            .prune(&inner.pool, inner.options.keep, inner.options.retention)
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "pruned the shared event feed"),
            Err(e) => tracing::warn!(error = %e, "pruning the shared event feed failed"),
        }
    }
}
