//! `node-agent`: the per-node mesh agent (flags as in DESIGN.md).
//!
//! `node-agent check-config FILE` validates a config offline. Serving is
//! not built yet (issue #4): with `--config` the binary validates the
//! config, says so, and exits with status 2 instead of pretending to serve.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "node-agent",
    version,
    about = "tailmesh per-node service-mesh agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (YAML, or JSON if it ends in .json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads (default: CPU count).
    #[arg(long)]
    workers: Option<usize>,
    /// I/O driver; auto probes io_uring and falls back to epoll.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Admin listener (/metrics, /ready, /healthz, /config).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: String,
    /// How long SIGTERM waits for in-flight requests.
    #[arg(long, default_value = "5s")]
    drain_timeout: String,
    /// etcd endpoints, comma separated (config from etcd, watched).
    #[arg(long)]
    etcd: Option<String>,
    /// etcd key prefix.
    #[arg(long, default_value = "/tailmesh/v1/")]
    etcd_prefix: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Io {
    Auto,
    Uring,
    Epoll,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file offline; exit 0 if valid, 1 with every problem if not.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match node_agent::config::load(&file) {
            Ok(cfg) => {
                println!(
                    "{}: valid: {} listener(s), {} cluster(s), {} route(s), {} request type(s)",
                    file.display(),
                    cfg.listeners.len(),
                    cfg.clusters.len(),
                    cfg.routes.len(),
                    cfg.request_types.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        None => {
            if let Some(file) = &cli.config
                && let Err(e) = node_agent::config::load(file)
            {
                eprintln!("node-agent: {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
            let _ = (
                cli.workers,
                cli.io,
                &cli.admin,
                &cli.drain_timeout,
                &cli.etcd,
                &cli.etcd_prefix,
            );
            eprintln!("node-agent: the data path is not implemented yet (tracked in issue #4)");
            ExitCode::from(2)
        }
    }
}
