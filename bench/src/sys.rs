//! What the process and the machine look like: peak resident memory, cores, memory, disk.

use std::collections::BTreeMap;
use std::process::Command;

use crate::report::{Metric, Report};

/// A field of `/proc/self/status` in kB (`VmHWM` is the peak resident set, `VmRSS` the current).
pub(crate) fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// What the process has used so far: bytes handed to `write`-like system calls, and CPU time
/// per thread name. Two snapshots around a phase tell where its work went.
#[derive(Clone, Debug, Default)]
pub(crate) struct Usage {
    /// `wchar` of `/proc/self/io`: the log and database pages SQLite wrote (before the
    /// kernel's writeback), plus anything else written.
    written: Option<u64>,
    /// Nanoseconds of CPU from `/proc/self/task/*/schedstat` by thread id, with the thread's
    /// name (`dj-sqlite-write`, `dj-sqlite-ckpt`, `tokio-rt-worker`, ...).
    cpu_ns: BTreeMap<u64, (String, u64)>,
    /// The machine's `cpu` line of `/proc/stat` (user, nice, system, idle, iowait, irq,
    /// softirq, steal), in ticks.
    machine: Vec<u64>,
}

impl Usage {
    pub(crate) fn now() -> Usage {
        let written = std::fs::read_to_string("/proc/self/io")
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|line| line.strip_prefix("wchar:"))
                    .and_then(|v| v.trim().parse().ok())
            });
        let mut cpu_ns = BTreeMap::new();
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = task.path();
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let (Ok(name), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("schedstat")),
            ) else {
                continue;
            };
            if let Some(ns) = stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                cpu_ns.insert(tid, (name.trim().to_owned(), ns));
            }
        }
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let line = stat.lines().find(|l| l.starts_with("cpu "))?;
                Some(
                    line.split_whitespace()
                        .skip(1)
                        .take(8)
                        .filter_map(|v| v.parse().ok())
                        .collect(),
                )
            })
            .unwrap_or_default();
        Usage {
            written,
            cpu_ns,
            machine,
        }
    }

    /// CPU nanoseconds of the whole process since `before` (per thread, as in
    /// [`report_since`](Self::report_since)).
    pub(crate) fn cpu_ns_since(&self, before: &Usage) -> u64 {
        self.cpu_ns
            .iter()
            .map(|(tid, (_, now))| {
                let then = before.cpu_ns.get(tid).map_or(0, |(_, ns)| *ns);
                now.saturating_sub(then)
            })
            .sum()
    }

    /// Figures of the phase since `before`, per `n` units of work (`per`: "run", "add", ...):
    /// bytes written, and CPU microseconds of the writer, checkpoint and tokio threads and of
    /// the whole process: per thread, what it used since `before` (all it used, for a thread
    /// started since), so a thread that ended meanwhile takes nothing away (what it used in the
    /// phase is missing, though).
    pub(crate) fn report_since(
        &self,
        before: &Usage,
        n: usize,
        metric: impl Fn(&'static str, f64, &'static str) -> Metric,
        report: &mut Report,
    ) {
        let n = n.max(1) as f64;
        if let (Some(after), Some(before)) = (self.written, before.written) {
            report.push(metric(
                "bytes_written_per_unit",
                after.saturating_sub(before) as f64 / n,
                "bytes",
            ));
        }
        let spent = |name: Option<&str>| -> f64 {
            let ns: u64 = self
                .cpu_ns
                .iter()
                .filter(|(_, (thread, _))| name.is_none_or(|n| thread == n))
                .map(|(tid, (_, now))| {
                    let then = before.cpu_ns.get(tid).map_or(0, |(_, ns)| *ns);
                    now.saturating_sub(then)
                })
                .sum();
            ns as f64 / 1_000.0 / n
        };
        // What else the machine did meanwhile: time stolen by the hypervisor and time the CPUs
        // sat waiting for the disk, as shares of all CPU time. High figures mean a noisy run.
        if self.machine.len() == 8 && before.machine.len() == 8 {
            let delta: Vec<u64> = self
                .machine
                .iter()
                .zip(&before.machine)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            let total = delta.iter().sum::<u64>().max(1) as f64;
            report.push(metric(
                "machine_steal_pct",
                100.0 * delta[7] as f64 / total,
                "%",
            ));
            report.push(metric(
                "machine_iowait_pct",
                100.0 * delta[4] as f64 / total,
                "%",
            ));
        }
        for (figure, thread) in [
            ("cpu_us_writer_per_unit", Some("dj-sqlite-write")),
            ("cpu_us_checkpoint_per_unit", Some("dj-sqlite-ckpt")),
            ("cpu_us_tokio_per_unit", Some("tokio-rt-worker")),
            ("cpu_us_total_per_unit", None),
        ] {
            report.push(metric(figure, spent(thread), "us"));
        }
    }
}

/// CPU time the calling thread has used so far, in nanoseconds (`/proc/thread-self/schedstat`):
/// unlike wall time, it does not grow while the thread waits for a core.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine's load average over the last minute (`/proc/loadavg`): runnable and
/// uninterruptible tasks, against 2 cores here.
pub(crate) fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Peak resident set of this process so far, in MiB.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    status_kb("VmHWM").map(|kb| kb as f64 / 1024.0)
}

/// One line describing the machine: cores, memory, the disk holding `dir`.
pub(crate) fn machine(dir: &std::path::Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".to_owned(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    let disk = Command::new("df")
        .arg("--output=source,fstype,size")
        .arg("-h")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8(o.stdout)
                .ok()?
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "?".to_owned());
    format!("{cores} cores, {mem} memory, temp dir on {disk}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(rounds: u64) -> u64 {
        (0..rounds).fold(0u64, |a, i| a.wrapping_add(std::hint::black_box(i * i)))
    }

    #[test]
    fn a_thread_that_ends_between_two_readings_takes_nothing_away() {
        let (go, stop) = std::sync::mpsc::channel::<()>();
        let (spun, done) = std::sync::mpsc::channel::<u64>();
        // Uses more CPU before the first reading than this thread does between the two.
        let helper = std::thread::spawn(move || {
            let _ = spun.send(spin(20_000_000));
            let _ = stop.recv();
        });
        assert!(done.recv().unwrap() > 0);
        let before = Usage::now();
        go.send(()).unwrap();
        helper.join().unwrap();
        assert!(spin(200_000) > 0);
        let mut report = crate::report::Report::default();
        Usage::now().report_since(
            &before,
            1,
            |metric, value, unit| crate::report::Metric::new("t", metric, value, unit),
            &mut report,
        );
        let total = report.values("t", "", "cpu_us_total_per_unit");
        assert!(total[0].1 > 0.0, "{total:?}");
    }

    #[test]
    fn reads_its_own_peak_rss() {
        let peak = peak_rss_mib().unwrap();
        assert!(peak > 0.0);
        assert!(status_kb("VmRSS").unwrap() > 0);
        assert!(load_1m().unwrap() >= 0.0);
        let before = thread_cpu_ns().unwrap();
        // black_box: an optimised build would otherwise fold the loop into a constant.
        let spin = (0..1_000_000u64).fold(0u64, |a, i| std::hint::black_box(a.wrapping_add(i * i)));
        assert!(spin > 0 && thread_cpu_ns().unwrap() > before);
    }
}
