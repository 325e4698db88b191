//! `soak`: N browsers for a long while, each living through ticket after
//! ticket, with a seeded random fate for every ticket — confirmed or denied
//! through the trusted API after a random delay, left to expire, reconnected
//! mid-wait (possibly to another instance), or dropped abruptly (no close
//! frame). When a ticket ends the browser starts the next one, as the login
//! page renews its code, so about N sockets stay open throughout.
//!
//! What is checked, per connection: exactly one terminal frame, and the one
//! the generator caused (`confirmed` with a token only if its confirm was
//! accepted, `denied` only if its deny was, else `expired`). A connection
//! the server ends without a terminal frame (1012 while an instance stops,
//! a reset when it is killed) is reopened — to another instance first,
//! retried with backoff while refused or while the store is down — and the
//! new connection must show the final state. Confirms and denies answered
//! 503 (store down) are retried, as a product backend would, until accepted
//! or too close to the ticket's end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::browser::{self, Created, OpenError, Ws};
use crate::http::Pool;
use crate::net::Sources;
use crate::report::{Latencies, open_fds, rss_kib};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Browsers (each holds one socket most of the time).
    #[arg(short = 'n', long, default_value_t = 2_000)]
    pub sockets: usize,
    /// Seconds during which browsers start new tickets (then a drain).
    #[arg(short = 'd', long, default_value = "60", value_parser = crate::seconds)]
    pub duration: Duration,
    /// Browsers started per second at the beginning.
    #[arg(long, default_value_t = 1_000.0)]
    pub ramp: f64,
    /// Seed of every random choice (`clock`: one from the clock; printed).
    #[arg(long, default_value = "clock", value_parser = seed)]
    pub seed: u64,
    #[arg(long, env = "QRLOGIN_API_KEY")]
    pub api_key: String,
    /// Server process id(s) whose RSS and open files to read from /proc.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// A file holding a server's pid, re-read at every reading (for an
    /// instance restarted during the run).
    #[arg(long = "server-pid-file")]
    pub server_pid_files: Vec<PathBuf>,
    /// A file of `UNIX_MS NAME` lines, one per fault the driver caused,
    /// read at the end: the worst push around each is reported.
    #[arg(long = "fault-file")]
    pub fault_file: Option<PathBuf>,
    /// Seconds a terminal frame may take after an accepted confirm/deny
    /// (and after the ticket's expiry).
    #[arg(long, default_value = "10", value_parser = crate::seconds)]
    pub push_timeout: Duration,
    /// Seconds to wait after the last socket closed before reading the
    /// servers' memory and open files.
    #[arg(long, default_value = "5", value_parser = crate::seconds)]
    pub settle: Duration,
}

/// `--seed`: a number, or `clock` for one from the clock.
fn seed(text: &str) -> Result<u64, String> {
    if text == "clock" {
        return Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64));
    }
    text.parse().map_err(|e| format!("{e}"))
}

/// Pushes whose confirm/deny was sent from this long before a fault…
const FAULT_BEFORE: Duration = Duration::from_secs(1);
/// …to this long after it count as "after the fault".
const FAULT_AFTER: Duration = Duration::from_secs(30);

/// A confirm or deny is not sent (nor retried) this close to the ticket's
/// end: accepted that late, its push could race the expiry.
const LAST_ACTION_BEFORE_EXPIRY: Duration = Duration::from_secs(3);
/// A socket open or a request that takes longer than this counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// After a terminal frame, how long the server's close may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Counters

/// Everything counted, shared by every browser of this process.
#[derive(Default)]
struct Stats {
    tickets: AtomicU64,
    connections: AtomicU64,
    open_now: AtomicU64,
    open_peak: AtomicU64,
    // Fates drawn.
    fate_confirm: AtomicU64,
    fate_deny: AtomicU64,
    fate_expire: AtomicU64,
    fate_drop: AtomicU64,
    planned_reconnects: AtomicU64,
    // Terminal states seen (first terminal frame of the ticket's last connection).
    seen_confirmed: AtomicU64,
    seen_denied: AtomicU64,
    seen_expired: AtomicU64,
    /// A reopen after the ticket's end answered 404: the contract's way to
    /// say "expired" to a late connection.
    seen_gone: AtomicU64,
    /// Terminal state as expected.
    matched: AtomicU64,
    /// No terminal frame at all (within the ticket's life plus the timeout).
    lost: AtomicU64,
    /// The terminal frame came, but later than `push_timeout` after the
    /// accepted confirm/deny.
    late: AtomicU64,
    duplicated: AtomicU64,
    mismatched: AtomicU64,
    // Connections the server ended without a terminal frame.
    closed_1012: AtomicU64,
    closed_other: AtomicU64,
    reset: AtomicU64,
    /// Reopened after such an end.
    reopened: AtomicU64,
    /// Socket opens refused (instance down, store down) and retried.
    open_retries: AtomicU64,
    create_retries: AtomicU64,
    // The product backend's side.
    actions_accepted: AtomicU64,
    action_retries: AtomicU64,
    /// Retried until too close to the ticket's end (it expires instead).
    actions_given_up: AtomicU64,
    /// 409 after an attempt whose answer was lost; `GET` showed ours won.
    resolved_by_get: AtomicU64,
    /// Browsers still busy when the run's hard end came.
    unfinished: AtomicU64,
    errors: Mutex<BTreeMap<String, (u64, String)>>,
    push: Mutex<Latencies>,
    /// Every push as (when its confirm/deny was sent, Unix ms; how long the
    /// terminal frame took, µs), for the figures around each fault.
    pushes: Mutex<Vec<(u64, u64)>>,
}

