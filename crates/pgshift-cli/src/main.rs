//! `pgshift`: the command line.

/// `println!` for output a reader may stop reading (`pgshift cost --json | head`): a closed pipe ends the process
/// quietly, as it ends `cat`, instead of a panic; any other write error is reported as one.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("writing to standard output: {e}");
        }
    }};
}

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pgshift",
    version,
    about = "Move PostgreSQL tables into Amazon Redshift through Parquet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract one key range of one table into Parquet files on the stage; prints the ExtractResult as JSON.
    Extract(commands::extract::ExtractArgs),
    /// Plan a run: balanced key ranges for every selected table, written to the stage.
    Plan(commands::plan::PlanArgs),
    /// Load a planned and extracted run into the warehouse (verified parts, one COPY per table, atomic swap).
    Load(commands::load::LoadArgs),
    /// Run the whole pipeline on this machine through the state machine definition (plan, extract in parallel, load).
    Run(commands::run::RunArgs),
    /// Start a run on the deployed state machine (or --redrive a failed one), and --follow it to its end.
    Start(commands::start::StartArgs),
    /// How a run's data moved and what it cost, read back from its stage.
    Report(commands::report::ReportArgs),
    /// One line per run on a stage, from the run ledger (<run>/ledger.json).
    Runs(commands::ledger::RunsArgs),
    /// What runs cost, item by item, per run and per table, actual or estimated, with the trend over runs.
    Cost(commands::ledger::CostArgs),
    /// Local snapshots: the RDS stand-in's counterpart of CreateDBSnapshot.
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCommand),
    /// Delete restored snapshot instances that dead runs left (locally, or on AWS with --aws).
    Gc(commands::snapshot::GcArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes, never a backtrace: this is for the person at the terminal.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGSHIFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file or CI.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        match cli.command {
            Command::Extract(args) => commands::extract::run(args).await,
            Command::Plan(args) => commands::plan::run(args).await,
            Command::Load(args) => commands::load::run(args).await,
            Command::Run(args) => commands::run::run(args).await,
            Command::Report(args) => commands::report::run(args).await,
            Command::Start(args) => commands::start::run(args).await,
            Command::Runs(args) => commands::ledger::runs(args).await,
            Command::Cost(args) => commands::ledger::cost(args).await,
            Command::Snapshot(cmd) => commands::snapshot::run(cmd).await,
            Command::Gc(args) => commands::snapshot::gc(args).await,
            Command::Bench(cmd) => commands::bench::run(cmd).await,
        }
    })
}
