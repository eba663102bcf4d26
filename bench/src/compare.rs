//! Side-by-side figures as paired ratios.
//!
//! In every run each of our figures is measured right before the figure it is compared with
//! (a peer's, or the raw-SQLite ceiling's a few seconds earlier), so each run gives one pair
//! taken back to back, at one machine load. A ratio is the median of the pairs' ratios, printed
//! with their range, the number of pairs, the 1-minute load average during them, and for both
//! sides the journal mode and `synchronous` level read from the connection that committed. A
//! pair whose sides differ in either gives no ratio: the row says why instead.

use std::fmt::Write as _;

use serde_json::json;

use crate::durability::Durability;
use crate::report::{human, median_of, range_of, Metric, Report, Target};
use crate::{sync_name, Config};

/// One side of a comparison: which figure, and what it is for people.
struct Side {
    workload: &'static str,
    variant: String,
    metric: &'static str,
    /// Who ran it and on what size ("durably 0.15.0 (8 slots, 10 ms poll), 1,000 runs").
    label: String,
}

impl Side {
    fn new(workload: &'static str, variant: impl Into<String>, metric: &'static str) -> Side {
        Side {
            workload,
            variant: variant.into(),
            metric,
            label: String::new(),
        }
    }

    fn label(mut self, label: impl Into<String>) -> Side {
        self.label = label.into();
        self
    }
}

/// How the two figures of a pair make a ratio.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Throughputs: ours / theirs, "x".
    Times,
    /// Latencies: theirs / ours, "x faster".
    TimesFaster,
    /// CPU time per unit of work: theirs / ours, "x less CPU".
    LessCpu,
    /// Ours as a share of a ceiling: 100 * ours / ceiling, "%".
    Share,
}

impl Kind {
    fn ratio(self, ours: f64, theirs: f64) -> f64 {
        match self {
            Kind::Times => ours / theirs,
            Kind::TimesFaster | Kind::LessCpu => theirs / ours,
            Kind::Share => 100.0 * ours / theirs,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Times | Kind::TimesFaster | Kind::LessCpu => "x",
            Kind::Share => "%",
        }
    }

    fn text(self, v: f64) -> String {
        match self {
            Kind::Times => format!("{}x", human(v)),
            Kind::TimesFaster => format!("{}x faster", human(v)),
            Kind::LessCpu => format!("{}x less CPU", human(v)),
            Kind::Share => format!("{}%", human(v)),
        }
    }
}

/// A comparison the program prints when both sides ran.
struct Spec {
    /// The row's name ("steps NORMAL drain").
    figure: String,
    ours: Side,
    theirs: Side,
    kind: Kind,
    target: Option<Target>,
    /// The JSON lines of the pairs' ratios: workload, metric, variant.
    workload: &'static str,
    metric: &'static str,
    variant: String,
}

/// The variant name of `steps` in `mode` (with its worker concurrency when one was given).
pub(crate) fn steps_variant(cfg: &Config, mode: durable_jobs::sqlite::Synchronous) -> String {
    let mut variant = format!("synchronous={}", sync_name(mode));
    if let Some(c) = cfg.step_concurrency {
        variant.push_str(&format!(" concurrency={c}"));
    }
    variant
}

/// The variant name of `burndown` in `mode` at worker concurrency `c`.
pub(crate) fn burndown_variant(mode: durable_jobs::sqlite::Synchronous, c: usize) -> String {
    format!("synchronous={} concurrency={c}", sync_name(mode))
}

/// The variant name of `steps` on PostgreSQL (with its worker concurrency when one was given).
pub(crate) fn steps_variant_postgres(cfg: &Config) -> String {
    let mut variant = "backend=postgres".to_owned();
    if let Some(c) = cfg.step_concurrency {
        variant.push_str(&format!(" concurrency={c}"));
    }
    if cfg.shared_feed {
        variant.push_str(" shared-feed");
    }
    if cfg.processes > 1 {
        variant.push_str(&format!(" processes={}", cfg.processes));
    }
    variant
}

/// The variant name of `burndown` on PostgreSQL at worker concurrency `c`.
pub(crate) fn burndown_variant_postgres(cfg: &Config, c: usize) -> String {
    match cfg.processes {
        1 => format!("backend=postgres concurrency={c}"),
        n => format!("backend=postgres concurrency={c} processes={n}"),
    }
}