fn other_errors(errors: &BTreeMap<String, (u64, String)>) -> u64 {
    errors
        .iter()
        .filter(|(kind, _)| {
            !["lost", "late", "duplicated", "mismatched"]
                .iter()
                .any(|k| kind.starts_with(k))
        })
        .map(|(_, (n, _))| n)
        .sum()
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Stats {
    /// Something that should not happen, by kind, with its first example.
    fn error(&self, kind: &str, detail: String) {
        if ["lost", "late", "duplicated", "mismatched"]
            .iter()
            .any(|k| kind.starts_with(k))
        {
            // Rare, and each one worth reading.
            eprintln!("soak: {kind}: {detail}");
        }
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let entry = errors.entry(kind.to_owned()).or_insert((0, detail));
        entry.0 += 1;
    }

    /// Errors other than the lost, late, duplicated and mismatched states
    /// (those are in the map too, for their first example, but counted
    /// on their own).
    fn errors_total(&self) -> u64 {
        other_errors(&self.errors.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn opened(&self) {
        inc(&self.connections);
        let now = self.open_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_peak.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.open_now.fetch_sub(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The run

struct Ctx {
    servers: Vec<SocketAddr>,
    sources: Arc<Sources>,
    key: String,
    /// The login page's keep-alive connections (ticket creation).
    pages: Pool,
    /// The product backend's keep-alive connections (confirm, deny, status).
    backend: Pool,
    stats: Stats,
    /// No new tickets after this.
    stop_at: Instant,
    push_timeout: Duration,
    /// The wall clock (Unix ms) at `started`, to place pushes next to faults.
    started: (Instant, u64),
}

impl Ctx {
    fn unix_ms(&self, at: Instant) -> u64 {
        let (i0, ms0) = self.started;
        if at >= i0 {
            ms0 + (at - i0).as_millis() as u64
        } else {
            ms0.saturating_sub((i0 - at).as_millis() as u64)
        }
    }
}

impl Ctx {
    fn server_pids(args: &SoakArgs) -> Vec<u32> {
        let mut pids = args.server_pids.clone();
        for file in &args.server_pid_files {
            if let Some(pid) = std::fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
        pids
    }
}

/// RSS and open files of the servers at one moment.
#[derive(Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
}

fn sample(pids: &[u32]) -> Option<Sample> {
    Some(Sample {
        rss_kib: rss_kib(pids)?,
        fds: open_fds(pids)?,
    })
}

pub async fn run(servers: &[SocketAddr], sources: &Arc<Sources>, args: SoakArgs) -> bool {
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        servers: servers.to_vec(),
        sources: sources.clone(),
        key: args.api_key.clone(),
        pages: Pool::new(servers.len()),
        backend: Pool::new(servers.len()),
        stats: Stats::default(),
        stop_at: started + args.duration,
        push_timeout: args.push_timeout,
        started: (started, unix_now_ms()),
    });
    let pids_at_start = Ctx::server_pids(&args);
    let before = sample(&pids_at_start);
    println!(
        "soak: {} browsers for {} s against {} server(s), seed {}",
        args.sockets,
        args.duration.as_secs(),
        servers.len(),
        args.seed
    );
    if let Some(b) = before {
        println!(
            "soak: servers before: RSS {:.1} MiB, {} open files",
            b.rss_kib as f64 / 1024.0,
            b.fds
        );
    }

    let mut browsers = tokio::task::JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / args.ramp.max(1.0));
    let mut peak = before.unwrap_or_default();
    let mut next_report = started + Duration::from_secs(10);
    let mut ttl_seen = Duration::from_secs(120);
    let ttl_probe = Arc::new(AtomicU64::new(0));
    for idx in 0..args.sockets {
        sleep_until(started + interval * idx as u32).await;
        let (shared, probe) = (ctx.clone(), ttl_probe.clone());
        let seed = args.seed;
        browsers.spawn(async move { browser(shared, idx as u64, seed, probe).await });
        if Instant::now() >= ctx.stop_at {
            break;
        }
    }
    // Report every 10 s until the duration is over, then drain: each
    // browser finishes its current ticket (at most its TTL plus the push
    // timeout, plus reconnect retries), then stops.
    let mut drain_end: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let ttl_s = ttl_probe.load(Ordering::Relaxed);
        if ttl_s > 0 {
            ttl_seen = Duration::from_secs(ttl_s);
        }
        if now >= ctx.stop_at && drain_end.is_none() {
            let end = now + ttl_seen + args.push_timeout + Duration::from_secs(30);
            println!(
                "soak: {} s done; draining (browsers finish their tickets, at most {} s)",
                args.duration.as_secs(),
                (end - now).as_secs()
            );
            drain_end = Some(end);
        }
        if drain_end.is_some_and(|end| now >= end) {
            let left = browsers.len() as u64;
            ctx.stats.unfinished.fetch_add(left, Ordering::Relaxed);
            browsers.abort_all();
            while browsers.join_next().await.is_some() {}
            break;
        }
        let wake = next_report.min(drain_end.unwrap_or(ctx.stop_at).max(now));
        tokio::select! {
            done = browsers.join_next() => {
                if done.is_none() {
                    break;
                }
                continue;
            }
            _ = sleep_until(wake.max(now + Duration::from_millis(1))) => {}
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            let s = sample(&Ctx::server_pids(&args));
            if let Some(s) = s {
                peak.rss_kib = peak.rss_kib.max(s.rss_kib);
                peak.fds = peak.fds.max(s.fds);
            }
            progress(&ctx.stats, started, s);
        }
    }
    ctx.pages.clear();
    ctx.backend.clear();
    println!(
        "soak: every browser done after {:.0} s; waiting {} s before reading the servers",
        started.elapsed().as_secs_f64(),
        args.settle.as_secs()
    );
    sleep(args.settle).await;
    let pids_at_end = Ctx::server_pids(&args);
    let after = sample(&pids_at_end);
    if pids_at_end != pids_at_start {
        println!(
            "soak: server pids changed during the run ({pids_at_start:?} → {pids_at_end:?}): an instance restarted, so 'before' was read from the earlier process"
        );
    }
    report(&ctx.stats, &args, started, before, peak, after)
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The faults of `file` (`UNIX_MS NAME` lines; others skipped), in order.
fn read_faults(file: &std::path::Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut faults: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let (ms, name) = l.trim().split_once(' ')?;
            let name: String = name
                .trim()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            Some((ms.parse().ok()?, name))
        })
        .collect();
    faults.sort();
    faults
}

/// For each fault: how many pushes had their confirm/deny sent from
/// `FAULT_BEFORE` before it to `FAULT_AFTER` after it, and the slowest of
/// them (ms), as RESULT fields `after_NAME_pushes=… after_NAME_push_max_ms=…`.
fn fault_fields(faults: &[(u64, String)], pushes: &[(u64, u64)]) -> (Vec<String>, String) {
    let mut lines = Vec::new();
    let mut fields = Vec::new();
    for (at, name) in faults {
        let from = at.saturating_sub(FAULT_BEFORE.as_millis() as u64);
        let to = at + FAULT_AFTER.as_millis() as u64;
        let around: Vec<u64> = pushes
            .iter()
            .filter(|(sent, _)| (from..to).contains(sent))
            .map(|(_, us)| *us)
            .collect();
        let max_ms = around.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
        lines.push(format!(
            "soak: after {name}: {} pushes (confirm/deny sent from {} s before to {} s after it), slowest {max_ms:.3} ms",
            around.len(),
            FAULT_BEFORE.as_secs(),
            FAULT_AFTER.as_secs()
        ));
        fields.push(format!(
            "after_{name}_pushes={} after_{name}_push_max_ms={max_ms:.3}",
            around.len()
        ));
    }
    (lines, fields.join(" "))
}

fn progress(s: &Stats, started: Instant, server: Option<Sample>) {
    println!(
        "soak: {:>4} s: {} open, {} tickets, {} ended as expected, {} lost, {} late, {} duplicated, {} mismatched, {} errors; {} 1012 + {} resets reopened; {} retries{}",
        started.elapsed().as_secs(),
        get(&s.open_now),
        get(&s.tickets),
        get(&s.matched),
        get(&s.lost),
        get(&s.late),
        get(&s.duplicated),
        get(&s.mismatched),
        s.errors_total(),
        get(&s.closed_1012),
        get(&s.reset),
        get(&s.action_retries) + get(&s.create_retries) + get(&s.open_retries),
        server
            .map(|x| format!(
                "; servers RSS {:.1} MiB, {} files",
                x.rss_kib as f64 / 1024.0,
                x.fds
            ))
            .unwrap_or_default()
    );
}

fn report(
    s: &Stats,
    args: &SoakArgs,
    started: Instant,
    before: Option<Sample>,
    peak: Sample,
    after: Option<Sample>,
) -> bool {
    let errors = s.errors.lock().unwrap_or_else(|p| p.into_inner());
    let push = s.push.lock().unwrap_or_else(|p| p.into_inner());
    let faults = args
        .fault_file
        .as_deref()
        .map(read_faults)
        .unwrap_or_default();
    let (fault_lines, fault_fields) =
        fault_fields(&faults, &s.pushes.lock().unwrap_or_else(|p| p.into_inner()));
    println!(
        "soak: {} tickets on {} connections in {:.0} s (seed {}); peak {} sockets open",
        get(&s.tickets),
        get(&s.connections),
        started.elapsed().as_secs_f64(),
        args.seed,
        get(&s.open_peak)
    );
    println!(
        "soak: fates: {} confirm, {} deny, {} expire, {} abrupt drop; {} planned reconnects",
        get(&s.fate_confirm),
        get(&s.fate_deny),
        get(&s.fate_expire),
        get(&s.fate_drop),
        get(&s.planned_reconnects)
    );
    println!(
        "soak: terminal states seen: {} confirmed, {} denied, {} expired, {} gone (404 on a late reopen); {} as expected",
        get(&s.seen_confirmed),
        get(&s.seen_denied),
        get(&s.seen_expired),
        get(&s.seen_gone),
        get(&s.matched)
    );
    println!(
        "soak: LOST {}, LATE {}, DUPLICATED {}, MISMATCHED {}, unfinished {}",
        get(&s.lost),
        get(&s.late),
        get(&s.duplicated),
        get(&s.mismatched),
        get(&s.unfinished)
    );
    println!(
        "soak: server-ended connections: {} closed 1012, {} closed otherwise, {} reset; {} reopened ({} socket opens retried in all)",
        get(&s.closed_1012),
        get(&s.closed_other),
        get(&s.reset),
        get(&s.reopened),
        get(&s.open_retries)
    );
    println!(
        "soak: backend: {} confirms/denies accepted, {} retried attempts (503 or refused), {} given up near expiry, {} resolved by GET after a lost answer; {} ticket creations retried",
        get(&s.actions_accepted),
        get(&s.action_retries),
        get(&s.actions_given_up),
        get(&s.resolved_by_get),
        get(&s.create_retries)
    );
    println!(
        "soak: accepted confirm/deny → terminal frame: {}",
        push.summary()
    );
    for line in &fault_lines {
        println!("{line}");
    }
    for (kind, (n, first)) in errors.iter() {
        println!("soak: error {kind}: {n} (first: {first})");
    }
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "soak: servers: RSS {:.1} MiB before, {:.1} MiB peak, {:.1} MiB after; open files {} before, {} peak, {} after",
            b.rss_kib as f64 / 1024.0,
            peak.rss_kib as f64 / 1024.0,
            a.rss_kib as f64 / 1024.0,
            b.fds,
            peak.fds,
            a.fds
        );
    }
    let error_total = other_errors(&errors);
    let (b, a) = (before.unwrap_or_default(), after.unwrap_or_default());
    println!(
        "RESULT soak browsers={} duration_s={} seed={} tickets={} connections={} peak_open={} fate_confirm={} fate_deny={} fate_expire={} fate_drop={} planned_reconnects={} confirmed={} denied={} expired={} gone={} matched={} lost={} late={} duplicated={} mismatched={} unfinished={} errors={} closed_1012={} closed_other={} reset={} reopened={} open_retries={} accepted={} action_retries={} given_up={} resolved_by_get={} create_retries={} {} rss_before_kib={} rss_peak_kib={} rss_after_kib={} fds_before={} fds_peak={} fds_after={} {}",
        args.sockets,
        args.duration.as_secs(),
        args.seed,
        get(&s.tickets),
        get(&s.connections),
        get(&s.open_peak),
        get(&s.fate_confirm),
        get(&s.fate_deny),
        get(&s.fate_expire),
        get(&s.fate_drop),
        get(&s.planned_reconnects),
        get(&s.seen_confirmed),
        get(&s.seen_denied),
        get(&s.seen_expired),
        get(&s.seen_gone),
        get(&s.matched),
        get(&s.lost),
        get(&s.late),
        get(&s.duplicated),
        get(&s.mismatched),
        get(&s.unfinished),
        error_total,
        get(&s.closed_1012),
        get(&s.closed_other),
        get(&s.reset),
        get(&s.reopened),
        get(&s.open_retries),
        get(&s.actions_accepted),
        get(&s.action_retries),
        get(&s.actions_given_up),
        get(&s.resolved_by_get),
        get(&s.create_retries),
        push.fields("push_"),
        b.rss_kib,
        peak.rss_kib,
        a.rss_kib,
        b.fds,
        peak.fds,
        a.fds,
        fault_fields
    );
    get(&s.lost) == 0
        && get(&s.late) == 0
        && get(&s.duplicated) == 0
        && get(&s.mismatched) == 0
        && get(&s.unfinished) == 0
        && error_total == 0
}

