//! The `qrlogin` binary: parse settings, then serve (or run a subcommand).

mod cli;

/// mimalloc rather than glibc's malloc: measured with `qrlogin-bench`, it
/// takes less CPU per login (glibc's `_int_malloc` and consolidation were a
/// visible part of a confirm) and less memory per idle socket; the figures
/// are in docs/performance.md. `qrlogin_alloc` says how it is called.
#[global_allocator]
static ALLOCATOR: qrlogin_alloc::MiMalloc = qrlogin_alloc::MiMalloc;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use qrlogin::Application;
use qrlogin::config::{Cli, Command, LogFormat, TokenCommand};

fn main() -> ExitCode {
    // Before the runtime starts its threads: mimalloc's option setters are
    // not thread-safe.
    qrlogin_alloc::configure();
    // What `#[tokio::main]` builds: the multi-thread scheduler, one worker
    // per CPU this process may use.
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("qrlogin: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let _ = dotenvy::dotenv();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    // Bad environment values are found here, all of them, named by their
    // variable; the rest parses without them (their defaults) so
    // `check-config` can list every other problem too.
    let env_problems = qrlogin::config::env_problems(&command, &args);
    for p in &env_problems {
        command = command.mut_arg(&p.id, |a| a.env(None::<&str>));
    }
    let matches = command.get_matches_from(&args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logs(cli.args.log_format);
    let command = cli.command.unwrap_or(Command::Serve);
    if !env_problems.is_empty() && !matches!(command, Command::CheckConfig | Command::Keygen { .. })
    {
        eprintln!("qrlogin: invalid settings:");
        for p in &env_problems {
            eprintln!("  - {}", p.text);
        }
        return ExitCode::FAILURE;
    }
    match command {
        Command::Serve => serve(cli.args).await,
        Command::CheckConfig => check_config(&cli.args, &matches, &env_problems),
        Command::Keygen { alg } => cli::keygen(alg),
        Command::Token {
            command:
                TokenCommand::Verify {
                    jwt,
                    jwks,
                    issuer,
                    audience,
                },
        } => cli::verify_token(&cli.args, &jwt, jwks.as_deref(), issuer, audience).await,
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: qrlogin::config::Args) -> ExitCode {
    qrlogin::app::raise_file_limit();
    let app = match Application::build(args).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("qrlogin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = app.state().settings.http.public_url();
    tracing::info!(port = app.port(), "qrlogin listening; open {url}/");
    match app.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qrlogin: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The effective settings (secrets redacted) and every problem, those of
/// unparsable values first; exit 1 on problems.
fn check_config(
    args: &qrlogin::config::Args,
    matches: &clap::ArgMatches,
    env_problems: &[qrlogin::config::EnvProblem],
) -> ExitCode {
    use std::io::Write;
    // Writes ignore a closed pipe (`| head`): the exit code still tells.
    let mut out = std::io::stdout().lock();
    // A variable that did not parse was left out (its default shows); say so.
    for line in qrlogin::config::describe(matches).lines() {
        let bad = env_problems.iter().find(|p| {
            line.strip_prefix(p.variable.as_str())
                .is_some_and(|rest| rest.starts_with('='))
        });
        match bad {
            Some(p) => writeln!(out, "{}=<invalid>  (environment)", p.variable),
            None => writeln!(out, "{line}"),
        }
        .ok();
    }
    for p in env_problems {
        let _ = writeln!(out, "problem: {}", p.text);
    }
    if let Some(path) = &args.oidc_clients_file {
        if let Ok(clients) = qrlogin::oidc::Clients::load(path) {
            let _ = writeln!(out, "{}", clients.describe());
        }
    }
    let problems = qrlogin::Settings::parse(args).err().unwrap_or_default();
    for p in &problems {
        let _ = writeln!(out, "problem: {p}");
    }
    if problems.is_empty() && env_problems.is_empty() {
        let _ = writeln!(out, "configuration OK");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("stopping: closing sockets with 1012");
}