/// Runs of the durably `steps` peer on PostgreSQL: by default 200 (it drains a few dozen runs
/// a second there, so its drain takes seconds).
pub(crate) fn durably_postgres_runs(cfg: &Config) -> usize {
    cfg.peer_runs.unwrap_or(200).max(1)
}

/// Jobs of the graphile-worker peer: batched, as many as ours (it drains thousands a second);
/// with its defaults a tenth (hundreds a second), so that each drains in seconds.
pub(crate) fn graphile_jobs(cfg: &Config, batched: bool) -> usize {
    match (cfg.peer_jobs, batched) {
        (Some(jobs), _) => jobs,
        (None, true) => cfg.burndown_jobs,
        (None, false) => cfg.burndown_jobs / 10,
    }
    .max(1)
}

/// Runs of the durably `steps` peer: by default 1,000, so that its drain takes seconds like
/// ours (20,000 runs in about one) instead of minutes. durably drains a small table faster
/// than a large one, so a smaller size favours it.
pub(crate) fn durably_runs(cfg: &Config) -> usize {
    cfg.peer_runs
        .unwrap_or(if cfg.quick { 200 } else { 1_000 })
        .max(1)
}

/// Jobs of the effectum peer in `mode` (file in WAL), and as shipped: by default as many as ours
/// with `NORMAL`, a fifth with `FULL` and a tenth as shipped (both sync the disk at every
/// commit), so that each drains in seconds.
pub(crate) fn effectum_jobs(
    cfg: &Config,
    mode: Option<durable_jobs::sqlite::Synchronous>,
) -> usize {
    let n = cfg.burndown_jobs;
    match (cfg.peer_jobs, mode) {
        (Some(jobs), _) => jobs,
        (None, Some(durable_jobs::sqlite::Synchronous::Normal)) => n,
        (None, Some(_)) => n / 5,
        (None, None) => n / 10,
    }
    .max(1)
}