// ---------------------------------------------------------------------------
// One browser

/// What becomes of one ticket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    Confirm,
    Deny,
    Expire,
    /// The browser vanishes without a close frame; the ticket is abandoned.
    Drop,
}

struct Fate {
    end: End,
    /// After creation: when to confirm, deny or drop.
    at: Duration,
    /// After creation: close the socket and open a new one (before `at`).
    reconnect_at: Option<Duration>,
    /// Drop with a TCP reset rather than a FIN.
    reset: bool,
}

impl Fate {
    fn draw(rng: &mut SmallRng, ttl: Duration) -> Self {
        let end = match rng.random_range(0..100) {
            0..40 => End::Confirm,
            40..60 => End::Deny,
            60..75 => End::Expire,
            _ => End::Drop,
        };
        // Actions land anywhere in the first 70 % of the lifetime, so they
        // stay clear of the expiry.
        let latest = ttl.mul_f64(0.7).max(Duration::from_millis(300));
        let at = match end {
            End::Expire => ttl,
            _ => Duration::from_millis(rng.random_range(200..=latest.as_millis() as u64)),
        };
        let reconnect_at = (end != End::Drop && rng.random_bool(0.3)).then(|| {
            let until = at.min(ttl.saturating_sub(Duration::from_secs(3)));
            Duration::from_millis(rng.random_range(100..=(until.as_millis() as u64).max(101)))
        });
        Self {
            end,
            at,
            reconnect_at,
            reset: rng.random_bool(0.5),
        }
    }
}

