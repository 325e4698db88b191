//! The process's metrics recorder: counters and gauges are kept by the
//! Prometheus exporter, histograms here, as fixed buckets of atomic counts
//! that a sample is added to when it is recorded.
//!
//! Why not the exporter's histograms: they keep every sample in a lock-free
//! list of blocks until something folds the list into buckets, and that
//! fold races with writers. A sample written into a block while the block is
//! taken is lost, and a block linked in while the list is taken is lost with
//! its 64 samples and never freed: 36,929 of 8,000,000 samples in a debug
//! build on a busy 2-core machine with a fold every 10 ms (CI, 2026-12-02).
//! Counted on record, a histogram loses nothing, its memory is fixed, and no
//! thread has to fold anything.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::ticket::{Provider, Status};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::formatting::{
    key_to_parts, sanitize_metric_name, write_help_line, write_metric_line, write_type_line,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// A `metrics` recorder; install it with `metrics::set_global_recorder`
/// and keep its [`MetricsHandle`] to render what it records.
pub struct Recorder {
    prometheus: PrometheusRecorder,
    histograms: Arc<Histograms>,
}

/// Renders everything a [`Recorder`] has recorded, in Prometheus's text
/// format.
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    histograms: Arc<Histograms>,
}

impl Recorder {
    /// Every histogram counts its samples into buckets with these upper
    /// bounds (inclusive, ascending), and `+Inf`.
    pub fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Self {
            prometheus: PrometheusBuilder::new().build_recorder(),
            histograms: Arc::new(Histograms {
                bounds: bounds.into(),
                by_key: RwLock::default(),
                described: RwLock::default(),
            }),
        }
    }

    pub fn handle(&self) -> MetricsHandle {
        MetricsHandle {
            prometheus: self.prometheus.handle(),
            histograms: self.histograms.clone(),
        }
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        let name = sanitize_metric_name(key.as_str());
        self.histograms
            .described
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.prometheus.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.prometheus.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.histograms.get_or_insert(key))
    }
}

impl MetricsHandle {
    /// Counters and gauges, then histograms, each histogram's series sorted
    /// by name and labels.
    pub fn render(&self) -> String {
        let mut out = self.prometheus.render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        self.histograms.render_into(&mut out);
        out
    }
}

/// One labelled counter's handles by provider and status, each looked up
/// in the recorder once, when first counted. A labelled `counter!` builds
/// its key and finds it in the registry on every call: a confirm's two
/// change counters cost it about 1,000 instructions that way
/// (docs/performance.md). Looked up when first counted rather than when
/// the table is made, so `/metrics` lists only what happened, as it does
/// for the macros.
pub struct ByProviderAndStatus {
    name: &'static str,
    handles: [[OnceLock<Counter>; Status::ALL.len()]; Provider::ALL.len()],
}

impl ByProviderAndStatus {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            handles: Default::default(),
        }
    }

    pub fn increment(&self, provider: Provider, status: Status) {
        let name = self.name;
        let register = || metrics::counter!(name, "provider" => provider.as_str(), "status" => status.as_str());
        // Indexed by the enums' discriminants; a variant beyond the table
        // (none today: the test below says so) is counted the slow way.
        match self
            .handles
            .get(provider as usize)
            .and_then(|row| row.get(status as usize))
        {
            Some(handle) => handle.get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }
}

struct Histograms {
    bounds: Arc<[f64]>,
    by_key: RwLock<HashMap<Key, Arc<Buckets>>>,
    /// `# HELP` texts, by sanitized name.
    described: RwLock<HashMap<String, SharedString>>,
}

impl Histograms {
    /// A read lock on the way of every sample (the macros register on each
    /// call); the write lock only for a key's first sample.
    fn get_or_insert(&self, key: &Key) -> Arc<Buckets> {
        let read = self.by_key.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = read.get(key) {
            return found.clone();
        }
        drop(read);
        let mut write = self.by_key.write().unwrap_or_else(PoisonError::into_inner);
        write
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Buckets::new(self.bounds.clone())))
            .clone()
    }

    fn render_into(&self, out: &mut String) {
        let by_key = self.by_key.read().unwrap_or_else(PoisonError::into_inner);
        let mut series: Vec<_> = by_key
            .iter()
            .map(|(key, buckets)| (key_to_parts(key, None), buckets.clone()))
            .collect();
        drop(by_key);
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let described = self
            .described
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for (i, ((name, labels), buckets)) in series.iter().enumerate() {
            if i == 0 || series[i - 1].0.0 != *name {
                if let Some(help) = described.get(name) {
                    write_help_line(out, name, help);
                }
                write_type_line(out, name, "histogram");
            }
            buckets.render_into(out, name, labels);
            if series.get(i + 1).is_none_or(|next| next.0.0 != *name) {
                out.push('\n');
            }
        }
    }
}

