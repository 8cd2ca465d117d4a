//! `tailmesh-bench`: reproducible measurements and test harnesses for
//! tailmesh: `ring` (flight-recorder throughput and crash consistency),
//! `upstream` (fast HTTP/1.1 server with injectable faults), `load`
//! (open- and closed-loop HTTP/1.1 load generator), `compare` (direct vs
//! agent vs HAProxy vs nginx in one run), `tls-compare` (the same for TLS),
//! `scenario` (a ring with a known
//! culprit).

mod compare;
mod http1;
mod load;
mod ring;
mod rng;
mod scenario;
mod tls_compare;
mod upstream;

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
    /// Fast HTTP/1.1 upstream with injectable latency, errors, resets, slow
    /// bodies, connection limits and accept stalls.
    Upstream(upstream::Args),
    /// HTTP/1.1 load generator: closed loop, or open loop at --rate with
    /// coordinated-omission correction.
    Load(load::Args),
    /// Write a ring of synthetic mesh traffic with a known culprit (for
    /// `ringlog why` / `report` by hand, and the analysis benchmarks).
    Scenario(scenario::Args),
    /// Direct vs node-agent vs HAProxy vs nginx in one run: RPS, CPU per
    /// request, latency, ratios, L4 bulk transfer.
    Compare(compare::Args),
    /// TLS termination cost, node-agent vs HAProxy: keep-alive requests
    /// over mTLS, full and resumed handshakes per core, bulk CPU per GB.
    TlsCompare(tls_compare::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ring(args) => ring::run(&args),
        Command::Upstream(args) => upstream::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Load(args) => load::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Scenario(args) => scenario::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => compare::run(&args).map(|()| ExitCode::SUCCESS),
        Command::TlsCompare(args) => tls_compare::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tailmesh-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