/// A ticket as the browser knows it.
struct Ticket {
    created: Created,
    /// The server's `expires_at` lies between these two.
    expires_earliest: Instant,
    expires_latest: Instant,
}

/// What the server said about the ticket at its end, on one connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seen {
    Confirmed { token: bool },
    Denied,
    Expired,
}

/// The product backend's confirm or deny, as it finally went.
#[derive(Debug)]
enum Action {
    /// When the request was sent, and when its 200 came back.
    Accepted(Instant, Instant),
    /// Not accepted before the last moment: the ticket will expire.
    GaveUp,
    /// Something the contract does not allow; expectations are unknown.
    Failed(String),
}

async fn browser(ctx: Arc<Ctx>, idx: u64, seed: u64, ttl_probe: Arc<AtomicU64>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ idx.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    while Instant::now() < ctx.stop_at {
        let Some(ticket) = create(&ctx, &mut rng).await else {
            break;
        };
        ttl_probe.store(ticket.created.expires_in, Ordering::Relaxed);
        let ttl = Duration::from_secs(ticket.created.expires_in);
        let fate = Fate::draw(&mut rng, ttl);
        life(&ctx, &mut rng, ticket, fate).await;
    }
}

/// Backoff with jitter for attempt `n` (0-based): 100 ms doubling to 2 s.
fn backoff(rng: &mut SmallRng, n: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.pow(n.min(5));
    base.min(Duration::from_secs(2))
        .mul_f64(rng.random_range(0.5..1.5))
}