/// One histogram series: a count per bucket (the last one `+Inf`) and the
/// sum of all samples, as `f64` bits. A scrape reads the counts one after
/// another while samples may still arrive, so a bucket, the count and the
/// sum of one scrape can differ by the samples recorded during it.
struct Buckets {
    bounds: Arc<[f64]>,
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: Arc<[f64]>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts,
            sum: AtomicU64::new(0.0f64.to_bits()),
        }
    }

    fn render_into(&self, out: &mut String, name: &str, labels: &[String]) {
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            le.clear();
            match self.bounds.get(i) {
                Some(bound) => {
                    let _ = write!(le, "{bound}");
                }
                None => le.push_str("+Inf"),
            }
            let le = Some(("le", le.as_str()));
            write_metric_line(out, name, Some("bucket"), labels, le, cumulative, None);
        }
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        write_metric_line::<&str, f64>(out, name, Some("sum"), labels, None, sum, None);
        write_metric_line::<&str, u64>(out, name, Some("count"), labels, None, cumulative, None);
    }
}

impl HistogramFn for Buckets {
    /// A NaN belongs to no bucket and would make the sum NaN for ever, so
    /// it is not counted.
    fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some((f64::from_bits(sum) + value).to_bits())
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Recorder as _;

    fn metadata() -> Metadata<'static> {
        Metadata::new(module_path!(), metrics::Level::INFO, None)
    }

    #[test]
    fn a_counter_table_counts_every_provider_and_status_in_its_own_series() {
        let recorder = Recorder::new(&[]);
        let statuses = Status::ALL;
        metrics::with_local_recorder(&recorder, || {
            let table = ByProviderAndStatus::new("t_total");
            for (i, p) in Provider::ALL.into_iter().enumerate() {
                for s in statuses {
                    let cell = table
                        .handles
                        .get(p as usize)
                        .and_then(|r| r.get(s as usize));
                    assert!(cell.is_some(), "{p:?} {s:?} has its handle in the table");
                    for _ in 0..=i {
                        table.increment(p, s);
                    }
                }
            }
        });
        let text = recorder.handle().render();
        for (i, p) in Provider::ALL.into_iter().enumerate() {
            for s in statuses {
                let (p, s) = (p.as_str(), s.as_str());
                let line = format!("t_total{{provider=\"{p}\",status=\"{s}\"}} {}", i + 1);
                assert!(text.contains(&line), "{line} in {text}");
            }
        }
    }

    #[test]
    fn histograms_render_cumulative_inclusive_buckets_per_series() {
        let recorder = Recorder::new(&[1.0, 0.5, 2.5]);
        let plain = recorder.register_histogram(&Key::from_name("b_seconds"), &metadata());
        let labelled = Key::from_parts("a_seconds", &[("path", "x\"y"), ("outcome", "ok")]);
        let labelled = recorder.register_histogram(&labelled, &metadata());
        recorder.describe_histogram("b_seconds".into(), None, "How long b took.".into());
        for v in [0.5, 0.5, 0.75, 2.5, 3.0, f64::NAN] {
            plain.record(v);
        }
        labelled.record(-1.0);
        assert_eq!(
            recorder.handle().render(),
            "# TYPE a_seconds histogram\n\
             a_seconds_bucket{path=\"x\\\"y\",outcome=\"ok\",le=\"0.5\"} 1\n\
             a_seconds_bucket{path=\"x\\\"y\",outcome=\"ok\",le=\"1\"} 1\n\
             a_seconds_bucket{path=\"x\\\"y\",outcome=\"ok\",le=\"2.5\"} 1\n\
             a_seconds_bucket{path=\"x\\\"y\",outcome=\"ok\",le=\"+Inf\"} 1\n\
             a_seconds_sum{path=\"x\\\"y\",outcome=\"ok\"} -1\n\
             a_seconds_count{path=\"x\\\"y\",outcome=\"ok\"} 1\n\
             \n\
             # HELP b_seconds How long b took.\n\
             # TYPE b_seconds histogram\n\
             b_seconds_bucket{le=\"0.5\"} 2\n\
             b_seconds_bucket{le=\"1\"} 3\n\
             b_seconds_bucket{le=\"2.5\"} 4\n\
             b_seconds_bucket{le=\"+Inf\"} 5\n\
             b_seconds_sum 7.25\n\
             b_seconds_count 5\n\
             \n"
        );
    }

    #[test]
    fn one_key_is_one_series_and_counters_still_render() {
        let recorder = Recorder::new(&[1.0]);
        let key = Key::from_parts("c_seconds", &[("k", "v")]);
        recorder.register_histogram(&key, &metadata()).record(0.1);
        recorder.register_histogram(&key, &metadata()).record(0.2);
        recorder
            .register_counter(&Key::from_name("d_total"), &metadata())
            .increment(3);
        let text = recorder.handle().render();
        assert!(
            text.contains("# TYPE d_total counter\nd_total 3\n"),
            "{text}"
        );
        assert!(text.contains("c_seconds_count{k=\"v\"} 2\n"), "{text}");
        assert_eq!(
            text.matches("# TYPE c_seconds histogram").count(),
            1,
            "{text}"
        );
    }
}
