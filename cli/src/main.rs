//! `ringlog`: reads the tailmesh flight recorder, also while the agent is
//! writing it. `stat` summarises the file, `tail` prints records and events
//! with names resolved. The analysis commands (`hist`, `spikes`, `why`,
//! `export`, `report`) come with issue #5.

mod show;
mod stat;
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Default ring path, as in DESIGN.md (`ring.path`).
pub const DEFAULT_RING: &str = "/var/run/tailmesh/ring";

#[derive(Debug, Parser)]
#[command(
    name = "ringlog",
    version,
    about = "Read and explain the tailmesh flight recorder"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
struct Common {
    /// Ring file to read.
    #[arg(long, default_value = DEFAULT_RING, global = true)]
    ring: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Header, shards, time span, kept / overwritten / skipped counts and
    /// sampler counters per request type.
    Stat {
        #[command(flatten)]
        common: Common,
    },
    /// Print the newest records and events (names resolved); -f follows.
    Tail {
        #[command(flatten)]
        common: Common,
        /// Entries to print from each shard's end before following.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep printing entries as they commit (reopens a recreated file).
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stat { common } => stat::run(&common.ring, common.json),
        Command::Tail {
            common,
            lines,
            follow,
        } => tail::run(&common.ring, common.json, lines, follow),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringlog: {e:#}");
            ExitCode::FAILURE
        }
    }
}
