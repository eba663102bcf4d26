//! Results: one JSON line per measured figure as it is measured, medians over repeated runs, and
//! the human table at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

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

    fn text(self, unit: &str) -> String {
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
        v.to_string()
    }
}

/// Collects the figures of every run and prints them.
#[derive(Default)]
pub(crate) struct Report {
    /// Every figure in the order first seen, with its values over the runs.
    figures: Vec<(Metric, Vec<f64>)>,
    index: BTreeMap<(String, String, String), usize>,
    /// Free-form remarks printed under the table (peers not installed, checks).
    pub(crate) notes: Vec<String>,
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
        match self.index.get(&key) {
            Some(&i) => self.figures[i].1.push(metric.value),
            None => {
                self.index.insert(key, self.figures.len());
                let value = metric.value;
                self.figures.push((metric, vec![value]));
            }
        }
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    /// The median of a figure over the runs so far.
    pub(crate) fn median(&self, workload: &str, variant: &str, metric: &str) -> Option<f64> {
        let i = self
            .index
            .get(&(workload.to_owned(), variant.to_owned(), metric.to_owned()))?;
        Some(crate::stats::median(&self.figures[*i].1))
    }

    /// Prints median JSON lines (when there were several runs) and the table.
    pub(crate) fn finish(&self, runs: usize) -> bool {
        let mut all_pass = true;
        let mut rows = Vec::new();
        for (m, values) in &self.figures {
            let med = crate::stats::median(values);
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
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
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
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        print!("{out}");
        all_pass
    }
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