fn specs(cfg: &Config) -> Vec<Spec> {
    let mut specs = Vec::new();
    let steps_size = format!("{} runs", human(cfg.steps_runs as f64));
    for &mode in &cfg.sync {
        let sync = sync_name(mode);
        let ours = steps_variant(cfg, mode);
        let durably = format!(
            "durably 0.15.0 (8 slots, 10 ms poll), {} runs",
            human(durably_runs(cfg) as f64)
        );
        for (metric, what, target) in [
            ("drain_runs_per_s", "drain", Some(Target::AtLeast(100.0))),
            ("trigger_per_s", "trigger", None),
        ] {
            specs.push(Spec {
                figure: format!("steps {sync} {what}"),
                ours: Side::new("steps", &ours, metric).label(&steps_size),
                theirs: Side::new("steps", format!("durably {ours}"), metric).label(&durably),
                kind: Kind::Times,
                target,
                workload: "steps",
                metric: if what == "drain" {
                    "drain_vs_durably"
                } else {
                    "trigger_vs_durably"
                },
                variant: ours.clone(),
            });
        }
        specs.push(Spec {
            figure: format!("steps {sync} CPU per run (whole process)"),
            ours: Side::new("steps", &ours, "cpu_us_total_per_unit").label(&steps_size),
            theirs: Side::new("steps", format!("durably {ours}"), "cpu_us_total_per_unit")
                .label(&durably),
            kind: Kind::LessCpu,
            target: None,
            workload: "steps",
            metric: "cpu_vs_durably",
            variant: ours.clone(),
        });
        specs.push(Spec {
            figure: format!("steps {sync} drain, share of the ceiling"),
            ours: Side::new("steps", &ours, "drain_runs_per_s").label(&steps_size),
            theirs: Side::new("limit", format!("synchronous={sync}"), "runs_per_s").label(format!(
                "raw SQLite, same statements, 1,000 rows/transaction, {steps_size}"
            )),
            kind: Kind::Share,
            // The target of issue 5 is stated for the default mode.
            target: (mode == durable_jobs::sqlite::Synchronous::Normal)
                .then_some(Target::AtLeast(30.0)),
            workload: "steps",
            metric: "drain_share_of_limit",
            variant: ours.clone(),
        });
    }
    for (variant, poll) in [
        ("durably poll=default", "default poll"),
        ("durably poll=1ms", "1 ms poll"),
    ] {
        for (metric, what) in [("p50_ms", "p50"), ("p99_ms", "p99")] {
            specs.push(Spec {
                figure: format!("latency {what}"),
                ours: Side::new("latency", "", metric)
                    .label(format!("{} calls", human(cfg.latency_iterations as f64))),
                theirs: Side::new("latency", variant, metric).label(format!(
                    "durably 0.15.0 ({poll}), {} calls",
                    human(cfg.latency_iterations as f64)
                )),
                kind: Kind::TimesFaster,
                target: None,
                workload: "latency",
                metric: if what == "p50" {
                    "p50_speedup_vs"
                } else {
                    "p99_speedup_vs"
                },
                variant: variant.to_owned(),
            });
        }
    }
    let ours_jobs = format!("{} jobs", human(cfg.burndown_jobs as f64));
    for &mode in &cfg.sync {
        let sync = sync_name(mode);
        let wal_jobs = human(effectum_jobs(cfg, Some(mode)) as f64);
        for &c in &cfg.burndown_concurrency {
            let ours = burndown_variant(mode, c);
            for (metric, what, target) in [
                ("drain_per_s", "drain", Some(Target::AtLeast(2.0))),
                ("enqueue_per_s", "enqueue", None),
            ] {
                specs.push(Spec {
                    figure: format!("burndown {sync} c={c} {what}"),
                    ours: Side::new("burndown", &ours, metric).label(&ours_jobs),
                    theirs: Side::new("burndown", format!("effectum {ours}"), metric)
                        .label(format!("effectum 0.7, file put in WAL, {wal_jobs} jobs")),
                    kind: Kind::Times,
                    target,
                    workload: "burndown",
                    metric: if what == "drain" {
                        "drain_vs_effectum"
                    } else {
                        "enqueue_vs_effectum"
                    },
                    variant: ours.clone(),
                });
            }
            specs.push(Spec {
                figure: format!("burndown {sync} c={c} CPU per job (whole process)"),
                ours: Side::new("burndown", &ours, "cpu_us_total_per_unit").label(&ours_jobs),
                theirs: Side::new(
                    "burndown",
                    format!("effectum {ours}"),
                    "cpu_us_total_per_unit",
                )
                .label(format!("effectum 0.7, file put in WAL, {wal_jobs} jobs")),
                kind: Kind::LessCpu,
                target: None,
                workload: "burndown",
                metric: "cpu_vs_effectum",
                variant: ours.clone(),
            });
            if mode == durable_jobs::sqlite::Synchronous::Normal {
                specs.push(Spec {
                    figure: format!("burndown {sync} c={c} drain, effectum as shipped"),
                    ours: Side::new("burndown", &ours, "drain_per_s").label(&ours_jobs),
                    theirs: Side::new(
                        "burndown",
                        format!("effectum as shipped concurrency={c}"),
                        "drain_per_s",
                    )
                    .label(format!(
                        "effectum 0.7 as shipped, {} jobs",
                        human(effectum_jobs(cfg, None) as f64)
                    )),
                    kind: Kind::Times,
                    target: None,
                    workload: "burndown",
                    metric: "drain_vs_effectum_as_shipped",
                    variant: ours.clone(),
                });
            }
            specs.push(Spec {
                figure: format!("burndown {sync} c={c} drain, share of the ceiling"),
                ours: Side::new("burndown", &ours, "drain_per_s").label(&ours_jobs),
                theirs: Side::new("limit", format!("noop synchronous={sync}"), "drain_per_s")
                    .label(format!(
                        "raw SQLite, same statements, 1,000 rows/transaction, {ours_jobs}"
                    )),
                kind: Kind::Share,
                target: Some(Target::AtLeast(60.0)),
                workload: "burndown",
                metric: "drain_share_of_limit",
                variant: ours.clone(),
            });
        }
    }
    specs.extend(postgres_specs(cfg));
    specs
}

