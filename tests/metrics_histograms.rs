//! Histogram samples are counted when they are recorded: none is lost to a
//! scrape running beside the writers, and an instance nobody scrapes does
//! not grow with every push. A test binary of its own: it measures the whole
//! process's memory, which other tests running beside it would disturb.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use metrics::Recorder as _;
use qrlogin::telemetry::Recorder;

/// This process's resident memory in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{prefix} in {text}"))
}

#[test]
fn every_sample_is_counted_while_scrapes_run_and_memory_stays_flat() {
    const WRITERS: usize = 2;
    const EACH: usize = 4_000_000;
    let recorder = Recorder::new(&[0.001, 0.01, 0.1]);
    let handle = recorder.handle();
    let key = metrics::Key::from_name("test_push_latency_seconds");
    let metadata = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
    let start = Arc::new(Barrier::new(WRITERS + 2));
    let done = Arc::new(AtomicBool::new(false));
    // Scrapes as fast as it can while the writers write: the exporter's own
    // histograms lost 36,929 of 8,000,000 samples to a fold every 10 ms.
    let scraper = {
        let (handle, start, done) = (handle.clone(), start.clone(), done.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut scrapes = 0u32;
            while !done.load(Ordering::Relaxed) {
                std::hint::black_box(handle.render());
                scrapes += 1;
            }
            scrapes
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let histogram = recorder.register_histogram(&key, &metadata);
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for i in 0..EACH {
                    // Both fall only in +Inf and add up exactly in binary,
                    // so the sum can be checked to the last sample.
                    histogram.record(if i % 2 == 0 { 0.25 } else { 0.5 });
                }
            })
        })
        .collect();
    let before = rss_kib();
    start.wait();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    let grown = rss_kib().saturating_sub(before);
    // Kept as samples, the 8,000,000 took 127 MiB in the exporter's
    // histograms when nothing folded them.
    assert!(grown < 4 * 1024, "grew by {grown} KiB");
    assert!(
        scrapes > 10,
        "only {scrapes} scrapes ran beside the writers"
    );
    let text = handle.render();
    let name = "test_push_latency_seconds";
    assert_eq!(line(&text, &format!("{name}_count ")), "8000000", "{text}");
    assert_eq!(line(&text, &format!("{name}_sum ")), "3000000", "{text}");
    assert_eq!(line(&text, &format!("{name}_bucket{{le=\"0.1\"}} ")), "0");
    assert_eq!(
        line(&text, &format!("{name}_bucket{{le=\"+Inf\"}} ")),
        "8000000"
    );
}
