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
    /// The AWS profile of the commands that call AWS (the S3 stage, Redshift, Step Functions, RDS): sets
    /// AWS_PROFILE for this command.
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// The AWS region of the commands that call AWS: sets AWS_REGION for this command.
    #[arg(long, global = true, value_name = "REGION")]
    region: Option<String>,
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

/// The exit status by class (`commands::exit`): 0, 1 other, 2 usage, 3 failed for good, 4 failed and retryable,
/// 130/143 stopped by a signal.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stopped reading (`pgshift cost --csv | head`) is not a failure.
        Err(e) if commands::exit::broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes, never a backtrace: this is for the person at the terminal.
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(commands::exit::code_of(&e))
        }
    }
}

/// Colour only for a person at a terminal who did not ask for none (<https://no-color.org>).
pub(crate) fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // The SDK's own warnings (every credential provider it tried) are said once, by the error that follows.
            tracing_subscriber::EnvFilter::try_from_env("PGSHIFT_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,aws_config=error,aws_smithy_runtime=error")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .init();
    let cli = Cli::parse();
    // Before any thread starts: the SDK's default chain reads these.
    if let Some(p) = &cli.profile {
        std::env::set_var("AWS_PROFILE", p);
    }
    if let Some(r) = &cli.region {
        std::env::set_var("AWS_REGION", r);
    }
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
