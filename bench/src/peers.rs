//! The peers, run side by side through `bench/run-peers.sh`: `@coji/durably` 0.15.0 (Node,
//! better-sqlite3) for `steps` and `latency`, `effectum` 0.7 for `burndown`. A peer that cannot
//! be installed is reported once and skipped; our own figures go on.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::report::{Metric, Report};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/run-peers.sh");

/// Which peers run, and which could not be installed.
pub(crate) struct Peers {
    enabled: bool,
    unavailable: Vec<&'static str>,
}

impl Peers {
    pub(crate) fn new(enabled: bool) -> Self {
        Peers {
            enabled,
            unavailable: Vec::new(),
        }
    }

    /// Runs `run-peers.sh PEER ARGS...` and returns its JSON line; `None` (with a note) when the
    /// peer is disabled, cannot be installed, or failed.
    pub(crate) fn run(
        &mut self,
        peer: &'static str,
        args: &[String],
        env: &[(&str, &str)],
        report: &mut Report,
    ) -> Option<Value> {
        if !self.enabled || self.unavailable.contains(&peer) {
            return None;
        }
        eprintln!("   peer {peer} {}", args.join(" "));
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg(peer)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                self.unavailable.push(peer);
                report.note(format!(
                    "peer {peer} NOT RUN: cannot run {SCRIPT}: {e}; our own figures only"
                ));
                return None;
            }
        };
        if out.status.code() == Some(3) {
            self.unavailable.push(peer);
            report.note(format!(
                "peer {peer} NOT RUN: it could not be installed or built (see the messages \
                 above); our own figures only"
            ));
            return None;
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parsed = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok());
        match (out.status.success(), parsed) {
            (true, Some(v)) => Some(v),
            _ => {
                report.note(format!(
                    "peer {peer} {} failed ({}); no figure",
                    args.join(" "),
                    out.status
                ));
                None
            }
        }
    }
}

/// A number field of a peer's JSON line.
pub(crate) fn field(v: &Value, name: &str) -> Option<f64> {
    v.get(name).and_then(Value::as_f64)
}

/// Records a peer's figures (`metrics`: JSON field and unit), the journal mode and `synchronous`
/// level its connection reported, and the load average now, as `workload`'s `variant`.
pub(crate) fn record(
    report: &mut Report,
    workload: &'static str,
    variant: &str,
    line: &Value,
    metrics: &[(&'static str, &'static str)],
) {
    for &(metric, unit) in metrics {
        if let Some(x) = field(line, metric) {
            report.push(Metric::new(workload, metric, x, unit).variant(variant));
        }
    }
    match crate::durability::of_peer(line) {
        Some(d) => report.durability(workload, variant, d),
        None => report.note(format!(
            "{workload} {variant}: the peer did not report its journal mode and synchronous \
             level; no ratio against it"
        )),
    }
    report.load(workload, variant);
}
