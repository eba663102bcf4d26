//! What the process and the machine look like: peak resident memory, cores, memory, disk.

use std::process::Command;

/// A field of `/proc/self/status` in kB (`VmHWM` is the peak resident set, `VmRSS` the current).
pub(crate) fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
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

    #[test]
    fn reads_its_own_peak_rss() {
        let peak = peak_rss_mib().unwrap();
        assert!(peak > 0.0);
        assert!(status_kb("VmRSS").unwrap() > 0);
    }
}
