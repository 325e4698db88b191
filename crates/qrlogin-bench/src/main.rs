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
mod floor;
mod hold;
mod http;
mod net;
mod push;
mod report;
mod soak;

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
    Hold(hold::HoldArgs),
    /// With N held, M confirms at a concurrency or a fixed rate.
    Push(push::PushArgs),
    /// Full logins back to back for a while.
    Churn(churn::ChurnArgs),
    /// N browsers for a while, tickets with random fates (confirm, deny,
    /// expire, reconnect, abrupt drop); checks every terminal state.
    Soak(soak::SoakArgs),
    /// Serve the contract's login exchange with canned bytes and no work:
    /// the floor a confirm costs on this runtime and kernel.
    Floor(floor::FloorArgs),
}

/// A whole number of seconds, as the subcommands' durations are given.
fn seconds(text: &str) -> Result<Duration, String> {
    text.parse()
        .map(Duration::from_secs)
        .map_err(|e| format!("{e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Floor(args) = cli.command {
        return if floor::run(args) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
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
        Cmd::Soak(args) => args.duration.as_secs() + 300,
        _ => 600,
    }));
    let ok = runtime.block_on(async move {
        let run = async {
            match cli.command {
                Cmd::Hold(args) => hold::run(&servers, &sources, args).await,
                Cmd::Push(args) => push::run(&servers, &sources, args).await,
                Cmd::Churn(args) => churn::run(&servers, &sources, args).await,
                Cmd::Soak(args) => soak::run(&servers, &sources, args).await,
                Cmd::Floor(_) => unreachable!("served above"),
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
