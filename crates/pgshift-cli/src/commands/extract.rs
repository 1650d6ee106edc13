//! `pgshift extract`: one key range of one table into Parquet on a stage (or a task as the planner writes it).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use pgshift::contract::model::{Bounds, ExtractTask, KeyType, KeyValue, TableRef};
use pgshift::contract::types::TypePolicies;
use pgshift::source::{column_specs, describe_table, PgConnector, SourceConnector};
use pgshift::{ExtractContext, UrlStages};

#[derive(Args)]
pub(crate) struct ExtractArgs {
    /// Source connection string (postgres://user:pass@host:port/db). Also PGSHIFT_SOURCE.
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
    /// Table as schema.name (quote parts with dots: "a.b"."c").
    #[arg(long, required_unless_present = "task")]
    table: Option<String>,
    /// Run a task given as a JSON file (as the planner writes them) instead of building one from flags: one task,
    /// or a plan's task list (<stage>/<run>/tasks.json) with --index.
    #[arg(long, conflicts_with_all = ["table", "key", "lower", "upper"])]
    task: Option<std::path::PathBuf>,
    /// With --task naming a task list: which task (0 for the first).
    #[arg(long, requires = "task")]
    index: Option<usize>,
    /// Key columns, comma-separated (default: the primary key, else a unique NOT NULL index).
    #[arg(long, value_delimiter = ',')]
    key: Vec<String>,
    /// Lower bound (inclusive), one value per key column: --lower 10 --lower 2 for a (bigint, smallint) key.
    #[arg(long)]
    lower: Vec<String>,
    /// Upper bound (exclusive), one value per key column.
    #[arg(long)]
    upper: Vec<String>,
    /// The stage: file:///dir, a directory, or s3://bucket/prefix.
    #[arg(long, value_parser = crate::commands::flags::stage_arg)]
    stage: String,
    #[arg(long, default_value = "manual")]
    run_id: String,
    #[arg(long, default_value_t = 0)]
    range_index: u32,
    #[command(flatten)]
    types: crate::commands::types::TypeArgs,
    #[command(flatten)]
    writer: crate::commands::flags::WriterArgs,
    /// statement_timeout for the COPY, seconds (0: none).
    #[arg(long, default_value_t = pgshift::contract::model::DEFAULT_STATEMENT_TIMEOUT_SECS)]
    statement_timeout: u64,
}

pub(crate) async fn run(args: ExtractArgs) -> Result<()> {
    let source = Arc::new(PgConnector::new(&args.source)?);
    let task = match &args.task {
        Some(path) => {
            let mut task = task_of(path, args.index)?;
            task.stage = args.stage.clone();
            task
        }
        None => build_task(source.as_ref(), &args).await?,
    };
    let ctx = ExtractContext {
        source,
        stages: Arc::new(UrlStages::default()),
    };
    match pgshift::extract(&ctx, task).await {
        Ok(result) => {
            out!("{}", serde_json::to_string_pretty(&result)?);
            Ok(())
        }
        Err(e) => bail!("{e} [{}]", e.name()),
    }
}

/// The task a `--task` file holds: the one task, or the `index`th of a task list.
fn task_of(path: &std::path::Path, index: Option<usize>) -> Result<ExtractTask> {
    let shown = path.display();
    let file = path
        .to_str()
        .and_then(|p| p.strip_prefix("file://"))
        .map_or_else(|| path.to_path_buf(), std::path::PathBuf::from);
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading --task {shown}"))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| crate::commands::exit::usage(format!("--task {shown}: not JSON ({e})")))?;
    let one = match (v, index) {
        (serde_json::Value::Array(tasks), Some(i)) if i < tasks.len() => tasks[i].clone(),
        (serde_json::Value::Array(tasks), Some(i)) => {
            return Err(crate::commands::exit::usage(format!(
                "--index {i}: {shown} holds {} tasks; give --index 0 to {}",
                tasks.len(),
                tasks.len().saturating_sub(1)
            )))
        }
        (serde_json::Value::Array(tasks), None) => {
            return Err(crate::commands::exit::usage(format!(
                "{shown} holds {} tasks (a plan's task list): give one with --index N (0 to {}), or the whole run \
                 with pgshift run --run-id",
                tasks.len(),
                tasks.len().saturating_sub(1)
            )))
        }
        (v, _) => v,
    };
    serde_json::from_value(one).map_err(|e| crate::commands::exit::usage(format!("--task {shown}: not a task ({e})")))
}