/// The pause before attempt `n`: the backoff, or longer when the last
/// answer said `Retry-After` (spread over up to half as much again, so the
/// browsers one answer turned away do not all come back together).
fn pause(rng: &mut SmallRng, n: u32, retry_after: Option<u64>) -> Duration {
    let hinted = retry_after.map_or(Duration::ZERO, |s| {
        Duration::from_secs(s).mul_f64(rng.random_range(1.0..1.5))
    });
    backoff(rng, n).max(hinted)
}

/// `POST /api/v1/tickets` on a random instance, retried (another instance,
/// backoff) while refused or while the store is down.
async fn create(ctx: &Ctx, rng: &mut SmallRng) -> Option<Ticket> {
    let mut which = rng.random_range(0..ctx.servers.len());
    let mut retry_after = None;
    for attempt in 0u32.. {
        if Instant::now() >= ctx.stop_at {
            return None;
        }
        if attempt > 0 {
            inc(&ctx.stats.create_retries);
            which = (which + 1) % ctx.servers.len();
            sleep(pause(rng, attempt - 1, retry_after.take())).await;
        }
        let before = Instant::now();
        let answer = tokio::time::timeout(STEP_TIMEOUT, async {
            let mut conn = ctx.pages.take(which, &ctx.servers, &ctx.sources).await?;
            let r = conn.request("POST", "/api/v1/tickets", None, b"{}").await?;
            Ok::<_, std::io::Error>((conn, r))
        })
        .await;
        let after = Instant::now();
        let (conn, r) = match answer {
            Ok(Ok(pair)) => pair,
            // Refused, reset, or a stale keep-alive connection: retry.
            Ok(Err(_)) | Err(_) => continue,
        };
        match r.status {
            201 => {
                ctx.pages.give(which, conn);
                match serde_json::from_slice::<Created>(&r.body) {
                    Ok(created) => {
                        inc(&ctx.stats.tickets);
                        let ttl = Duration::from_secs(created.expires_in);
                        return Some(Ticket {
                            created,
                            expires_earliest: before + ttl,
                            expires_latest: after + ttl,
                        });
                    }
                    Err(e) => ctx.stats.error("create: bad body", e.to_string()),
                }
            }
            // Store down or instance busy (503): retry like a login page
            // would, after the Retry-After it asked for.
            503 => {
                retry_after = r.retry_after;
                ctx.pages.give(which, conn)
            }
            s => {
                ctx.stats.error(
                    &format!("create: HTTP {s}"),
                    String::from_utf8_lossy(&r.body).into_owned(),
                );
                ctx.pages.give(which, conn);
            }
        }
    }
    None
}

/// Open the ticket's socket on `*which` or, when refused, on the next
/// instances in turn, with backoff, until `until`. `Err(true)`: the
/// ticket is gone (404); `Err(false)`: out of time.
async fn open(
    ctx: &Ctx,
    rng: &mut SmallRng,
    t: &Ticket,
    which: &mut usize,
    until: Instant,
) -> Result<Ws, bool> {
    for attempt in 0u32.. {
        if attempt > 0 {
            inc(&ctx.stats.open_retries);
            *which = (*which + 1) % ctx.servers.len();
            let pause = backoff(rng, attempt - 1);
            if Instant::now() + pause >= until {
                return Err(false);
            }
            sleep(pause).await;
        }
        let server = ctx.servers[*which];
        let opened = tokio::time::timeout(
            STEP_TIMEOUT,
            browser::connect(server, &ctx.sources, &t.created.ticket, &t.created.secret),
        )
        .await;
        match opened {
            Ok(Ok(ws)) => {
                ctx.stats.opened();
                return Ok(ws);
            }
            Ok(Err(OpenError::Status(404))) => return Err(true),
            // Refused (instance down), 503 (store down), 429 (the old socket
            // of a reconnect not yet gone), a reset: try again.
            Ok(Err(OpenError::Connect(_) | OpenError::Status(503 | 429) | OpenError::Other(_)))
            | Err(_) => {}
            Ok(Err(OpenError::Status(s))) => {
                ctx.stats
                    .error(&format!("ws: HTTP {s}"), format!("upgrade on {server}"));
            }
        }
        if Instant::now() >= until {
            return Err(false);
        }
    }
    Err(false)
}