/// The comparisons of `--backend postgres`: durably on PostgreSQL for `steps`, graphile-worker
/// (batched, and its defaults) for `burndown`, each on the same server right after ours.
fn postgres_specs(cfg: &Config) -> Vec<Spec> {
    let mut specs = Vec::new();
    let ours = steps_variant_postgres(cfg);
    let steps_size = format!("{} runs", human(cfg.steps_runs as f64));
    let durably = format!(
        "durably 0.15.0 on PostgreSQL (8 slots, 10 ms poll), {} runs",
        human(durably_postgres_runs(cfg) as f64)
    );
    for (metric, what, kind, target, name) in [
        (
            "drain_runs_per_s",
            "drain",
            Kind::Times,
            Some(Target::AtLeast(50.0)),
            "drain_vs_durably",
        ),
        (
            "trigger_per_s",
            "trigger",
            Kind::Times,
            None,
            "trigger_vs_durably",
        ),
        (
            "cpu_us_total_per_unit",
            "CPU per run (whole process)",
            Kind::LessCpu,
            None,
            "cpu_vs_durably",
        ),
    ] {
        specs.push(Spec {
            figure: format!("steps postgres {what}"),
            ours: Side::new("steps", &ours, metric).label(&steps_size),
            theirs: Side::new("steps", format!("durably {ours}"), metric).label(&durably),
            kind,
            target,
            workload: "steps",
            metric: name,
            variant: ours.clone(),
        });
    }
    let ours_jobs = format!("{} jobs", human(cfg.burndown_jobs as f64));
    for &c in &cfg.burndown_concurrency {
        let ours = burndown_variant_postgres(cfg, c);
        for (mode, settings) in [
            ("batched", "local queue 500, batch delays 0"),
            ("defaults", "defaults"),
        ] {
            let label = format!(
                "graphile-worker 0.18.0 ({settings}), {} jobs",
                human(graphile_jobs(cfg, mode == "batched") as f64)
            );
            let theirs = format!("graphile {mode} {ours}");
            let figures: &[(&'static str, &str, Kind, Option<Target>, &'static str)] =
                if mode == "batched" {
                    &[
                        (
                            "drain_per_s",
                            "drain",
                            Kind::Times,
                            Some(Target::AtLeast(2.0)),
                            "drain_vs_graphile_batched",
                        ),
                        (
                            "enqueue_per_s",
                            "enqueue",
                            Kind::Times,
                            None,
                            "enqueue_vs_graphile_batched",
                        ),
                        (
                            "cpu_us_total_per_unit",
                            "CPU per job (whole process)",
                            Kind::LessCpu,
                            None,
                            "cpu_vs_graphile_batched",
                        ),
                    ]
                } else {
                    &[(
                        "drain_per_s",
                        "drain",
                        Kind::Times,
                        None,
                        "drain_vs_graphile_defaults",
                    )]
                };
            for &(metric, what, kind, target, name) in figures {
                specs.push(Spec {
                    figure: format!("burndown postgres c={c} {what}, graphile {mode}"),
                    ours: Side::new("burndown", &ours, metric).label(&ours_jobs),
                    theirs: Side::new("burndown", theirs.clone(), metric).label(label.clone()),
                    kind,
                    target,
                    workload: "burndown",
                    metric: name,
                    variant: ours.clone(),
                });
            }
        }
    }
    specs
}

/// One run's two figures.
struct Pair {
    run: String,
    ours: f64,
    theirs: f64,
    durability: (Option<Durability>, Option<Durability>),
    load: Vec<f64>,
}

impl Pair {
    /// The ratio, when both sides committed alike.
    fn ratio(&self, kind: Kind) -> Result<f64, String> {
        match &self.durability {
            (Some(a), Some(b)) if a == b => Ok(kind.ratio(self.ours, self.theirs)),
            (a, b) => Err(format!(
                "ours {}, theirs {}",
                shown(a.as_ref()),
                shown(b.as_ref())
            )),
        }
    }
}

fn shown(d: Option<&Durability>) -> String {
    d.map_or_else(|| "not read".to_owned(), Durability::to_string)
}

