//! Results: one JSON line per measured figure as it is measured, medians over repeated runs, and
//! the human table at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

use crate::durability::Durability;

/// What a figure must reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Target {
    /// At least this value.
    AtLeast(f64),
    /// Strictly below this value.
    Below(f64),
}

impl Target {
    pub(crate) fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::Below(t) => value < t,
        }
    }

    pub(crate) fn text(self, unit: &str) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {} {unit}", human(t)),
            Target::Below(t) => format!("< {} {unit}", human(t)),
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub(crate) struct Metric {
    pub(crate) workload: &'static str,
    /// A variant of the workload (`synchronous=FULL`, `concurrency=20`, a peer's name), or "".
    pub(crate) variant: String,
    pub(crate) metric: &'static str,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) target: Option<Target>,
    /// More fields for its JSON line (an object), such as the two sides of a paired ratio.
    pub(crate) extra: Option<serde_json::Value>,
}

impl Metric {
    pub(crate) fn new(
        workload: &'static str,
        metric: &'static str,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Metric {
            workload,
            variant: String::new(),
            metric,
            value,
            unit,
            target: None,
            extra: None,
        }
    }

    pub(crate) fn variant(mut self, variant: impl Into<String>) -> Self {
        self.variant = variant.into();
        self
    }

    pub(crate) fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    pub(crate) fn extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }

    fn key(&self) -> (String, String, String) {
        (
            self.workload.to_owned(),
            self.variant.clone(),
            self.metric.to_owned(),
        )
    }

    fn json(&self, run: &str) -> String {
        let mut v = json!({
            "workload": self.workload,
            "variant": self.variant,
            "metric": self.metric,
            "value": round(self.value),
            "unit": self.unit,
            "run": run,
        });
        if let Some(t) = self.target {
            v["target"] = json!(t.text(self.unit));
            v["pass"] = json!(t.met(self.value));
        }
        if let Some(serde_json::Value::Object(extra)) = &self.extra {
            for (k, x) in extra {
                v[k] = x.clone();
            }
        }
        v.to_string()
    }
}

/// Collects the figures of every run and prints them.
#[derive(Default)]
pub(crate) struct Report {
    /// Every figure in the order first seen, with its values over the runs (run, value).
    figures: Vec<(Metric, Vec<(String, f64)>)>,
    index: BTreeMap<(String, String, String), usize>,
    /// The journal mode and `synchronous` level each (workload, variant) ran with, per run.
    durability: BTreeMap<(String, String, String), Durability>,
    /// Free-form remarks printed under the table (peers not installed, checks).
    pub(crate) notes: Vec<String>,
    /// Printed after the table of figures: the side-by-side table, ready to paste.
    pub(crate) side_by_side: String,
    run: String,
}

impl Report {
    /// Numbers the following figures as run `run` (1-based).
    pub(crate) fn set_run(&mut self, run: impl ToString) {
        self.run = run.to_string();
    }

    /// Records a figure and prints its JSON line.
    pub(crate) fn push(&mut self, metric: Metric) {
        println!("{}", metric.json(&self.run));
        let key = metric.key();
        let value = (self.run.clone(), metric.value);
        match self.index.get(&key) {
            Some(&i) => self.figures[i].1.push(value),
            None => {
                self.index.insert(key, self.figures.len());
                self.figures.push((metric, vec![value]));
            }
        }
    }

    /// Records what `workload`'s `variant` ran with in the current run, and prints it as a JSON
    /// line.
    pub(crate) fn durability(&mut self, workload: &str, variant: &str, durability: Durability) {
        println!(
            "{}",
            json!({
                "workload": workload,
                "variant": variant,
                "journal_mode": durability.journal_mode,
                "synchronous": durability.synchronous,
                "run": self.run,
            })
        );
        self.durability.insert(
            (workload.to_owned(), variant.to_owned(), self.run.clone()),
            durability,
        );
    }

    /// Records the machine's 1-minute load average now as figure `load_1m` of `workload`'s
    /// `variant` (right after it was measured).
    pub(crate) fn load(&mut self, workload: &'static str, variant: &str) {
        if let Some(load) = crate::sys::load_1m() {
            self.push(Metric::new(workload, "load_1m", load, "").variant(variant));
        }
    }

