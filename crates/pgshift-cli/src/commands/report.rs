//! `pgshift report`: how a run's data moved and what it cost, read back from its stage (any run: local or on AWS).

use anyhow::{bail, Context, Result};
use clap::Args;
use pgshift::UrlStages;

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The run's plan: <stage>/<run>/plan.json (or --stage and --run).
    #[arg(long, conflicts_with_all = ["execution", "stage"])]
    plan: Option<String>,
    /// The run's stage (with --run): file:///dir, a directory, or s3://bucket/prefix.
    #[arg(long, requires = "run", conflicts_with = "execution")]
    stage: Option<String>,
    /// The run's id (with --stage).
    #[arg(long, requires = "stage")]
    run: Option<String>,
    /// List every part of every table (the summary lists a dozen at most).
    #[arg(long)]
    parts: bool,
    /// A deployed run: its execution's ARN (the run's stage is read from the execution's history).
    #[arg(long)]
    execution: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the run's self-contained HTML report to this file (timeline, concurrency, skew, throughput, load steps,
    /// cost, failures) instead of printing the text report.
    #[arg(long)]
    html: Option<std::path::PathBuf>,
    /// Lambda memory (MB) the cost estimate assumes for the extractors.
    #[arg(long, default_value_t = 2048)]
    lambda_memory_mb: u32,
}

/// The plan of a deployed run: from the output of its Plan state in the execution's history.
pub(crate) async fn plan_of_execution(x: &dyn pgshift::executions::Executions, arn: &str) -> Result<String> {
    let events = match pgshift::executions::full_history(x, arn).await {
        Ok(e) => e,
        Err(e) => bail!("{e} [{}]", e.name()),
    };
    match pgshift::executions::plan_url_of(&events) {
        Some(u) => Ok(u),
        None => {
            bail!("execution {arn} has no plan yet (it failed or is still before its Plan state): nothing to report")
        }
    }
}

pub(crate) async fn run(args: ReportArgs) -> Result<()> {
    let plan = match (&args.plan, &args.execution, &args.stage, &args.run) {
        (Some(p), ..) => p.clone(),
        (None, Some(arn), ..) => {
            let x = pgshift::executions::aws::AwsExecutions::from_env().await;
            plan_of_execution(&x, arn).await?
        }
        (None, None, Some(stage), Some(run)) => {
            let stage = crate::commands::flags::stage_url(stage)?;
            format!(
                "{}/{}",
                stage.trim_end_matches('/'),
                pgshift::contract::layout::plan_key(run)
            )
        }
        _ => {
            return Err(crate::commands::exit::usage(
                "pass --stage STAGE --run ID, --plan <stage>/<run>/plan.json, or --execution ARN",
            ))
        }
    };
    let args = ReportArgs {
        plan: Some(plan),
        ..args
    };
    let plan = args.plan.as_deref().unwrap_or_default();
    if let Some(path) = &args.html {
        let (html, _) = match pgshift::report::html_of(&UrlStages::default(), plan, args.lambda_memory_mb).await {
            Ok(r) => r,
            Err(e) => bail!("{e} [{}]", e.name()),
        };
        std::fs::write(path, html).with_context(|| format!("writing --html {}", path.display()))?;
        out!("report: {}", path.display());
        return Ok(());
    }
    let (report, notes) = match pgshift::report::from_stage(&UrlStages::default(), plan, args.lambda_memory_mb).await {
        Ok(r) => r,
        Err(e) => bail!("{e} [{}]", e.name()),
    };
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("run {}{}", report.run_id, report.render_parts(args.parts));
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    Ok(())
}
