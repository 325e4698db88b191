//! `push`: with N browsers held, M confirms through the trusted API — at a
//! concurrency or at a fixed rate — each timed from the moment its request
//! is written to the moment its browser reads the `confirmed` frame.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hold::{Board, Plan, establish};
use crate::http::Pool;
use crate::net::Sources;
use crate::report::{CpuPer, Latencies, cpu_time};

#[derive(clap::Args)]
pub struct PushArgs {
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub held: usize,
    #[arg(short = 'm', long, default_value_t = 10_000)]
    pub confirms: usize,
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// Confirms per second (instead of a concurrency).
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Concurrency of the setup before the pushes.
    #[arg(long, default_value_t = 64)]
    pub setup_concurrency: usize,
    #[arg(long, env = "QRLOGIN_API_KEY")]
    pub api_key: String,
    /// Seconds to wait for each push after its confirm.
    #[arg(long, default_value = "10", value_parser = crate::seconds)]
    pub timeout: Duration,
    /// Repeat hold + push this many times (fresh sockets each round).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Start confirming at this Unix time (several generators together).
    #[arg(long)]
    pub confirm_at: Option<u64>,
    /// Server process id(s) whose CPU time to read from /proc.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
}

#[derive(Default)]
struct Totals {
    sent_ok: u64,
    errors: u64,
    first_error: Option<String>,
    received: u64,
    lost: u64,
    ended_early: u64,
    bad_frames: u64,
    latency: Latencies,
    /// Confirm request → HTTP response, for comparison.
    http: Latencies,
    busy: Duration,
    setup_failures: u64,
    held: u64,
    cpu: Duration,
}

