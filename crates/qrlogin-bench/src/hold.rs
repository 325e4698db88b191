//! `hold`: N waiting browsers at a chosen concurrency. Each established
//! socket gets a reader task that answers pings, and — for `push` — times
//! the `confirmed` frame against the moment its confirm was sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::browser::{self, Ws};
use crate::http::Conn;
use crate::net::Sources;
use crate::report::{CpuPer, Latencies, cpu_time, rss_kib};

/// Shared by every reader task of one `hold`.
pub struct Board {
    t0: Instant,
    /// Per socket: nanoseconds after `t0` its confirm was sent (0 = not sent).
    sent: Vec<AtomicU64>,
    pub received: AtomicU64,
    /// Sockets that ended (or errored) before their push arrived.
    pub ended_early: AtomicU64,
    /// `confirmed` frames without a token, or other frames out of order.
    pub bad_frames: AtomicU64,
    pub push_latency: Mutex<Latencies>,
    close: watch::Sender<bool>,
    /// Reader tasks still running.
    pub open: AtomicU64,
}

impl Board {
    pub fn mark_sent(&self, idx: usize) {
        let ns = self.t0.elapsed().as_nanos() as u64;
        self.sent[idx].store(ns.max(1), Ordering::Release);
    }

    pub fn unmark(&self, idx: usize) {
        self.sent[idx].store(0, Ordering::Release);
    }

    fn latency_of(&self, idx: usize) -> Option<Duration> {
        let sent = self.sent[idx].load(Ordering::Acquire);
        (sent != 0).then(|| {
            Duration::from_nanos((self.t0.elapsed().as_nanos() as u64).saturating_sub(sent))
        })
    }
}

pub struct Held {
    pub board: Arc<Board>,
    /// Ticket id of each socket that was set up, by index.
    pub tickets: Vec<(usize, String)>,
    pub failures: u64,
    pub first_error: Option<String>,
    pub setup: Latencies,
    pub elapsed: Duration,
}