    /// What `workload`'s `variant` ran with in `run`.
    pub(crate) fn durability_in(
        &self,
        workload: &str,
        variant: &str,
        run: &str,
    ) -> Option<&Durability> {
        self.durability
            .get(&(workload.to_owned(), variant.to_owned(), run.to_owned()))
    }

    /// The values of a figure, with the run each was measured in.
    pub(crate) fn values(&self, workload: &str, variant: &str, metric: &str) -> &[(String, f64)] {
        self.index
            .get(&(workload.to_owned(), variant.to_owned(), metric.to_owned()))
            .map_or(&[], |&i| self.figures[i].1.as_slice())
    }

    /// The value of a figure in `run`.
    pub(crate) fn value_in(
        &self,
        workload: &str,
        variant: &str,
        metric: &str,
        run: &str,
    ) -> Option<f64> {
        self.values(workload, variant, metric)
            .iter()
            .find(|(r, _)| r == run)
            .map(|(_, v)| *v)
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    /// Prints median JSON lines (when there were several runs) and the table.
    pub(crate) fn finish(&self, runs: usize) -> bool {
        let mut all_pass = true;
        let mut rows = Vec::new();
        for (m, values) in &self.figures {
            let med = median_of(values);
            let mut median = m.clone();
            median.value = med;
            if runs > 1 {
                println!("{}", median.json("median"));
            }
            let verdict = match m.target {
                Some(t) if t.met(med) => "pass".to_owned(),
                Some(_) => {
                    all_pass = false;
                    "MISS".to_owned()
                }
                None => String::new(),
            };
            let spread = if values.len() > 1 {
                let (lo, hi) = range_of(values);
                format!("{}..{}", human(lo), human(hi))
            } else {
                String::new()
            };
            rows.push([
                m.workload.to_owned(),
                m.variant.clone(),
                m.metric.to_owned(),
                format!("{} {}", human(med), m.unit),
                spread,
                m.target.map(|t| t.text(m.unit)).unwrap_or_default(),
                verdict,
            ]);
        }
        let header = [
            "workload",
            "variant",
            "metric",
            if runs > 1 { "median" } else { "value" },
            "range",
            "target",
            "",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            for (cell, w) in cells.iter().zip(widths) {
                let _ = write!(out, "{cell:<w$}  ");
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
        };
        out.push('\n');
        line(&mut out, &header.map(str::to_owned));
        line(&mut out, &widths.map(|w| "-".repeat(w)));
        for row in &rows {
            line(&mut out, row);
        }
        if !self.side_by_side.is_empty() {
            out.push('\n');
            out.push_str(&self.side_by_side);
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        print!("{out}");
        all_pass
    }
}

/// The median of the values of a figure.
pub(crate) fn median_of(values: &[(String, f64)]) -> f64 {
    let v: Vec<f64> = values.iter().map(|(_, v)| *v).collect();
    crate::stats::median(&v)
}

/// The smallest and largest values of a figure.
pub(crate) fn range_of(values: &[(String, f64)]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
            (lo.min(*v), hi.max(*v))
        })
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        (v * 10.0).round() / 10.0
    } else {
        (v * 1000.0).round() / 1000.0
    }
}

/// A figure for people: thousands separated, three significant digits below 100.
pub(crate) fn human(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 100.0 {
        let n = v.round() as i64;
        let s = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 {
            format!("-{out}")
        } else {
            out
        }
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_figures() {
        assert_eq!(human(1234567.4), "1,234,567");
        assert_eq!(human(100.0), "100");
        assert_eq!(human(12.345), "12.3");
        assert_eq!(human(1.2345), "1.23");
        assert_eq!(human(0.01234), "0.012");
    }

    #[test]
    fn targets() {
        assert!(Target::AtLeast(5.0).met(5.0));
        assert!(!Target::Below(5.0).met(5.0));
        assert!(Target::Below(5.0).met(4.9));
    }
}
