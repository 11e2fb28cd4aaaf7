//! CPU time and peak memory of the processes under test, read from `/proc`.
//!
//! A process is recognised by its name (`/proc/<pid>/comm`, which the kernel cuts to 15
//! bytes): every process of one name is summed, so Postgres' backends all count as
//! `postgres`. Apache Kafka, a `java` process, is recognised by its main class and counts as
//! `broker`, as Tansu does. CPU is user plus system time in clock ticks; memory is `VmHWM`, the peak
//! resident set since the process started.

use std::collections::BTreeMap;
use std::time::Duration;

/// The processes a benchmark accounts for, by the name the kernel gives them.
pub const WATCHED: &[(&str, &str)] = &[
    ("order-service", "order-service"),
    ("product-service", "product-service"),
    ("coupon-service", "coupon-service"),
    ("analytics-forwa", "analytics-forwarder"),
    ("sync-facade", "sync-facade"),
    ("data-platform-m", "data-platform-mock"),
    ("saga-broker", "broker"),
    ("tansu", "broker"),
    ("postgres", "postgres"),
];

/// Apache Kafka runs as `java`: its main class, `kafka.Kafka`, on its command line tells it
/// from other Java processes.
const KAFKA_MAIN_CLASS: &[u8] = b"kafka.Kafka";

/// The name a process is accounted under, if it is watched.
fn watched_name(comm: &str, proc_dir: &std::path::Path) -> Option<&'static str> {
    if comm == "java" {
        let cmdline = std::fs::read(proc_dir.join("cmdline")).ok()?;
        return cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == KAFKA_MAIN_CLASS)
            .then_some("broker");
    }
    WATCHED
        .iter()
        .find(|(comm_name, _)| *comm_name == comm)
        .map(|(_, name)| *name)
}

/// What one named group of processes has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// The largest peak resident set of one process of the group, in bytes.
    pub peak_rss: u64,
}

/// Usage per watched name, for the names that have a running process.
pub fn sample() -> BTreeMap<&'static str, Usage> {
    let ticks = clock_ticks();
    let mut usage: BTreeMap<&'static str, Usage> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return usage;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let Some(name) = watched_name(comm.trim(), &path) else {
            continue;
        };
        let Some(cpu_ticks) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|stat| cpu_ticks(&stat))
        else {
            continue;
        };
        let peak = std::fs::read_to_string(path.join("status"))
            .ok()
            .and_then(|status| peak_rss(&status))
            .unwrap_or(0);
        let entry = usage.entry(name).or_default();
        entry.cpu += Duration::from_secs_f64(cpu_ticks as f64 / ticks as f64);
        entry.peak_rss = entry.peak_rss.max(peak);
    }
    usage
}

/// CPU used between two samples, per name; names that appeared in between count from zero.
pub fn cpu_between(
    before: &BTreeMap<&'static str, Usage>,
    after: &BTreeMap<&'static str, Usage>,
) -> BTreeMap<&'static str, Duration> {
    after
        .iter()
        .map(|(name, usage)| {
            let earlier = before.get(name).map(|u| u.cpu).unwrap_or_default();
            (*name, usage.cpu.saturating_sub(earlier))
        })
        .collect()
}

/// `utime + stime` from `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14 and stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` from `/proc/<pid>/status`, in bytes.
fn peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_name_even_with_spaces_in_it() {
        let stat = "42 (tokio (worker) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn peak_rss_is_read_in_bytes() {
        let status = "Name:\ttansu\nVmPeak:\t 9000 kB\nVmHWM:\t   15360 kB\nVmRSS:\t 12000 kB\n";
        assert_eq!(peak_rss(status), Some(15 * 1024 * 1024));
    }

    #[test]
    fn this_process_is_seen_by_the_sampler_when_watched() {
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_ticks(&own).is_some());
        assert!(clock_ticks() > 0);
    }
}
