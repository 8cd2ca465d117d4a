//! `tailmesh-bench`: reproducible measurements for tailmesh. This build has
//! `ring` (flight-recorder throughput and crash-consistency checks); the
//! load generator, fault-injecting upstream and peer comparison come with
//! issue #3.

mod ring;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tailmesh-bench",
    version,
    about = "tailmesh benchmarks and test harnesses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write self-verifying synthetic records at full speed, or verify a file.
    Ring(ring::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ring(args) => ring::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tailmesh-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
