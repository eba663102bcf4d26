//! Server-Sent Events: `@coji/durably`'s framing (`data: <json>\n\n`, its three headers) plus
//! an `id:` line on every event, so `EventSource` resumes with `Last-Event-ID` after a
//! reconnect, and a `: ping` comment on idle streams, which `EventSource` ignores and proxies
//! take as traffic.
//!
//! Each stream is a task that reads the [feed](feed), maps the events it wants to frames,
//! throttles `run:progress` per run ([throttle]) and writes to the response body. It ends when
//! the client goes, when the API closes its streams (shutdown), when a one-run stream has sent
//! its terminal event, or when it fell so far behind the feed that it lost events: the client
//! then reconnects and resumes from its last id.

pub mod feed;
pub(crate) mod throttle;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use self::feed::{FeedEvent, FeedSubscription, Position};
use self::throttle::{Frame, Throttle};

/// One SSE event: `id:` then `data:`.
pub(crate) fn render(id: &Position, data: &Value) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: {data}\n\n"))
}

/// A frame for a run event: throttled when it is a progress, flushing when it is terminal.
pub(crate) fn run_frame(id: &Position, data: &Value, run_id: &str, kind: &str) -> Frame {
    Frame {
        bytes: render(id, data),
        run_id: Some(run_id.to_owned()),
        progress: kind == "run:progress",
        terminal: matches!(
            kind,
            "run:complete" | "run:fail" | "run:cancel" | "run:delete"
        ),
    }
}

/// A frame that is never throttled.
pub(crate) fn plain_frame(id: &Position, data: &Value) -> Frame {
    Frame {
        bytes: render(id, data),
        run_id: None,
        progress: false,
        terminal: false,
    }
}

/// How a stream behaves.
pub(crate) struct StreamOptions {
    pub(crate) throttle: Duration,
    pub(crate) keep_alive: Duration,
    /// End after a terminal frame (one run's stream).
    pub(crate) close_after_terminal: bool,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Starts a stream: `first` frames (a snapshot or a replay), then the feed's live events as
/// `map` turns them into frames.
pub(crate) fn stream<M>(
    first: Vec<Frame>,
    sub: FeedSubscription,
    map: M,
    options: StreamOptions,
) -> Response
where
    M: FnMut(&FeedEvent) -> Option<Frame> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(drive(first, sub, map, options, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    *response.status_mut() = StatusCode::OK;
    response
}

async fn drive<M>(
    first: Vec<Frame>,
    sub: FeedSubscription,
    mut map: M,
    mut options: StreamOptions,
    tx: mpsc::Sender<Bytes>,
) where
    M: FnMut(&FeedEvent) -> Option<Frame> + Send,
{
    let FeedSubscription {
        mut live,
        watch,
        head,
        ..
    } = sub;
    let _watch = watch;
    let mut throttle = Throttle::new(options.throttle);
    let mut ping = tokio::time::interval_at(
        Instant::now() + options.keep_alive,
        options.keep_alive.max(Duration::from_millis(10)),
    );
    // Sends frames; `false` once the stream is over (client gone, or the run ended).
    let send = |frames: Vec<Frame>, tx: &mpsc::Sender<Bytes>| {
        let tx = tx.clone();
        let close = options.close_after_terminal;
        async move {
            for f in frames {
                let terminal = f.terminal;
                if tx.send(f.bytes).await.is_err() {
                    return false;
                }
                if close && terminal {
                    return false;
                }
            }
            true
        }
    };
    for frame in first {
        if !send(throttle.offer(frame, Instant::now()), &tx).await {
            return;
        }
    }
    loop {
        let due = throttle.next_due();
        tokio::select! {
            _ = options.shutdown.changed() => break,
            _ = tx.closed() => return,
            received = live.recv() => match received {
                Ok(event) if event.seq <= head.seq => {}
                Ok(event) => {
                    if let Some(frame) = map(&event) {
                        if !send(throttle.offer(frame, Instant::now()), &tx).await {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "an event stream fell behind; closing it so the client resumes");
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = sleep_until(due), if due.is_some() => {
                if !send(throttle.due(Instant::now()), &tx).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = send(throttle.flush(), &tx).await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