impl Held {
    pub fn setups_per_s(&self) -> f64 {
        self.tickets.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Close every socket (as a browser leaving would) and wait for the
    /// reader tasks to finish, at most `limit`.
    pub async fn close_all(&self, limit: Duration) {
        let _ = self.board.close.send(true);
        let deadline = Instant::now() + limit;
        while self.board.open.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub struct Plan<'a> {
    pub servers: &'a [SocketAddr],
    pub sources: &'a Arc<Sources>,
    pub count: usize,
    pub concurrency: usize,
}

/// Set up `count` waiting browsers, `concurrency` at a time; socket `i`
/// goes to server `i % servers`.
pub async fn establish(plan: Plan<'_>) -> Held {
    let (close, _) = watch::channel(false);
    let board = Arc::new(Board {
        t0: Instant::now(),
        sent: (0..plan.count).map(|_| AtomicU64::new(0)).collect(),
        received: AtomicU64::new(0),
        ended_early: AtomicU64::new(0),
        bad_frames: AtomicU64::new(0),
        push_latency: Mutex::new(Latencies::default()),
        close,
        open: AtomicU64::new(0),
    });
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (next, board, sources) = (next.clone(), board.clone(), plan.sources.clone());
        let servers = plan.servers.to_vec();
        let count = plan.count;
        workers.spawn(async move {
            let mut conns: Vec<Option<Conn>> = servers.iter().map(|_| None).collect();
            let mut out = WorkerOut::default();
            loop {
                let idx = next.fetch_add(1, Ordering::Relaxed) as usize;
                if idx >= count {
                    break;
                }
                let which = idx % servers.len();
                let t = Instant::now();
                match setup_one(servers[which], &sources, &mut conns[which]).await {
                    Ok((ws, ticket)) => {
                        out.setup.record(t.elapsed());
                        board.open.fetch_add(1, Ordering::AcqRel);
                        tokio::spawn(read_socket(ws, idx, board.clone()));
                        out.tickets.push((idx, ticket));
                    }
                    Err(e) => {
                        conns[which] = None;
                        out.failures += 1;
                        out.first_error.get_or_insert(e);
                    }
                }
            }
            out
        });
    }
    let mut held = Held {
        board,
        tickets: Vec::with_capacity(plan.count),
        failures: 0,
        first_error: None,
        setup: Latencies::default(),
        elapsed: Duration::ZERO,
    };
    while let Some(done) = workers.join_next().await {
        if let Ok(out) = done {
            held.tickets.extend(out.tickets);
            held.failures += out.failures;
            held.setup.add(&out.setup);
            if held.first_error.is_none() {
                held.first_error = out.first_error;
            }
        }
    }
    held.elapsed = start.elapsed();
    held.tickets.sort_unstable();
    held
}

#[derive(Default)]
struct WorkerOut {
    tickets: Vec<(usize, String)>,
    failures: u64,
    first_error: Option<String>,
    setup: Latencies,
}

async fn setup_one(
    server: SocketAddr,
    sources: &Sources,
    conn: &mut Option<Conn>,
) -> Result<(Ws, String), String> {
    if conn.is_none() {
        *conn = Some(
            Conn::open(server, sources)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let created = browser::create(c).await?;
    let (ws, first) = browser::open(server, sources, &created).await?;
    if !first.contains(r#""status":"pending""#) {
        return Err(format!("first frame is not pending: {first}"));
    }
    Ok((ws, created.ticket))
}

/// Hold one socket: answer pings, time the `confirmed` push, close on
/// request.
async fn read_socket(mut ws: Ws, idx: usize, board: Arc<Board>) {
    let mut close = board.close.subscribe();
    let mut pushed = false;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if browser::is_confirmed(t.as_str()) && !pushed {
                        pushed = true;
                        match board.latency_of(idx) {
                            Some(latency) => {
                                board.received.fetch_add(1, Ordering::AcqRel);
                                if let Ok(mut h) = board.push_latency.lock() {
                                    h.record(latency);
                                }
                            }
                            // A push nobody sent: count it, never time it.
                            None => { board.bad_frames.fetch_add(1, Ordering::Relaxed); }
                        }
                    } else if !t.as_str().contains(r#""status":"pending""#) {
                        board.bad_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            _ = async { let _ = close.wait_for(|c| *c).await; } => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                // Read until the server's close: the socket ends cleanly.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                break;
            }
        }
    }
    if !pushed {
        board.ended_early.fetch_add(1, Ordering::Relaxed);
    }
    board.open.fetch_sub(1, Ordering::AcqRel);
}

#[derive(clap::Args)]
pub struct HoldArgs {
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub count: usize,
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// Server process id(s) whose RSS to read from /proc.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Seconds to keep the sockets open before reading RSS.
    #[arg(long = "hold-seconds", value_name = "HOLD_SECONDS", default_value = "3", value_parser = crate::seconds)]
    pub hold_for: Duration,
}

/// The `hold` subcommand: set up, measure RSS, close, measure again.
pub async fn run(servers: &[SocketAddr], sources: &Arc<Sources>, args: HoldArgs) -> bool {
    let before = rss_kib(&args.server_pids);
    let cpu_before = cpu_time(&args.server_pids);
    let held = establish(Plan {
        servers,
        sources,
        count: args.count,
        concurrency: args.concurrency,
    })
    .await;
    let n = held.tickets.len();
    let cpu = CpuPer::of(cpu_before, cpu_time(&args.server_pids), n as u64);
    println!(
        "hold: {n} of {} sockets set up in {:.2} s at concurrency {} → {:.0} setups/s; {} failed{}",
        args.count,
        held.elapsed.as_secs_f64(),
        args.concurrency,
        held.setups_per_s(),
        held.failures,
        held.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!("hold: setup latency {}", held.setup.summary());
    if let Some(cpu) = &cpu {
        println!(
            "hold: server CPU {:.1} µs per setup → {:.0} setups/s per server core",
            cpu.us,
            cpu.per_core()
        );
    }
    // Let the server settle (allocator, timers) before reading its memory.
    tokio::time::sleep(args.hold_for).await;
    let during = rss_kib(&args.server_pids);
    let dropped = n as u64 - held.board.open.load(Ordering::Acquire);
    held.close_all(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(&args.server_pids);
    let per_socket = match (before, during) {
        (Some(b), Some(d)) if n > 0 => Some(d.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    if let (Some(b), Some(d), Some(a)) = (before, during, after) {
        println!(
            "hold: server RSS {:.1} MiB before, {:.1} MiB with {n} held ({:.2} KiB per socket), {:.1} MiB after closing",
            b as f64 / 1024.0,
            d as f64 / 1024.0,
            per_socket.unwrap_or(0.0),
            a as f64 / 1024.0
        );
    }
    println!(
        "RESULT hold held={n} failed={} dropped_while_held={dropped} setups_per_s={:.0} {} rss_before_kib={} rss_held_kib={} rss_after_kib={} kib_per_socket={:.2} cpu_us={:.1} per_core={:.0}",
        held.failures,
        held.setups_per_s(),
        held.setup.fields("setup_"),
        before.unwrap_or(0),
        during.unwrap_or(0),
        after.unwrap_or(0),
        per_socket.unwrap_or(0.0),
        cpu.as_ref().map_or(0.0, |c| c.us),
        cpu.as_ref().map_or(0.0, CpuPer::per_core)
    );
    held.failures == 0 && dropped == 0
}
