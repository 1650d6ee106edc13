//! `pgshift snapshot create` (the local counterpart of `CreateDBSnapshot`) and `pgshift gc` (the sweep, on demand).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pgshift::rds::local::LocalRds;
use pgshift::rds::Rds;

#[derive(Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Take a physical snapshot of a PostgreSQL server: a base backup with its WAL (pg_basebackup), which
    /// `pgshift run --snapshot ID` restores into a throwaway server. The user needs the REPLICATION privilege.
    Create(CreateArgs),
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// The server to snapshot (postgres://user:pass@host:port/db). Also PGSHIFT_SOURCE.
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
    /// The snapshot's identifier.
    #[arg(long)]
    id: String,
    /// Where snapshots and restored servers live (default $PGSHIFT_SNAPSHOT_DIR, else ~/.pgshift/snapshots).
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
    /// Record it as an Aurora cluster snapshot (the run then takes the definition's cluster path).
    #[arg(long)]
    cluster: bool,
}

pub(crate) async fn run(cmd: SnapshotCommand) -> Result<()> {
    let SnapshotCommand::Create(a) = cmd;
    let rds = LocalRds::new(a.snapshot_dir.unwrap_or_else(pgshift::rds::local::default_dir));
    let (source, id) = (a.source.clone(), a.id.clone());
    let dir = rds.dir().display().to_string();
    let record = tokio::task::spawn_blocking(move || rds.create_snapshot(&source, &id, a.cluster))
        .await?
        .with_context(|| format!("snapshot {} of the --source server", a.id))?;
    out!(
        "snapshot {} created in {dir}: PostgreSQL {} at {}",
        a.id,
        record["EngineVersion"].as_str().unwrap_or("?"),
        record["SnapshotCreateTime"].as_str().unwrap_or("?")
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct GcArgs {
    /// The snapshot directory whose restored servers to sweep (default $PGSHIFT_SNAPSHOT_DIR, else
    /// ~/.pgshift/snapshots). Without --aws this is the local stand-in.
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
    /// Sweep the RDS instances and clusters of the AWS account (the default credentials and region) instead.
    #[arg(long)]
    aws: bool,
    /// The stack whose restored instances to sweep (the pgshift:stack tag). Also PGSHIFT_STACK.
    #[arg(long, env = "PGSHIFT_STACK", default_value = "pgshift")]
    stack: String,
    /// Only what is older than this many hours (default: 0 locally, where a live run's servers are recognised and
    /// kept; 26 on AWS, past the longest execution).
    #[arg(long)]
    older_than_hours: Option<f64>,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also drop the staging tables that dead runs left in this warehouse (those of runs that may still be running
    /// are kept, and listed). Also PGSHIFT_WAREHOUSE.
    #[arg(long, env = "PGSHIFT_WAREHOUSE", hide_env_values = true)]
    warehouse: Option<String>,
}

pub(crate) async fn gc(a: GcArgs) -> Result<()> {
    let rds: Arc<dyn Rds> = if a.aws {
        Arc::new(pgshift::rds::aws::AwsRds::from_env().await)
    } else {
        Arc::new(LocalRds::new(
            a.snapshot_dir.clone().unwrap_or_else(pgshift::rds::local::default_dir),
        ))
    };
    if let Some(url) = &a.warehouse {
        staging_gc(url, a.dry_run).await?;
    }
    let hours = a.older_than_hours.unwrap_or(if a.aws { 26.0 } else { 0.0 });
    let req = pgshift::sweep::SweepRequest {
        stack: a.stack.clone(),
        max_age_secs: hours * 3600.0,
        dry_run: a.dry_run,
    };
    let out = pgshift::sweep::sweep(rds.as_ref(), &req).await?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for i in &out.deleted_instances {
        out!("{verb} instance {i}");
    }
    for c in &out.deleted_clusters {
        out!("{verb} cluster {c}");
    }
    for f in &out.failed {
        eprintln!("could not delete {f}");
    }
    out!(
        "gc: {} instance(s) and {} cluster(s) {verb}, {} instance(s) kept (not pgshift's, another stack's, or in use)",
        out.deleted_instances.len(),
        out.deleted_clusters.len(),
        out.kept
    );
    if !out.failed.is_empty() {
        anyhow::bail!("{} deletion(s) failed; run pgshift gc again", out.failed.len());
    }
    Ok(())
}

/// The staging tables of dead runs in a warehouse, dropped (`pgshift gc --warehouse`).
async fn staging_gc(url: &str, dry_run: bool) -> Result<()> {
    let wh = pgshift::warehouse::warehouse(url).await?;
    let ctx = pgshift::load::LoadContext::new(Arc::new(pgshift::UrlStages::default()), wh);
    let scope = pgshift::load::gc::GcScope {
        targets: None,
        own_run: None,
        dry_run,
    };
    let found = match pgshift::load::gc::collect(&ctx, &scope).await {
        Ok(f) => f,
        Err(e) => anyhow::bail!("{e} [{}]", e.name()),
    };
    let verb = if dry_run { "would drop" } else { "dropped" };
    for c in &found {
        match c.dead {
            true => out!("{verb} staging table {} of run {} ({})", c.staging, c.run_id, c.why),
            false => out!("kept staging table {} of run {}: {}", c.staging, c.run_id, c.why),
        }
    }
    let dropped = found.iter().filter(|c| c.dead).count();
    out!("gc: {dropped} staging table(s) {verb}, {} kept", found.len() - dropped);
    Ok(())
}
