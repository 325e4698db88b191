//! Latency percentiles (HdrHistogram, microseconds) and the server's memory,
//! open files and CPU time read from /proc.

use std::time::Duration;

use hdrhistogram::Histogram;

pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // 1 µs .. 60 s at 3 significant digits.
        Self(
            Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
            }),
        )
    }
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.0.record(us);
    }

    pub fn add(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// `p50 0.41 ms, p90 …, max …`
    pub fn summary(&self) -> String {
        if self.0.is_empty() {
            return "no samples".into();
        }
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.0.max() as f64 / 1000.0
        )
    }

    /// `p50_ms=… p90_ms=… …` for the machine-readable RESULT line.
    pub fn fields(&self, prefix: &str) -> String {
        format!(
            "{prefix}p50_ms={:.3} {prefix}p90_ms={:.3} {prefix}p99_ms={:.3} {prefix}p999_ms={:.3} {prefix}max_ms={:.3}",
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.0.max() as f64 / 1000.0
        )
    }
}

/// Resident memory of the given processes together, in KiB.
pub fn rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Open file descriptors of the given processes together (the entries of
/// /proc/<pid>/fd): every socket the server still holds is one.
pub fn open_fds(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for pid in pids {
        total += std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    }
    Some(total)
}

/// CPU time (user + system) the given processes have used so far, read
/// from /proc/<pid>/stat in clock ticks of 10 ms (Linux's USER_HZ).
pub fn cpu_time(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start at 3.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_millis(ticks * 10))
}

/// Server CPU per operation between two `cpu_time` readings, with what it
/// means for one core: contention-proof where wall-clock rates are not.
pub struct CpuPer {
    pub us: f64,
}

impl CpuPer {
    pub fn of(before: Option<Duration>, after: Option<Duration>, ops: u64) -> Option<Self> {
        let (b, a) = (before?, after?);
        (ops > 0).then(|| Self {
            us: a.saturating_sub(b).as_secs_f64() * 1e6 / ops as f64,
        })
    }

    pub fn per_core(&self) -> f64 {
        if self.us > 0.0 { 1e6 / self.us } else { 0.0 }
    }
}
