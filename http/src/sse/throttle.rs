//! `run:progress` throttling, as `@coji/durably`'s `createThrottledSSEController`: per run, the
//! first progress of a window is sent at once (leading edge) and the last one of the window
//! when it closes (trailing edge, latest wins); a run's terminal event first sends the
//! progress still held for it. Every other event passes at once.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// A frame on its way out, with what the throttle needs to know of it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Frame {
    /// The bytes to send.
    pub(crate) bytes: bytes::Bytes,
    /// The run it concerns, if any.
    pub(crate) run_id: Option<String>,
    /// A `run:progress`.
    pub(crate) progress: bool,
    /// `run:complete`, `run:fail`, `run:cancel` or `run:delete`.
    pub(crate) terminal: bool,
}

pub(crate) struct Throttle {
    window: Duration,
    last_sent: HashMap<String, Instant>,
    held: HashMap<String, (Instant, Frame)>,
}

impl Throttle {
    pub(crate) fn new(window: Duration) -> Self {
        Throttle {
            window,
            last_sent: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// The frames to send now that `frame` arrived at `now`.
    pub(crate) fn offer(&mut self, frame: Frame, now: Instant) -> Vec<Frame> {
        let mut out = Vec::new();
        let Some(run) = frame.run_id.clone() else {
            out.push(frame);
            return out;
        };
        if frame.terminal {
            self.last_sent.remove(&run);
            if let Some((_, held)) = self.held.remove(&run) {
                out.push(held);
            }
        }
        if !frame.progress || self.window.is_zero() {
            out.push(frame);
            return out;
        }
        match self.last_sent.get(&run) {
            Some(last) if now.duration_since(*last) < self.window => {
                let due = *last + self.window;
                self.held.insert(run, (due, frame));
            }
            _ => {
                self.last_sent.insert(run.clone(), now);
                self.held.remove(&run);
                out.push(frame);
            }
        }
        out
    }

    /// When the earliest held frame is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.held.values().map(|(due, _)| *due).min()
    }

    /// The held frames due at `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Frame> {
        let runs: Vec<String> = self
            .held
            .iter()
            .filter(|(_, (due, _))| *due <= now)
            .map(|(run, _)| run.clone())
            .collect();
        runs.into_iter()
            .filter_map(|run| {
                let (_, frame) = self.held.remove(&run)?;
                self.last_sent.insert(run, now);
                Some(frame)
            })
            .collect()
    }

    /// Every held frame, when the stream ends.
    pub(crate) fn flush(&mut self) -> Vec<Frame> {
        self.last_sent.clear();
        self.held.drain().map(|(_, (_, f))| f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(run: &str, text: &str, progress: bool, terminal: bool) -> Frame {
        Frame {
            bytes: bytes::Bytes::from(text.to_owned()),
            run_id: Some(run.to_owned()),
            progress,
            terminal,
        }
    }

    fn texts(frames: Vec<Frame>) -> Vec<String> {
        frames
            .into_iter()
            .map(|f| String::from_utf8(f.bytes.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn leading_edge_then_latest_wins_then_terminal_flushes_first() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Throttle::new(Duration::from_millis(100));
        assert_eq!(texts(t.offer(frame("a", "p1", true, false), ms(0))), ["p1"]);
        assert!(t.offer(frame("a", "p2", true, false), ms(10)).is_empty());
        assert!(t.offer(frame("a", "p3", true, false), ms(20)).is_empty());
        // Another run has its own window.
        assert_eq!(
            texts(t.offer(frame("b", "q1", true, false), ms(20))),
            ["q1"]
        );
        // Other events pass at once.
        assert_eq!(
            texts(t.offer(frame("a", "step", false, false), ms(30))),
            ["step"]
        );
        assert_eq!(t.next_due(), Some(ms(100)));
        assert!(t.due(ms(99)).is_empty());
        assert_eq!(texts(t.due(ms(100))), ["p3"]);
        assert!(t.offer(frame("a", "p4", true, false), ms(150)).is_empty());
        assert_eq!(
            texts(t.offer(frame("a", "done", false, true), ms(160))),
            ["p4", "done"]
        );
        // After the terminal event the run starts afresh.
        assert_eq!(
            texts(t.offer(frame("a", "p5", true, false), ms(170))),
            ["p5"]
        );
        let mut off = Throttle::new(Duration::ZERO);
        assert_eq!(texts(off.offer(frame("a", "x", true, false), ms(0))), ["x"]);
        assert_eq!(texts(off.offer(frame("a", "y", true, false), ms(0))), ["y"]);
    }
}
