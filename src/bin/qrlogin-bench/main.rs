//! `qrlogin-bench`: the load generator behind the performance budgets.
//!
//! It plays many waiting browsers (`hold`), a product backend confirming
//! logins while they wait (`push`), and whole logins back to back
//! (`churn`), against one or more running instances on loopback only. Every
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

use std::net::SocketAddr;
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
    /// Hard stop for the whole run, in seconds.
    #[arg(long, global = true, default_value_t = 600)]
    max_seconds: u64,
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
    let limit = Duration::from_secs(cli.max_seconds);
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
