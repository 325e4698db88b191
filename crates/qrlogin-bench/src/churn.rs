//! `churn`: whole logins back to back — create a ticket, open its socket,
//! read `pending`, confirm through the trusted API, read `confirmed` with
//! its token, then see the server's close — counted per second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::browser;
use crate::http::Conn;
use crate::net::Sources;
use crate::report::{CpuPer, Latencies, cpu_time};

#[derive(clap::Args)]
pub struct ChurnArgs {
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(short = 'd', long, default_value = "10", value_parser = crate::seconds)]
    pub duration: Duration,
    /// Stop after this many logins even before the duration.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_logins: u64,
    #[arg(long, env = "QRLOGIN_API_KEY")]
    pub api_key: String,
    /// Server process id(s) whose CPU time to read from /proc.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
}

#[derive(Default)]
struct WorkerOut {
    logins: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Latencies,
}

pub async fn run(servers: &[SocketAddr], sources: &Arc<Sources>, args: ChurnArgs) -> bool {
    let cpu_before = cpu_time(&args.server_pids);
    let started = Instant::now();
    let deadline = started + args.duration;
    let budget = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency.max(1) {
        let server = servers[w % servers.len()];
        let confirm_at = servers[(w + 1) % servers.len()];
        let (sources, key, budget) = (sources.clone(), args.api_key.clone(), budget.clone());
        let max = args.max_logins;
        workers.spawn(async move {
            let mut out = WorkerOut::default();
            let mut browser_conn: Option<Conn> = None;
            let mut backend_conn: Option<Conn> = None;
            while Instant::now() < deadline && budget.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                match login(
                    server,
                    confirm_at,
                    &sources,
                    &key,
                    &mut browser_conn,
                    &mut backend_conn,
                )
                .await
                {
                    Ok(()) => {
                        out.logins += 1;
                        out.latency.record(t.elapsed());
                    }
                    Err(e) => {
                        browser_conn = None;
                        backend_conn = None;
                        out.errors += 1;
                        out.first_error.get_or_insert(e);
                    }
                }
            }
            out
        });
    }
    let mut total = WorkerOut::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(out) = done {
            total.logins += out.logins;
            total.errors += out.errors;
            total.latency.add(&out.latency);
            if total.first_error.is_none() {
                total.first_error = out.first_error;
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = CpuPer::of(cpu_before, cpu_time(&args.server_pids), total.logins);
    let per_s = total.logins as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "churn: {} full logins in {:.2} s at concurrency {} → {per_s:.0} logins/s; {} errors{}",
        total.logins,
        elapsed.as_secs_f64(),
        args.concurrency,
        total.errors,
        total
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!("churn: one login {}", total.latency.summary());
    if let Some(cpu) = &cpu {
        println!(
            "churn: server CPU {:.1} µs per login → {:.0} logins/s per server core",
            cpu.us,
            cpu.per_core()
        );
    }
    println!(
        "RESULT churn logins={} logins_per_s={per_s:.0} errors={} cpu_us={:.1} per_core={:.0} {}",
        total.logins,
        total.errors,
        cpu.as_ref().map_or(0.0, |c| c.us),
        cpu.as_ref().map_or(0.0, CpuPer::per_core),
        total.latency.fields("")
    );
    total.errors == 0
}

async fn login(
    server: SocketAddr,
    confirm_at: SocketAddr,
    sources: &Sources,
    key: &str,
    browser_conn: &mut Option<Conn>,
    backend_conn: &mut Option<Conn>,
) -> Result<(), String> {
    let conn = match browser_conn {
        Some(c) => c,
        None => browser_conn.insert(
            Conn::open(server, sources)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        ),
    };
    let created = browser::create(conn).await?;
    let (mut ws, first) = browser::open(server, sources, &created).await?;
    if !first.contains(r#""status":"pending""#) {
        return Err(format!("first frame is not pending: {first}"));
    }
    let backend = match backend_conn {
        Some(c) => c,
        None => backend_conn.insert(
            Conn::open(confirm_at, sources)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        ),
    };
    let path = format!("/api/v1/tickets/{}/confirm", created.ticket);
    let r = backend
        .request("POST", &path, Some(key), br#"{"sub":"churn"}"#)
        .await
        .map_err(|e| format!("confirm: {e}"))?;
    if r.status != 200 {
        return Err(format!("confirm: HTTP {}", r.status));
    }
    let frame = browser::next_text(&mut ws).await?;
    if !browser::is_confirmed(&frame) {
        return Err(format!("expected confirmed with a token, got {frame}"));
    }
    // The server closes after the final state; read to the end like a
    // browser would, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}
