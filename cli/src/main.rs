//! `ringlog`: reads the tailmesh flight recorder, also while the agent is
//! writing it. `stat` summarises the file, `tail` prints records and events
//! with names resolved; `hist`, `spikes`, `why`, `export` and `report`
//! analyse it (weighted by each record's 1/p, streaming, offline).

mod analyze;
mod report;
mod select;
mod show;
mod stat;
mod table;
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
    /// Threads for the scans of hist, spikes, why and report (0 = one per
    /// core, at most 8). Lower it to leave cores to a busy node.
    #[arg(long, global = true, default_value_t = 0, value_name = "N")]
    threads: usize,
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
        #[command(flatten)]
        select: select::Select,
    },
    /// Print the newest records and events (names resolved, one timeline);
    /// -f follows; --where/--since/--until select.
    Tail {
        #[command(flatten)]
        common: Common,
        /// Entries to print from each shard's end before following.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep printing entries as they commit (reopens a recreated file).
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        select: select::Select,
    },
    /// Count, rate and p50/p90/p99/p99.9/max per group, weighted by 1/p.
    Hist {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        select: select::Select,
        /// Group by these dimensions, comma separated (route, cluster,
        /// endpoint, type, arm, worker, status, reason, generation, phase, policy, peer).
        #[arg(long, default_value = "route")]
        by: String,
    },
    /// Windows where a latency quantile exceeded FACTOR x its trailing baseline.
    Spikes {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        select: select::Select,
        #[command(flatten)]
        args: analyze::SpikeArgs,
    },
    /// What the slow tail of a spike (or a window) comes from, with a verdict.
    Why {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        select: select::Select,
        #[command(flatten)]
        args: analyze::WhyArgs,
    },
    /// A self-contained HTML page: latency plot with spike bands, rates,
    /// each spike's attribution and verdict, the slowest requests.
    Report {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        select: select::Select,
        #[command(flatten)]
        args: report::ReportArgs,
    },
    /// Records and events as JSON lines or CSV.
    Export {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        select: select::Select,
        /// json (one object per line) or csv.
        #[arg(long, default_value = "json")]
        format: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    select::set_threads(cli.threads);
    let result = match cli.command {
        Command::Stat { common, select } => stat::run(&common.ring, common.json, &select),
        Command::Tail {
            common,
            lines,
            follow,
            select,
        } => tail::run(&common.ring, common.json, lines, follow, &select),
        Command::Hist { common, select, by } => {
            analyze::hist(&common.ring, common.json, &select, &by)
        }
        Command::Spikes {
            common,
            select,
            args,
        } => analyze::spikes(&common.ring, common.json, &select, &args),
        Command::Why {
            common,
            select,
            args,
        } => analyze::why(&common.ring, common.json, &select, &args),
        Command::Report {
            common,
            select,
            args,
        } => report::run(&common.ring, common.json, &select, &args),
        Command::Export {
            common,
            select,
            format,
        } => analyze::export(&common.ring, &select, &format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringlog: {e:#}");
            ExitCode::FAILURE
        }
    }
}
