//! `process_*` metrics as the Prometheus client libraries export them, read from /proc at
//! scrape time (nothing is kept or sampled in between).

use std::fmt::Write as _;

/// Fields of /proc/self/stat after the command name, counted from 1 as in proc(5) minus 2:
/// utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
const UTIME: usize = 14 - 3;
const STIME: usize = 15 - 3;
const STARTTIME: usize = 22 - 3;
const VSIZE: usize = 23 - 3;
const RSS: usize = 24 - 3;

#[derive(Debug, Default, PartialEq)]
pub struct Stat {
    pub cpu_seconds: f64,
    /// Seconds after boot.
    pub start_after_boot: f64,
    pub virtual_bytes: u64,
    pub resident_pages: u64,
}

/// Parses /proc/self/stat. The command name is in parentheses and may hold spaces, so fields
/// are counted after the last `)`.
pub fn parse_stat(text: &str, ticks_per_second: f64) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Stat {
        cpu_seconds: (num(UTIME)? + num(STIME)?) as f64 / ticks_per_second,
        start_after_boot: num(STARTTIME)? as f64 / ticks_per_second,
        virtual_bytes: num(VSIZE)?,
        resident_pages: num(RSS)?,
    })
}

/// The boot time (Unix seconds) from /proc/stat's `btime` line.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of open files from /proc/self/limits.
pub fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn gauge(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Appends the process families; any that /proc cannot tell (another OS, a locked-down
/// /proc) are left out rather than reported as zero.
pub fn render(out: &mut String) {
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let page = if page > 0 { page as u64 } else { 4096 };
    let read = |p: &str| std::fs::read_to_string(p).ok();
    if let Some(stat) = read("/proc/self/stat").and_then(|t| parse_stat(&t, ticks)) {
        gauge(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.cpu_seconds,
        );
        gauge(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (stat.resident_pages * page) as f64,
        );
        gauge(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stat.virtual_bytes as f64,
        );
        if let Some(btime) = read("/proc/stat").and_then(|t| parse_btime(&t)) {
            gauge(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                (btime as f64 + stat.start_after_boot).floor(),
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        let open = fds.count().saturating_sub(1);
        gauge(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open as f64,
        );
    }
    if let Some(max) = read("/proc/self/limits").and_then(|t| parse_max_fds(&t)) {
        gauge(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        // A command name with spaces and parentheses, as proc(5) allows.
        let stat = "4242 (ring way (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 \
                    3 0 12345 987654321 2048 18446744073709551615";
        assert_eq!(
            parse_stat(stat, 100.0),
            Some(Stat {
                cpu_seconds: 4.0,
                start_after_boot: 123.45,
                virtual_bytes: 987_654_321,
                resident_pages: 2048,
            })
        );
        assert_eq!(parse_stat("garbage", 100.0), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[test]
    fn this_process_reports_itself() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {out}"));
            let v: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
            // A fresh test thread may not have used a whole clock tick of CPU yet.
            let least = if name == "process_cpu_seconds_total" {
                0.0
            } else {
                1.0
            };
            assert!(v >= least, "{line}");
        }
    }
}