pub async fn run(servers: &[SocketAddr], sources: &Arc<Sources>, args: PushArgs) -> bool {
    let mut totals = Totals::default();
    for round in 0..args.rounds.max(1) {
        let held = establish(Plan {
            servers,
            sources,
            count: args.held,
            concurrency: args.setup_concurrency,
        })
        .await;
        totals.setup_failures += held.failures;
        totals.held = totals.held.max(held.tickets.len() as u64);
        println!(
            "push: round {}: {} sockets held ({} failed), confirming {}",
            round + 1,
            held.tickets.len(),
            held.failures,
            args.confirms.min(held.tickets.len())
        );
        let targets: Vec<(usize, String)> =
            held.tickets.iter().take(args.confirms).cloned().collect();
        if let Some(at) = args.confirm_at {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let wait = Duration::from_secs(at).saturating_sub(now);
            println!(
                "push: waiting {:.1} s for the agreed start",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
        }
        let cpu_before = cpu_time(&args.server_pids);
        let started = Instant::now();
        let outcome = confirm_all(servers, sources, &held.board, &targets, &args).await;
        // Wait for the stragglers, bounded.
        let deadline = Instant::now() + args.timeout;
        while held.board.received.load(Ordering::Acquire) < outcome.sent_ok
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        totals.busy += started.elapsed().min(outcome.sending);
        if let (Some(b), Some(a)) = (cpu_before, cpu_time(&args.server_pids)) {
            totals.cpu += a.saturating_sub(b);
        }
        let received = held.board.received.load(Ordering::Acquire);
        totals.sent_ok += outcome.sent_ok;
        totals.errors += outcome.errors;
        if totals.first_error.is_none() {
            totals.first_error = outcome.first_error;
        }
        totals.received += received;
        totals.lost += outcome.sent_ok.saturating_sub(received);
        totals.http.add(&outcome.http);
        if let Ok(h) = held.board.push_latency.lock() {
            totals.latency.add(&h);
        }
        held.close_all(Duration::from_secs(30)).await;
        totals.ended_early += held
            .board
            .ended_early
            .load(Ordering::Relaxed)
            .saturating_sub((held.tickets.len() - targets.len()) as u64);
        totals.bad_frames += held.board.bad_frames.load(Ordering::Relaxed);
    }
    let per_s = totals.sent_ok as f64 / totals.busy.as_secs_f64().max(1e-9);
    let mode = match args.rate {
        Some(r) => format!("at a fixed {r:.0}/s"),
        None => format!("{} in flight", args.concurrency),
    };
    println!(
        "push: {} confirms {mode}: {per_s:.0} confirms/s; {} pushes received, {} lost, {} errors{}",
        totals.sent_ok,
        totals.received,
        totals.lost,
        totals.errors,
        totals
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "push: confirm sent → `confirmed` frame: {}",
        totals.latency.summary()
    );
    let cpu = (!args.server_pids.is_empty())
        .then(|| CpuPer::of(Some(Duration::ZERO), Some(totals.cpu), totals.sent_ok))
        .flatten();
    if let Some(cpu) = &cpu {
        println!(
            "push: server CPU {:.1} µs per confirm and push → {:.0} confirms/s per server core",
            cpu.us,
            cpu.per_core()
        );
    }
    println!(
        "push: confirm sent → HTTP response:     {}",
        totals.http.summary()
    );
    println!(
        "RESULT push held={} confirms={} confirms_per_s={per_s:.0} received={} lost={} errors={} setup_failures={} ended_early={} bad_frames={} cpu_us={:.1} per_core={:.0} {}",
        totals.held,
        totals.sent_ok,
        totals.received,
        totals.lost,
        totals.errors,
        totals.setup_failures,
        totals.ended_early,
        totals.bad_frames,
        cpu.as_ref().map_or(0.0, |c| c.us),
        cpu.as_ref().map_or(0.0, CpuPer::per_core),
        totals.latency.fields("")
    );
    totals.lost == 0 && totals.errors == 0 && totals.bad_frames == 0
}

struct Outcome {
    sent_ok: u64,
    errors: u64,
    first_error: Option<String>,
    http: Latencies,
    /// From the first confirm written to the last response read.
    sending: Duration,
}

/// Confirm `targets` on server `(i + 1) % servers` (another instance than
/// the socket's when there are several: the push must cross instances).
async fn confirm_all(
    servers: &[SocketAddr],
    sources: &Arc<Sources>,
    board: &Arc<Board>,
    targets: &[(usize, String)],
    args: &PushArgs,
) -> Outcome {
    let targets: Arc<Vec<(usize, String)>> = Arc::new(targets.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let pool = Arc::new(Pool::new(servers.len()));
    let shared = Arc::new(Mutex::new(Outcome {
        sent_ok: 0,
        errors: 0,
        first_error: None,
        http: Latencies::default(),
        sending: Duration::ZERO,
    }));
    let started = Instant::now();
    let job = || Job {
        servers: servers.to_vec(),
        sources: sources.clone(),
        board: board.clone(),
        pool: pool.clone(),
        shared: shared.clone(),
        key: args.api_key.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let workers = match args.rate {
        // Fixed rate: one task per confirm, started on schedule, using a
        // pool of keep-alive connections that grows as needed.
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
            for (k, target) in targets.iter().enumerate() {
                tokio::time::sleep_until((started + interval * k as u32).into()).await;
                let job = job();
                let target = target.clone();
                tasks.spawn(async move { job.confirm(target).await });
            }
            0
        }
        None => args.concurrency.max(1),
    };
    for _ in 0..workers {
        let job = job();
        let (targets, next) = (targets.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(target) = targets.get(k) else { break };
                job.confirm(target.clone()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut out = match Arc::try_unwrap(shared) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(arc) => {
            let mut g = arc.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(
                &mut *g,
                Outcome {
                    sent_ok: 0,
                    errors: 0,
                    first_error: None,
                    http: Latencies::default(),
                    sending: Duration::ZERO,
                },
            )
        }
    };
    out.sending = started.elapsed();
    out
}

struct Job {
    servers: Vec<SocketAddr>,
    sources: Arc<Sources>,
    board: Arc<Board>,
    pool: Arc<Pool>,
    shared: Arc<Mutex<Outcome>>,
    key: String,
}

impl Job {
    async fn confirm(&self, (idx, ticket): (usize, String)) {
        let which = (idx + 1) % self.servers.len();
        let conn = self.pool.take(which, &self.servers, &self.sources).await;
        let path = format!("/api/v1/tickets/{ticket}/confirm");
        let body = format!(r#"{{"sub":"bench-{idx}"}}"#);
        let result = match conn {
            Err(e) => Err(format!("connect: {e}")),
            Ok(mut conn) => {
                self.board.mark_sent(idx);
                let t = Instant::now();
                match conn
                    .request("POST", &path, Some(&self.key), body.as_bytes())
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        let took = t.elapsed();
                        self.pool.give(which, conn);
                        Ok(took)
                    }
                    Ok(r) => Err(format!(
                        "confirm: HTTP {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )),
                    Err(e) => Err(format!("confirm: {e}")),
                }
            }
        };
        let Ok(mut out) = self.shared.lock() else {
            return;
        };
        match result {
            Ok(took) => {
                out.sent_ok += 1;
                out.http.record(took);
            }
            Err(e) => {
                // Not a push we expect: a failed confirm is an error, not a loss.
                self.board.unmark(idx);
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
}
