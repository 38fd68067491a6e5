//! The `ringway` command: run the proxy, or validate a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringway::config::{self, Config, LogFormat};
use ringway::control::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `0.1.0 (commit abc1234)`: which build is running, for bug reports and rollouts.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RINGWAY_COMMIT"),
    ")"
);

/// A thread-per-core HTTP/1.1 reverse proxy and load balancer on io_uring.
#[derive(Parser)]
#[command(version = VERSION, about, long_about = None)]
struct Cli {
    /// Configuration file (YAML) to run with.
    #[arg(short, long, global = true, default_value = "config.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default when no command is given).
    Run,
    /// Check a configuration file: exit 0 when valid, 1 with one `file:line:column: key:
    /// problem` line per problem found, in file order.
    Validate {
        /// The file to check (instead of `--config`).
        file: Option<PathBuf>,
    },
    /// Wait this many seconds, then exit 0: a Kubernetes preStop hook for the shell-less image
    /// (an `exec` hook works on every Kubernetes version; the `sleep` action needs 1.30+).
    Sleep { seconds: u64 },
}

fn main() -> ExitCode {
    ringway::worker::trim::no_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sleep { seconds }) => {
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            ExitCode::SUCCESS
        }
        Some(Command::Validate { file }) => {
            let path = file.unwrap_or(cli.config);
            match Config::load_all(&path) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} listeners, {} upstreams)",
                        path.display(),
                        c.listeners.len(),
                        c.upstreams.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(all) => {
                    for e in all {
                        eprintln!("{e}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Run) | None => match Config::load(&cli.config) {
            Ok(c) => run(c),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG overrides the configured level.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log.level.as_str()));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(config: Config) -> ExitCode {
    init_logging(&config);
    // Block the signals before any worker thread exists so only this thread receives them.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown_timeout = config.shutdown_timeout;
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("startup failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners: Vec<String> = server
        .listeners()
        .into_iter()
        .map(|(name, addr)| match addr {
            config::ListenAddr::Tcp(a) => format!("{name}={a}"),
            config::ListenAddr::Unix(p) => format!("{name}=unix/{}", p.display()),
        })
        .collect();
    tracing::info!(
        version = VERSION,
        workers = server.worker_count(),
        driver = server.driver().name(),
        listeners = %listeners.join(" "),
        admin = %server
            .admin_addr()
            .map_or_else(|| "off".to_string(), |a| a.to_string()),
        "ringway started"
    );
    for signal in signals.forever() {
        match signal {
            // Logged by the reload itself, success or failure.
            signal_hook::consts::SIGHUP => {
                let _ = server.reload();
            }
            _ => {
                tracing::info!(
                    timeout = ?shutdown_timeout,
                    "shutting down: no new connections, draining in-flight requests"
                );
                break;
            }
        }
    }
    server.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
