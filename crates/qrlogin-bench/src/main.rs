//! `qrlogin-bench`: the load generator behind the performance budgets.
//!
//! It plays many waiting browsers (`hold`), a product backend confirming
//! logins while they wait (`push`), whole logins back to back (`churn`),
//! and long runs of browsers whose tickets meet random fates (`soak`),
//! against one or more running instances on loopback only. Every
//! run is bounded in count and time and stops by itself; several generator
//! processes can run side by side (`--src-net` keeps their source
//! addresses apart). Each run ends with one `RESULT …` line for scripts.

mod browser;
mod churn;
mod hold;
mod http;
mod net;
mod push;
mod report;
mod soak;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "qrlogin-bench",
    about = "Load generator for qrlogin (loopback only)"
)]
struct Cli {
    /// A running instance (repeat for several); loopback addresses only.
    #[arg(long = "server", global = true, default_value = "127.0.0.1:8080")]
    servers: Vec<SocketAddr>,
    /// Second octet of the client source addresses 127.N.x.y.
    #[arg(long, global = true, default_value_t = 1)]
    src_net: u8,
    /// Hard stop for the whole run, in seconds (default 600; for `soak`,
    /// its duration plus 300).
    #[arg(long, global = true)]
    max_seconds: Option<u64>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hold N waiting browsers; report setup rate, latency and server RSS.
    Hold {
        #[arg(short = 'n', long, default_value_t = 10_000)]
        count: usize,
        #[arg(short = 'c', long, default_value_t = 64)]
        concurrency: usize,
        /// Server process id(s) whose RSS to read from /proc.
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
        /// Seconds to keep the sockets open before reading RSS.
        #[arg(long, default_value_t = 3)]
        hold_seconds: u64,
    },
    /// With N held, M confirms at a concurrency or a fixed rate.
    Push {
        #[arg(short = 'n', long, default_value_t = 10_000)]
        held: usize,
        #[arg(short = 'm', long, default_value_t = 10_000)]
        confirms: usize,
        #[arg(short = 'c', long, default_value_t = 64)]
        concurrency: usize,
        /// Confirms per second (instead of a concurrency).
        #[arg(short = 'r', long)]
        rate: Option<f64>,
        /// Concurrency of the setup before the pushes.
        #[arg(long, default_value_t = 64)]
        setup_concurrency: usize,
        #[arg(long, env = "QRLOGIN_API_KEY")]
        api_key: String,
        /// Seconds to wait for each push after its confirm.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Repeat hold + push this many times (fresh sockets each round).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Start confirming at this Unix time (several generators together).
        #[arg(long)]
        confirm_at: Option<u64>,
        /// Server process id(s) whose CPU time to read from /proc.
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
    },
    /// Full logins back to back for a while.
    Churn {
        #[arg(short = 'c', long, default_value_t = 64)]
        concurrency: usize,
        #[arg(short = 'd', long, default_value_t = 10)]
        duration: u64,
        /// Stop after this many logins even before the duration.
        #[arg(long, default_value_t = 1_000_000)]
        max_logins: u64,
        #[arg(long, env = "QRLOGIN_API_KEY")]
        api_key: String,
        /// Server process id(s) whose CPU time to read from /proc.
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
    },
    /// N browsers for a while, tickets with random fates (confirm, deny,
    /// expire, reconnect, abrupt drop); checks every terminal state.
    Soak {
        /// Browsers (each holds one socket most of the time).
        #[arg(short = 'n', long, default_value_t = 2_000)]
        sockets: usize,
        /// Seconds during which browsers start new tickets (then a drain).
        #[arg(short = 'd', long, default_value_t = 60)]
        duration: u64,
        /// Browsers started per second at the beginning.
        #[arg(long, default_value_t = 1_000.0)]
        ramp: f64,
        /// Seed of every random choice (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, env = "QRLOGIN_API_KEY")]
        api_key: String,
        /// Server process id(s) whose RSS and open files to read from /proc.
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
        /// A file holding a server's pid, re-read at every reading (for an
        /// instance restarted during the run).
        #[arg(long = "server-pid-file")]
        server_pid_files: Vec<PathBuf>,
        /// A file of `UNIX_MS NAME` lines, one per fault the driver caused,
        /// read at the end: the worst push around each is reported.
        #[arg(long = "fault-file")]
        fault_file: Option<PathBuf>,
        /// Seconds a terminal frame may take after an accepted confirm/deny
        /// (and after the ticket's expiry).
        #[arg(long, default_value_t = 10)]
        push_timeout: u64,
        /// Seconds to wait after the last socket closed before reading the
        /// servers' memory and open files.
        #[arg(long, default_value_t = 5)]
        settle: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = net::loopback_only(&cli.servers) {
        eprintln!("qrlogin-bench: {e}");
        return ExitCode::FAILURE;
    }
    // Every held socket is a file here too.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("qrlogin-bench: cannot raise the open-file limit: {e}");
    }
    // One thread: the generator is pinned to one core, like the server.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qrlogin-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sources = Arc::new(net::Sources::new(cli.src_net));
    let servers = cli.servers.clone();
    let limit = Duration::from_secs(cli.max_seconds.unwrap_or(match &cli.command {
        Cmd::Soak { duration, .. } => duration + 300,
        _ => 600,
    }));
    let ok = runtime.block_on(async move {
        let run = async {
            match cli.command {
                Cmd::Hold {
                    count,
                    concurrency,
                    server_pids,
                    hold_seconds,
                } => {
                    hold::run(
                        &servers,
                        &sources,
                        hold::HoldArgs {
                            count,
                            concurrency,
                            server_pids,
                            hold_for: Duration::from_secs(hold_seconds),
                        },
                    )
                    .await
                }
                Cmd::Push {
                    held,
                    confirms,
                    concurrency,
                    rate,
                    setup_concurrency,
                    api_key,
                    timeout,
                    rounds,
                    confirm_at,
                    server_pids,
                } => {
                    push::run(
                        &servers,
                        &sources,
                        push::PushArgs {
                            held,
                            confirms,
                            concurrency,
                            rate,
                            setup_concurrency,
                            api_key,
                            timeout: Duration::from_secs(timeout),
                            rounds,
                            confirm_at,
                            server_pids,
                        },
                    )
                    .await
                }
                Cmd::Churn {
                    concurrency,
                    duration,
                    max_logins,
                    api_key,
                    server_pids,
                } => {
                    churn::run(
                        &servers,
                        &sources,
                        churn::ChurnArgs {
                            concurrency,
                            duration: Duration::from_secs(duration),
                            max_logins,
                            api_key,
                            server_pids,
                        },
                    )
                    .await
                }
                Cmd::Soak {
                    sockets,
                    duration,
                    ramp,
                    seed,
                    api_key,
                    server_pids,
                    server_pid_files,
                    fault_file,
                    push_timeout,
                    settle,
                } => {
                    let seed = seed.unwrap_or_else(|| {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(1, |d| d.as_nanos() as u64)
                    });
                    soak::run(
                        &servers,
                        &sources,
                        soak::SoakArgs {
                            sockets,
                            duration: Duration::from_secs(duration),
                            ramp,
                            seed,
                            api_key,
                            server_pids,
                            server_pid_files,
                            push_timeout: Duration::from_secs(push_timeout),
                            settle: Duration::from_secs(settle),
                            fault_file,
                        },
                    )
                    .await
                }
            }
        };
        match tokio::time::timeout(limit, run).await {
            Ok(ok) => ok,
            Err(_) => {
                eprintln!(
                    "qrlogin-bench: stopped after --max-seconds {}",
                    limit.as_secs()
                );
                false
            }
        }
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