/// The next message of the socket, or never when there is none.
async fn next_msg(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn at(when: Option<Instant>) {
    match when {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn finished(action: &mut Option<JoinHandle<Action>>) -> Action {
    match action {
        Some(handle) => match handle.await {
            Ok(a) => a,
            Err(e) => Action::Failed(format!("action task: {e}")),
        },
        None => std::future::pending().await,
    }
}

/// The status of a state frame.
fn status_of(frame: &str) -> Option<&str> {
    let rest = frame.split_once(r#""status":""#)?.1;
    Some(rest.split_once('"')?.0)
}

fn terminal_of(frame: &str) -> Option<Seen> {
    match status_of(frame)? {
        "confirmed" => Some(Seen::Confirmed {
            token: browser::is_confirmed(frame),
        }),
        "denied" => Some(Seen::Denied),
        "expired" => Some(Seen::Expired),
        _ => None,
    }
}

/// How one connection ended, if it did.
enum ConnEnd {
    /// Still open.
    Open,
    /// Ended after its terminal frame (the normal way).
    AfterTerminal,
    /// Ended by the server (or a dead instance) before any terminal frame.
    Early,
}

/// One ticket, from its first socket to its end.
async fn life(ctx: &Arc<Ctx>, rng: &mut SmallRng, t: Ticket, fate: Fate) {
    let s = &ctx.stats;
    let born = t.expires_earliest - Duration::from_secs(t.created.expires_in);
    match fate.end {
        End::Confirm => inc(&s.fate_confirm),
        End::Deny => inc(&s.fate_deny),
        End::Expire => inc(&s.fate_expire),
        End::Drop => inc(&s.fate_drop),
    }
    let mut which = rng.random_range(0..ctx.servers.len());
    let expiry_deadline = t.expires_latest + ctx.push_timeout;
    let mut ws = match open(ctx, rng, &t, &mut which, expiry_deadline).await {
        Ok(ws) => Some(ws),
        Err(gone) => {
            if Instant::now() < t.expires_earliest {
                inc(&s.lost);
                s.error(
                    "lost: no socket before expiry",
                    format!("404={gone} for a ticket created {:?} ago", born.elapsed()),
                );
            } else {
                inc(&s.seen_gone);
                inc(&s.matched);
            }
            return;
        }
    };
    let mut action_at = match fate.end {
        End::Expire => None,
        _ => Some(born + fate.at),
    };
    let mut reconnect_at = fate.reconnect_at.map(|d| born + d);
    let mut action: Option<JoinHandle<Action>> = None;
    // (sent, answered) of the accepted confirm/deny.
    let mut accepted: Option<(Instant, Instant)> = None;
    let mut settled = false; // the action's outcome is known (or there is none)
    if fate.end == End::Expire {
        settled = true;
    }
    let mut given_up = false;
    let mut late = false;
    // Per connection.
    let mut terminals = 0u32;
    let mut seen: Option<(Seen, Instant)> = None;
    let mut close_by: Option<Instant> = None;

    loop {
        // After an accepted confirm/deny the frame is due within the push
        // timeout; past it we keep waiting (to tell late from lost) until
        // the ticket's own end.
        let late_at = accepted
            .map(|(_, answered)| answered + ctx.push_timeout)
            .filter(|_| !late);
        let lost_at =
            expiry_deadline.max(accepted.map_or(expiry_deadline, |(_, a)| a + ctx.push_timeout));
        let mut conn_end = ConnEnd::Open;
        tokio::select! {
            // In this order when several are ready: a reconnect drawn
            // before the action must happen before it.
            biased;
            msg = next_msg(&mut ws) => match msg {
                Some(Ok(Message::Text(text))) => {
                    let frame = text.as_str();
                    match terminal_of(frame) {
                        Some(what) => {
                            terminals += 1;
                            if terminals == 2 {
                                inc(&s.duplicated);
                                s.error("duplicated terminal frame", frame.to_owned());
                            }
                            if seen.is_none() {
                                seen = Some((what, Instant::now()));
                                close_by = Some(Instant::now() + CLOSE_TIMEOUT);
                            }
                        }
                        None if terminals > 0 => {
                            s.error("frame after the terminal one", frame.to_owned());
                        }
                        None if status_of(frame).is_none() => {
                            s.error("frame without a status", frame.to_owned());
                        }
                        None => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    if terminals > 0 {
                        if code != Some(1000) {
                            s.error("close after terminal not 1000", format!("{code:?}"));
                        }
                        conn_end = ConnEnd::AfterTerminal;
                    } else {
                        if code == Some(1012) {
                            inc(&s.closed_1012);
                        } else {
                            inc(&s.closed_other);
                        }
                        conn_end = ConnEnd::Early;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    if terminals > 0 {
                        conn_end = ConnEnd::AfterTerminal;
                    } else {
                        inc(&s.reset);
                        conn_end = ConnEnd::Early;
                    }
                }
            },
            _ = at(close_by) => {
                s.error("no close after the terminal frame", format!("{:?}", seen.map(|x| x.0)));
                conn_end = ConnEnd::AfterTerminal;
            }
            _ = at(reconnect_at), if seen.is_none() => {
                reconnect_at = None;
                inc(&s.planned_reconnects);
                if let Some(mut old) = ws.take() {
                    // A clean close; frames still in flight are read (and
                    // checked) on the way.
                    let _ = tokio::time::timeout(STEP_TIMEOUT, async {
                        let _ = old.close(None).await;
                        while let Some(Ok(m)) = old.next().await {
                            if let Message::Text(text) = m {
                                if seen.is_none() {
                                    seen = terminal_of(text.as_str()).map(|w| (w, Instant::now()));
                                }
                            }
                        }
                    })
                    .await;
                    s.closed();
                }
                if seen.is_some() {
                    // The ticket ended during the close: that connection saw it.
                    conn_end = ConnEnd::AfterTerminal;
                } else {
                    // Possibly to the other instance.
                    which = rng.random_range(0..ctx.servers.len());
                    match open(ctx, rng, &t, &mut which, lost_at).await {
                        Ok(new) => {
                            ws = Some(new);
                            terminals = 0;
                        }
                        Err(gone) => {
                            finish_without_socket(ctx, &t, gone, accepted, &mut action, settled).await;
                            return;
                        }
                    }
                }
            }
            _ = at(action_at) => {
                action_at = None;
                match fate.end {
                    End::Drop => {
                        if let Some(old) = ws.take() {
                            if fate.reset {
                                let _ = old.get_ref().set_zero_linger();
                            }
                            drop(old);
                            s.closed();
                        }
                        return;
                    }
                    End::Confirm | End::Deny => {
                        let ctx = ctx.clone();
                        let id = t.created.ticket.clone();
                        let cutoff = t.expires_earliest - LAST_ACTION_BEFORE_EXPIRY;
                        let deny = fate.end == End::Deny;
                        let first = rng.random_range(0..ctx.servers.len());
                        let seed = rng.random::<u64>();
                        action = Some(tokio::spawn(async move {
                            act(&ctx, &id, deny, cutoff, first, seed).await
                        }));
                    }
                    End::Expire => {}
                }
            }
            done = finished(&mut action) => {
                action = None;
                settled = true;
                match done {
                    Action::Accepted(sent, answered) => accepted = Some((sent, answered)),
                    Action::GaveUp => given_up = true,
                    Action::Failed(e) => s.error("backend action", e),
                }
            }
            _ = at(late_at), if seen.is_none() => {
                late = true;
            }
            _ = sleep_until(lost_at), if seen.is_none() => {
                inc(&s.lost);
                s.error(
                    "lost: no terminal frame in time",
                    format!(
                        "{:?} (accepted: {})",
                        fate.end,
                        accepted.is_some()
                    ),
                );
                if ws.take().is_some() {
                    s.closed();
                }
                return;
            }
        }
        match conn_end {
            ConnEnd::Open => {}
            ConnEnd::AfterTerminal => {
                if ws.take().is_some() {
                    s.closed();
                }
                // The frame may come before the backend's answer: wait for it.
                if let Some(handle) = action.take().filter(|_| !settled) {
                    match tokio::time::timeout(Duration::from_secs(30), handle).await {
                        Ok(Ok(Action::Accepted(sent, answered))) => {
                            accepted = Some((sent, answered))
                        }
                        Ok(Ok(Action::GaveUp)) => given_up = true,
                        Ok(Ok(Action::Failed(e))) => s.error("backend action", e),
                        Ok(Err(e)) => s.error("backend action", e.to_string()),
                        Err(_) => s.error("backend action", "no answer in 30 s".into()),
                    }
                }
                if let Some((what, when)) = seen {
                    if late {
                        inc(&s.late);
                        s.error(
                            "late: terminal frame after the push timeout",
                            format!(
                                "{what:?} {:?} after the accepted {:?}",
                                accepted.map(|(_, a)| when.saturating_duration_since(a)),
                                fate.end
                            ),
                        );
                    }
                    judge(ctx, &t, fate.end, accepted, given_up, what, when);
                }
                return;
            }
            ConnEnd::Early => {
                if ws.take().is_some() {
                    s.closed();
                }
                terminals = 0;
                close_by = None;
                // Any instance, at random (refused ones are retried on the
                // next): with two instances, sending every socket of a
                // stopping one to the other would put them all on one
                // process, past its open-file limit in this soak.
                which = rng.random_range(0..ctx.servers.len());
                match open(ctx, rng, &t, &mut which, lost_at).await {
                    Ok(new) => {
                        inc(&s.reopened);
                        ws = Some(new);
                    }
                    Err(gone) => {
                        finish_without_socket(ctx, &t, gone, accepted, &mut action, settled).await;
                        return;
                    }
                }
            }
        }
    }
}

/// A reopen found no socket: fine after the ticket's end without an
/// accepted confirm/deny (the contract answers 404 then), lost otherwise.
async fn finish_without_socket(
    ctx: &Ctx,
    t: &Ticket,
    gone: bool,
    mut accepted: Option<(Instant, Instant)>,
    action: &mut Option<JoinHandle<Action>>,
    settled: bool,
) {
    let s = &ctx.stats;
    if let Some(handle) = action.take().filter(|_| !settled) {
        if let Ok(Ok(Action::Accepted(sent, answered))) =
            tokio::time::timeout(Duration::from_secs(30), handle).await
        {
            accepted = Some((sent, answered));
        }
    }
    if gone && accepted.is_none() && Instant::now() >= t.expires_earliest {
        inc(&s.seen_gone);
        inc(&s.matched);
        return;
    }
    inc(&s.lost);
    s.error(
        "lost: no socket to see the final state",
        format!("404={gone}, accepted={}", accepted.is_some()),
    );
}

/// Compare the terminal state seen with what the generator did.
fn judge(
    ctx: &Ctx,
    t: &Ticket,
    end: End,
    accepted: Option<(Instant, Instant)>,
    given_up: bool,
    what: Seen,
    when: Instant,
) {
    let s = &ctx.stats;
    match what {
        Seen::Confirmed { .. } => inc(&s.seen_confirmed),
        Seen::Denied => inc(&s.seen_denied),
        Seen::Expired => inc(&s.seen_expired),
    }
    let expected = match (end, accepted) {
        (End::Confirm, Some(_)) => Seen::Confirmed { token: true },
        (End::Deny, Some(_)) => Seen::Denied,
        _ => Seen::Expired,
    };
    if what == expected {
        inc(&s.matched);
        if let Some((sent, _)) = accepted {
            let took = when.saturating_duration_since(sent);
            let mut push = s.push.lock().unwrap_or_else(|p| p.into_inner());
            push.record(took);
            drop(push);
            s.pushes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((ctx.unix_ms(sent), took.as_micros() as u64));
        }
    } else {
        inc(&s.mismatched);
        // Signed milliseconds relative to the ticket's expiry (earliest bound).
        let rel = |i: Instant| {
            if i >= t.expires_earliest {
                format!("+{}", (i - t.expires_earliest).as_millis())
            } else {
                format!("-{}", (t.expires_earliest - i).as_millis())
            }
        };
        s.error(
            "mismatched terminal state",
            format!(
                "{end:?} (accepted: {}, given up: {given_up}) but saw {what:?}; ms from expiry: sent {}, answered {}, frame {}",
                accepted.is_some(),
                accepted.map_or("-".into(), |(a, _)| rel(a)),
                accepted.map_or("-".into(), |(_, a)| rel(a)),
                rel(when)
            ),
        );
    }
}

/// The product backend confirms or denies `id` through the trusted API,
/// retrying (next instance, backoff) while refused or answered 503, until
/// accepted or `cutoff`.
async fn act(ctx: &Ctx, id: &str, deny: bool, cutoff: Instant, first: usize, seed: u64) -> Action {
    let mut rng = SmallRng::seed_from_u64(seed);
    let path = format!(
        "/api/v1/tickets/{id}/{}",
        if deny { "deny" } else { "confirm" }
    );
    let body: &[u8] = if deny { b"{}" } else { br#"{"sub":"soak"}"# };
    // An attempt whose answer never came may have been applied.
    let mut uncertain = false;
    let mut sent_last = Instant::now();
    let mut which = first;
    let mut retry_after = None;
    for attempt in 0u32.. {
        if attempt > 0 {
            inc(&ctx.stats.action_retries);
            which = (which + 1) % ctx.servers.len();
            sleep(pause(&mut rng, attempt - 1, retry_after.take())).await;
        }
        if Instant::now() >= cutoff {
            // An earlier attempt without an answer may have been applied
            // (a 503 whose Redis write went through, a reset after the
            // commit): look before calling it given up.
            if uncertain {
                let want = if deny { "denied" } else { "confirmed" };
                if status(ctx, id, which).await.as_deref() == Some(want) {
                    inc(&ctx.stats.resolved_by_get);
                    inc(&ctx.stats.actions_accepted);
                    return Action::Accepted(sent_last, Instant::now());
                }
            }
            inc(&ctx.stats.actions_given_up);
            return Action::GaveUp;
        }
        let sent = Instant::now();
        sent_last = sent;
        let answer = tokio::time::timeout(STEP_TIMEOUT, async {
            let mut conn = ctx.backend.take(which, &ctx.servers, &ctx.sources).await?;
            let r = conn.request("POST", &path, Some(&ctx.key), body).await?;
            Ok::<_, std::io::Error>((conn, r))
        })
        .await;
        let (conn, r) = match answer {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Ok(Err(_)) | Err(_) => {
                uncertain = true;
                continue;
            }
        };
        ctx.backend.give(which, conn);
        match r.status {
            200 => {
                inc(&ctx.stats.actions_accepted);
                return Action::Accepted(sent, Instant::now());
            }
            // The store did not answer; the change may or may not be in.
            503 => {
                uncertain = true;
                retry_after = r.retry_after;
            }
            409 if uncertain => {
                let want = if deny { "denied" } else { "confirmed" };
                return match status(ctx, id, which).await {
                    Some(now) if now == want => {
                        inc(&ctx.stats.resolved_by_get);
                        inc(&ctx.stats.actions_accepted);
                        Action::Accepted(sent, Instant::now())
                    }
                    other => Action::Failed(format!("409 after a lost answer, status {other:?}")),
                };
            }
            // Sent in time but answered after the expiry (a slow store).
            404 if Instant::now() >= cutoff + LAST_ACTION_BEFORE_EXPIRY => {
                inc(&ctx.stats.actions_given_up);
                return Action::GaveUp;
            }
            s => {
                return Action::Failed(format!(
                    "{path}: HTTP {s} {}",
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    Action::GaveUp
}

/// `GET /api/v1/tickets/{id}` → its status.
async fn status(ctx: &Ctx, id: &str, which: usize) -> Option<String> {
    let path = format!("/api/v1/tickets/{id}");
    for attempt in 0..10usize {
        let which = (which + attempt) % ctx.servers.len();
        let answer = tokio::time::timeout(STEP_TIMEOUT, async {
            let mut conn = ctx.backend.take(which, &ctx.servers, &ctx.sources).await?;
            let r = conn.request("GET", &path, Some(&ctx.key), b"").await?;
            Ok::<_, std::io::Error>((conn, r))
        })
        .await;
        if let Ok(Ok((conn, r))) = answer {
            ctx.backend.give(which, conn);
            if r.status == 200 {
                let text = String::from_utf8_lossy(&r.body);
                return status_of(&text).map(str::to_owned);
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_frames_are_recognised() {
        assert_eq!(
            terminal_of(r#"{"type":"state","status":"confirmed","token":"x.y.z"}"#),
            Some(Seen::Confirmed { token: true })
        );
        assert_eq!(
            terminal_of(r#"{"type":"state","status":"confirmed"}"#),
            Some(Seen::Confirmed { token: false })
        );
        assert_eq!(
            terminal_of(r#"{"type":"state","status":"denied"}"#),
            Some(Seen::Denied)
        );
        assert_eq!(
            terminal_of(r#"{"type":"state","status":"expired"}"#),
            Some(Seen::Expired)
        );
        assert_eq!(
            terminal_of(r#"{"type":"state","status":"pending","expires_at":"…"}"#),
            None
        );
    }

    #[test]
    fn fates_stay_clear_of_the_expiry() {
        let mut rng = SmallRng::seed_from_u64(7);
        let ttl = Duration::from_secs(30);
        for _ in 0..10_000 {
            let f = Fate::draw(&mut rng, ttl);
            if f.end != End::Expire {
                assert!(f.at <= ttl.mul_f64(0.7));
            }
            if let Some(r) = f.reconnect_at {
                assert!(r <= f.at && r < ttl);
            }
        }
    }
}