/// `--lower` at or above `--upper` selects nothing: refused, compared by the source in the key's own types (and
/// collation), so that a typo does not write an empty part that looks like a finished range.
async fn empty_range(
    client: &tokio_postgres::Client,
    lower: &[KeyValue],
    upper: &[KeyValue],
    given_lower: &[String],
    given_upper: &[String],
) -> Result<()> {
    let row = |v: &[KeyValue]| -> Result<String> {
        let lits = v
            .iter()
            .map(pgshift::contract::sql::literal)
            .collect::<Result<Vec<_>, _>>();
        Ok(format!("ROW({})", lits.map_err(anyhow::Error::msg)?.join(", ")))
    };
    let sql = format!("SELECT {} >= {}", row(lower)?, row(upper)?);
    if client.query_one(&sql, &[]).await?.get::<_, bool>(0) {
        bail!(
            "--lower {} is not below --upper {}: the range is empty (lower is inclusive, upper exclusive)",
            given_lower.join(" "),
            given_upper.join(" ")
        );
    }
    Ok(())
}

/// A task for one range of a table, from the catalog and the flags.
pub(crate) async fn build_task(source: &dyn SourceConnector, args: &ExtractArgs) -> Result<ExtractTask> {
    let table = TableRef::parse(args.table.as_deref().unwrap_or_default()).map_err(anyhow::Error::msg)?;
    let client = source.connect().await?;
    let catalog = describe_table(&client, &table).await?;
    let policies = args.types.policies(TypePolicies::default());
    // A cast may name the table (as run and plan take it); it must be this one.
    let mut casts = Vec::new();
    for c in &args.types.cast {
        if let Some(t) = &c.table {
            if TableRef::parse(t).map_err(anyhow::Error::msg)? != table {
                bail!("--cast {t}.{}: this extract reads {table}", c.column);
            }
        }
        casts.push((c.column.clone(), c.cast));
    }
    let columns = column_specs(&catalog, &policies, &casts)?;
    let key = if args.key.is_empty() {
        catalog.key.clone()
    } else {
        args.key.clone()
    };
    let key_types: Vec<KeyType> = pgshift::source::key_columns(&catalog, &table, &key)?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let bound = |values: &[String], which: &str| -> Result<Option<Vec<KeyValue>>> {
        if values.is_empty() {
            return Ok(None);
        }
        if key.is_empty() {
            bail!("--{which} needs a key: {table} has no primary key or unique NOT NULL index; pass --key");
        }
        if values.len() != key.len() {
            bail!(
                "--{which} has {} value(s) for the {} key column(s) ({})",
                values.len(),
                key.len(),
                key.join(", ")
            );
        }
        Ok(Some(
            values
                .iter()
                .zip(&key_types)
                .map(|(v, t)| KeyValue::new(*t, v.clone()))
                .collect(),
        ))
    };
    let (lower, upper) = (bound(&args.lower, "lower")?, bound(&args.upper, "upper")?);
    if let (Some(l), Some(u)) = (&lower, &upper) {
        empty_range(&client, l, u, &args.lower, &args.upper).await?;
    }
    let bounds = Bounds::Key { lower, upper };
    Ok(ExtractTask {
        task_id: String::new(),
        plan_id: String::new(),
        run_id: args.run_id.clone(),
        table,
        columns,
        key,
        range_index: args.range_index,
        bounds,
        stage: args.stage.clone(),
        writer: args.writer.settings(),
        statement_timeout_secs: args.statement_timeout,
        source_endpoint: None,
        diff: None,
        since: None,
    })
}
