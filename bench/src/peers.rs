//! The peers, run side by side through `bench/run-peers.sh`: `@coji/durably` 0.15.0 (Node,
//! better-sqlite3) for `steps` and `latency`, `effectum` 0.7 for `burndown`. A peer that cannot
//! be installed is reported once and skipped; our own figures go on.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::report::{Metric, Report, Target};
use crate::Config;

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

/// Ratios of our medians to the peers' medians, with the targets of issue 5, and `steps` as a
/// share of the `limit` ceiling.
pub(crate) fn ratios(cfg: &Config, report: &mut Report) {
    report.set_run("ratio");
    let push = |report: &mut Report, m: Metric| report.push(m);
    for mode in &cfg.sync {
        let sync = crate::sync_name(*mode);
        let ours = format!("synchronous={sync}");
        let peer = format!("durably synchronous={sync}");
        if let (Some(a), Some(b)) = (
            report.median("steps", &ours, "drain_runs_per_s"),
            report.median("steps", &peer, "drain_runs_per_s"),
        ) {
            push(
                report,
                Metric::new("steps", "drain_vs_durably", a / b, "x")
                    .variant(ours.clone())
                    .target(Target::AtLeast(100.0)),
            );
        }
        if let (Some(a), Some(b)) = (
            report.median("steps", &ours, "trigger_per_s"),
            report.median("steps", &peer, "trigger_per_s"),
        ) {
            push(
                report,
                Metric::new("steps", "trigger_vs_durably", a / b, "x").variant(ours.clone()),
            );
        }
        if let (Some(a), Some(b)) = (
            report.median("steps", &ours, "drain_runs_per_s"),
            report.median("limit", &ours, "runs_per_s"),
        ) {
            let m = Metric::new("steps", "drain_share_of_limit", 100.0 * a / b, "%")
                .variant(ours.clone());
            // The target of issue 5 is stated for the default mode.
            let m = if *mode == durable_jobs::Synchronous::Normal {
                m.target(Target::AtLeast(30.0))
            } else {
                m
            };
            push(report, m);
        }
    }
    for variant in ["durably poll=default", "durably poll=1ms"] {
        if let (Some(a), Some(b)) = (
            report.median("latency", "", "p50_ms"),
            report.median("latency", variant, "p50_ms"),
        ) {
            push(
                report,
                Metric::new("latency", "p50_speedup_vs", b / a, "x").variant(variant),
            );
        }
    }
    for c in &cfg.burndown_concurrency {
        if let (Some(a), Some(b)) = (
            report.median("burndown", &format!("concurrency={c}"), "drain_per_s"),
            report.median(
                "burndown",
                &format!("effectum concurrency={c}"),
                "drain_per_s",
            ),
        ) {
            push(
                report,
                Metric::new("burndown", "drain_vs_effectum", a / b, "x")
                    .variant(format!("concurrency={c}"))
                    .target(Target::AtLeast(2.0)),
            );
        }
    }
}