/// The journal mode and `synchronous` level of one side over the runs, as one text.
fn durability_text(pairs: &[Pair], side: impl Fn(&Pair) -> Option<&Durability>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for p in pairs {
        let d = shown(side(p));
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen.join(" or ")
}

/// Computes every comparison whose sides ran, pushes the pairs' ratios as figures (one JSON
/// line per pair, the table's median and range over them) and writes the side-by-side table.
pub(crate) fn compare(cfg: &Config, report: &mut Report) {
    let mut table = String::from(
        "Side by side: each ratio is the median of the ratios of pairs taken back to back (one \
         pair per run), with their range; journal mode/synchronous as read from each side's \
         connection.\n\n\
         | figure | ours | other side | ours | other | paired ratio (range) | pairs | load 1-min | target |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut rows = 0;
    for spec in specs(cfg) {
        let pairs: Vec<Pair> = report
            .values(spec.ours.workload, &spec.ours.variant, spec.ours.metric)
            .iter()
            .filter_map(|(run, ours)| {
                let theirs = report.value_in(
                    spec.theirs.workload,
                    &spec.theirs.variant,
                    spec.theirs.metric,
                    run,
                )?;
                let load = [&spec.ours, &spec.theirs]
                    .iter()
                    .filter_map(|s| report.value_in(s.workload, &s.variant, "load_1m", run))
                    .collect();
                Some(Pair {
                    run: run.clone(),
                    ours: *ours,
                    theirs,
                    durability: (
                        report
                            .durability_in(spec.ours.workload, &spec.ours.variant, run)
                            .cloned(),
                        report
                            .durability_in(spec.theirs.workload, &spec.theirs.variant, run)
                            .cloned(),
                    ),
                    load,
                })
            })
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let mut ratios = Vec::new();
        let mut refused = Vec::new();
        for p in &pairs {
            match p.ratio(spec.kind) {
                Ok(r) => {
                    report.set_run(&p.run);
                    let mut m = Metric::new(spec.workload, spec.metric, r, spec.kind.unit())
                        .variant(&spec.variant)
                        .extra(json!({
                            "ours": p.ours,
                            "other": p.theirs,
                            "other_variant": spec.theirs.variant,
                            "durability": shown(p.durability.0.as_ref()),
                            "load_1m": p.load,
                        }));
                    if let Some(t) = spec.target {
                        m = m.target(t);
                    }
                    report.push(m);
                    ratios.push((p.run.clone(), r));
                }
                Err(why) => refused.push(why),
            }
        }
        let ours: Vec<(String, f64)> = pairs.iter().map(|p| (p.run.clone(), p.ours)).collect();
        let theirs: Vec<(String, f64)> = pairs.iter().map(|p| (p.run.clone(), p.theirs)).collect();
        let ratio = if ratios.is_empty() {
            format!("no ratio: durability differs ({})", refused[0])
        } else {
            let (lo, hi) = range_of(&ratios);
            let mut text = format!(
                "**{}** ({}..{})",
                spec.kind.text(median_of(&ratios)),
                human(lo),
                human(hi)
            );
            if !refused.is_empty() {
                let _ = write!(
                    text,
                    "; {} pair(s) left out, durability differs ({})",
                    refused.len(),
                    refused[0]
                );
            }
            text
        };
        let loads: Vec<f64> = pairs.iter().flat_map(|p| p.load.iter().copied()).collect();
        let load = if loads.is_empty() {
            "?".to_owned()
        } else {
            let lo = loads.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.2}..{hi:.2}")
        };
        let target = match (spec.target, ratios.is_empty()) {
            (Some(t), false) => {
                let verdict = if t.met(median_of(&ratios)) {
                    "pass"
                } else {
                    "MISS"
                };
                format!("{}: {verdict}", t.text(spec.kind.unit()))
            }
            (Some(t), true) => format!("{}: no ratio", t.text(spec.kind.unit())),
            (None, _) => String::new(),
        };
        let unit = |s: &Side| {
            if s.metric.ends_with("_ms") {
                " ms"
            } else if s.metric.starts_with("cpu_us") {
                " us"
            } else {
                "/s"
            }
        };
        let _ = writeln!(
            table,
            "| {} | {}: {} | {}: {} | {}{} | {}{} | {} | {} | {} | {} |",
            spec.figure,
            durability_text(&pairs, |p| p.durability.0.as_ref()),
            spec.ours.label,
            durability_text(&pairs, |p| p.durability.1.as_ref()),
            spec.theirs.label,
            human(median_of(&ours)),
            unit(&spec.ours),
            human(median_of(&theirs)),
            unit(&spec.theirs),
            ratio,
            pairs.len(),
            load,
            target,
        );
        rows += 1;
    }
    if rows > 0 {
        report.side_by_side = table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durability(journal: &str, sync: &str) -> Option<Durability> {
        Some(Durability {
            journal_mode: journal.into(),
            synchronous: sync.into(),
        })
    }

    #[test]
    fn a_pair_gives_a_ratio_only_when_both_sides_committed_alike() {
        let pair = |a, b| Pair {
            run: "1".into(),
            ours: 60.0,
            theirs: 20.0,
            durability: (a, b),
            load: vec![1.0],
        };
        let same = pair(durability("wal", "NORMAL"), durability("wal", "NORMAL"));
        assert_eq!(same.ratio(Kind::Times), Ok(3.0));
        assert_eq!(same.ratio(Kind::TimesFaster), Ok(20.0 / 60.0));
        assert_eq!(same.ratio(Kind::Share), Ok(300.0));
        assert_eq!(same.ratio(Kind::LessCpu), Ok(20.0 / 60.0));
        let journal = pair(durability("wal", "NORMAL"), durability("delete", "NORMAL"));
        assert_eq!(
            journal.ratio(Kind::Times),
            Err("ours wal/NORMAL, theirs delete/NORMAL".into())
        );
        let sync = pair(durability("wal", "FULL"), durability("wal", "NORMAL"));
        assert!(sync.ratio(Kind::Times).is_err());
        assert!(pair(durability("wal", "FULL"), None)
            .ratio(Kind::Times)
            .is_err());
    }

    fn side(report: &mut Report, run: &str, variant: &str, value: f64, d: Option<Durability>) {
        report.set_run(run);
        report.push(Metric::new("burndown", "drain_per_s", value, "jobs/s").variant(variant));
        report.push(Metric::new("burndown", "load_1m", 1.5, "").variant(variant));
        if let Some(d) = d {
            report.durability("burndown", variant, d);
        }
    }

    #[test]
    fn the_ratio_is_the_median_of_the_pairs_and_a_differing_pair_is_left_out() {
        let cfg = Config {
            sync: vec![durable_jobs::sqlite::Synchronous::Normal],
            burndown_concurrency: vec![20],
            ..Config::default()
        };
        let mut report = Report::default();
        let ours = burndown_variant(durable_jobs::sqlite::Synchronous::Normal, 20);
        let theirs = format!("effectum {ours}");
        let wal = durability("wal", "NORMAL");
        // Pairs 3x, 2x, 5x; the fourth pair's peer ran in another journal mode.
        for (run, a, b, d) in [
            ("1", 60.0, 20.0, wal.clone()),
            ("2", 40.0, 20.0, wal.clone()),
            ("3", 100.0, 20.0, wal.clone()),
            ("4", 100.0, 1.0, durability("delete", "NORMAL")),
        ] {
            side(&mut report, run, &ours, a, wal.clone());
            side(&mut report, run, &theirs, b, d);
        }
        compare(&cfg, &mut report);
        let ratios = report.values("burndown", &ours, "drain_vs_effectum");
        let got: Vec<f64> = ratios.iter().map(|(_, r)| *r).collect();
        assert_eq!(got, vec![3.0, 2.0, 5.0]);
        assert_eq!(median_of(ratios), 3.0);
        let row = report
            .side_by_side
            .lines()
            .find(|l| l.starts_with("| burndown NORMAL c=20 drain |"))
            .unwrap();
        assert!(row.contains("**3.00x** (2.00..5.00)"), "{row}");
        assert!(row.contains("1 pair(s) left out"), "{row}");
        assert!(row.contains(">= 2.00 x: pass"), "{row}");
        assert!(row.contains("wal/NORMAL or delete/NORMAL"), "{row}");
    }

    #[test]
    fn no_ratio_is_printed_when_every_pair_differs() {
        let cfg = Config {
            sync: vec![durable_jobs::sqlite::Synchronous::Normal],
            burndown_concurrency: vec![100],
            ..Config::default()
        };
        let mut report = Report::default();
        let ours = burndown_variant(durable_jobs::sqlite::Synchronous::Normal, 100);
        for run in ["1", "2", "3"] {
            side(&mut report, run, &ours, 50.0, durability("wal", "NORMAL"));
            side(
                &mut report,
                run,
                "effectum as shipped concurrency=100",
                5.0,
                durability("delete", "NORMAL"),
            );
        }
        compare(&cfg, &mut report);
        assert!(report
            .values("burndown", &ours, "drain_vs_effectum_as_shipped")
            .is_empty());
        let row = report
            .side_by_side
            .lines()
            .find(|l| l.contains("effectum as shipped |"))
            .unwrap();
        assert!(
            row.contains("no ratio: durability differs (ours wal/NORMAL, theirs delete/NORMAL)"),
            "{row}"
        );
    }
}
