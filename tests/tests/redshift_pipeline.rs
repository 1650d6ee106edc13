//! Whole runs through the definition (`LocalRun`) from a real PostgreSQL source into Redshift, the Data API faked
//! (`pgshift_tests::data_api`): every statement a run sends, in full, built here from the run's plan as the stage
//! holds it; the fake answers each statement by its own id.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use aws_sdk_redshiftdata::types::{Field, StatusString};
use pgshift::contract::layout::{manifest_key, plan_key};
use pgshift::contract::load::{Atomicity, LoadMode, LoadOptions, StepKind};
use pgshift::contract::model::TableRef;
use pgshift::contract::plan::{Plan, PlanRequest, PlanSettings, TablePlan};
use pgshift::entry::local::{LocalRun, RunOutcome, DEFINITION};
use pgshift::source::PgConnector;
use pgshift::warehouse::redshift::{copy_sql, RedshiftWarehouse};
use pgshift::warehouse::{reconcile_sql, CopyJob, Dialect, Warehouse};
use pgshift::UrlStages;
use pgshift_tests::data_api::{DataApi, Refusal, Request, Script};

use super::redshift::{cluster, cluster_target, fast};

const IAM_ROLE: &str = "arn:aws:iam::123456789012:role/pgshift-copy";

/// A run through the definition, loading `tables` into Redshift answered by `api`; its outcome and stage URL.
async fn run_redshift(
    source: &str,
    tables: &[&str],
    api: &DataApi,
    name: &str,
    edit: impl FnOnce(&mut LocalRun),
) -> Result<(RunOutcome, String)> {
    let stage = format!("file://{}", pgshift_tests::stage_dir(name).display());
    let wh = RedshiftWarehouse::new(api.client(), cluster(), fast());
    let request = PlanRequest {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        settings: PlanSettings {
            parts: Some(2),
            ..PlanSettings::default()
        },
        stage: stage.clone(),
        // What `pgshift run` sets from a Redshift warehouse, and the planner Lambda from its environment.
        warehouse: wh.dialect().limits(),
        ..PlanRequest::default()
    };
    let mut run = LocalRun {
        definition: DEFINITION.to_string(),
        request,
        source: Arc::new(PgConnector::new(source)?),
        stages: Arc::new(UrlStages::default()),
        warehouse: Arc::new(wh),
        memory_mb: 1024,
        input: None,
        restore: Default::default(),
        rds: None,
        load_budget: None,
        announce: Default::default(),
    };
    edit(&mut run);
    Ok((run.start(name)?.outcome.await?, stage))
}

fn with_load(options: LoadOptions) -> impl FnOnce(&mut LocalRun) {
    move |r| r.request.load = Some(options)
}

/// `"schema"."name"`.
fn q(t: &TableRef) -> String {
    format!("\"{}\".\"{}\"", t.schema, t.name)
}

/// A load transaction: the batch whose second statement reconciles.
fn is_load(sqls: &[String]) -> bool {
    sqls.get(1)
        .is_some_and(|s| s.starts_with("SELECT 1 / CASE WHEN count(*) = "))
}

/// The load transactions `api` accepted, in order: id and statements.
fn loads(api: &DataApi) -> Vec<(String, Vec<String>)> {
    api.batches()
        .into_iter()
        .filter(|b| is_load(&b.sqls))
        .map(|b| (b.id, b.sqls))
        .collect()
}

/// The only load transaction `api` accepted.
fn the_load(api: &DataApi) -> (String, Vec<String>) {
    let mut all = loads(api);
    assert_eq!(all.len(), 1, "one load transaction: {all:#?}");
    all.remove(0)
}

/// Every statement of a run, built from its plan as the stage holds it (what `load::statements` builds; its builders
/// are the crate's own, so the text is spelled out here, with the public builders where there are some).
struct Run {
    plan: Plan,
}

impl Run {
    fn read(stage: &str, out: &RunOutcome) -> Result<Self> {
        let path = Path::new(stage.trim_start_matches("file://")).join(plan_key(&out.report.run_id));
        Ok(Self {
            plan: serde_json::from_slice(&std::fs::read(path)?)?,
        })
    }

    fn table(&self, name: &str) -> &TablePlan {
        self.plan
            .tables
            .iter()
            .find(|t| t.table.to_string() == name)
            .unwrap_or_else(|| panic!("{name} is not in the plan"))
    }

    /// The run's staging table of `target`: its name cut to 30 bytes, the last 12 alphanumerics of the run id, and
    /// 4 bytes of the SHA-256 of schema, name and run id.
    fn staging(&self, target: &TableRef) -> TableRef {
        use sha2::Digest;
        let run_id = &self.plan.run_id;
        let run: String = run_id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let run = &run[run.len().saturating_sub(12)..];
        let name: String = target.name.chars().take(30).collect();
        let digest = sha2::Sha256::digest(format!("{}\0{}\0{run_id}", target.schema, target.name).as_bytes());
        let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        TableRef::new(target.schema.clone(), format!("{name}__pgshift_{run}_{hash}"))
    }

    /// The pre-flight's one query of the grants the run needs (`load::grants`), then its write and read of the
    /// warehouse.
    fn preflight(&self) -> Vec<Vec<String>> {
        vec![
            vec![self.grants_check()],
            vec!["CREATE SCHEMA IF NOT EXISTS \"pgshift\"".into()],
            vec!["SELECT 1".into()],
        ]
    }

    /// The pre-flight's grants query of this run.
    fn grants_check(&self) -> String {
        let targets: Vec<TableRef> = self.plan.tables.iter().map(|t| t.table.clone()).collect();
        let options = self.plan.load.clone().unwrap_or_default();
        pgshift::load::grants::check_sql(Dialect::Redshift, &targets, &options).expect("the grants query")
    }

    /// A table's columns asked of `information_schema`.
    fn columns_query(t: &TableRef) -> String {
        format!(
            "SELECT column_name::text, data_type::text, character_maximum_length::int8, numeric_precision::int8, \
             numeric_scale::int8 FROM information_schema.columns WHERE table_schema = '{}' AND table_name = '{}' \
             ORDER BY ordinal_position",
            t.schema, t.name
        )
    }

    fn unregister(staging: &TableRef) -> String {
        format!(
            "DELETE FROM \"pgshift\".\"staging\" WHERE schema_name = '{}' AND table_name = '{}'",
            staging.schema, staging.name
        )
    }

    /// The set-up transaction of `table`: the target made with `target_columns` if missing, the load log and staging
    /// registry, the staging table registered and made with `staging_columns`.
    fn setup(&self, table: &str, target_columns: &str, staging_columns: &str) -> Vec<String> {
        let t = self.table(table);
        let s = self.staging(&t.table);
        let key: Vec<String> = t.key.iter().map(|k| format!("\"{k}\"")).collect();
        let clause = format!(" DISTSTYLE AUTO SORTKEY ({})", key.join(", "));
        let p = &self.plan;
        vec![
            format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", t.table.schema),
            format!("CREATE TABLE IF NOT EXISTS {} ({target_columns}){clause}", q(&t.table)),
            "CREATE SCHEMA IF NOT EXISTS \"pgshift\"".into(),
            "CREATE TABLE IF NOT EXISTS \"pgshift\".\"load_log\" (run_id VARCHAR(256) NOT NULL, schema_name \
             VARCHAR(256) NOT NULL, table_name VARCHAR(256) NOT NULL, mode VARCHAR(16) NOT NULL, rows BIGINT NOT \
             NULL, loaded_at TIMESTAMP NOT NULL, plan_id VARCHAR(64) NOT NULL, data_at BIGINT)"
                .into(),
            "CREATE TABLE IF NOT EXISTS \"pgshift\".\"staging\" (schema_name VARCHAR(256) NOT NULL, table_name \
             VARCHAR(256) NOT NULL, target_schema VARCHAR(256) NOT NULL, target_name VARCHAR(256) NOT NULL, run_id \
             VARCHAR(256) NOT NULL, plan_id VARCHAR(64) NOT NULL, stage VARCHAR(1024) NOT NULL)"
                .into(),
            Self::unregister(&s),
            format!(
                "INSERT INTO \"pgshift\".\"staging\" (schema_name, table_name, target_schema, target_name, run_id, \
                 plan_id, stage) VALUES ('{}', '{}', '{}', '{}', '{}', '{}', '{}')",
                s.schema, s.name, t.table.schema, t.table.name, p.run_id, p.plan_id, p.stage
            ),
            format!("DROP TABLE IF EXISTS {}", q(&s)),
            format!("CREATE TABLE {} ({staging_columns}){clause}", q(&s)),
        ]
    }

    /// Whether this plan already loaded `table`, asked of the load log.
    /// The newest data's instant in `table`, by the load log.
    fn data_at(&self, table: &str) -> String {
        let t = &self.table(table).table;
        format!(
            "SELECT COALESCE(MAX(data_at), 0) FROM \"pgshift\".\"load_log\" WHERE schema_name = '{}' AND table_name = \
             '{}'",
            t.schema, t.name
        )
    }

    fn logged(&self, table: &str) -> String {
        let t = &self.table(table).table;
        format!(
            "SELECT count(*) FROM \"pgshift\".\"load_log\" WHERE run_id = '{}' AND plan_id = '{}' AND schema_name = \
             '{}' AND table_name = '{}'",
            self.plan.run_id, self.plan.plan_id, t.schema, t.name
        )
    }

    /// Every statement a one-table run sends before its load transaction: pre-flight, the staging registry looked
    /// for, the target looked for, its set-up, the load log asked.
    fn before_load(&self, table: &str, target_columns: &str, staging_columns: &str) -> Vec<Vec<String>> {
        let mut out = self.preflight();
        out.push(vec![Self::columns_query(&TableRef::new("pgshift", "staging"))]);
        out.push(vec![Self::columns_query(&self.table(table).table)]);
        out.push(self.setup(table, target_columns, staging_columns));
        // The load log's columns (an earlier pgshift's log gets the data's instant), then the newest data the
        // target holds, against this run's.
        out.push(vec![Self::columns_query(&TableRef::new("pgshift", "load_log"))]);
        out.push(vec![self.data_at(table)]);
        out.push(vec![self.logged(table)]);
        out
    }

    /// The two catalog reads that decide a replace by rename (the fake's empty answers: nothing blocks it, the
    /// loading user owns the target, no grant to carry).
    fn rename_reads(&self, table: &str) -> Result<Vec<Vec<String>>> {
        let t = &self.table(table).table;
        let reads = pgshift::warehouse::rename_redshift::reads(t, &self.staging(t), None)?;
        Ok(reads.into_iter().map(|r| vec![r]).collect())
    }

    /// The statistics asked for once `table` committed, on their own.
    fn analyze(&self, table: &str) -> Vec<String> {
        vec![format!("ANALYZE {} PREDICATE COLUMNS", q(&self.table(table).table))]
    }

    /// COPY (from the table's manifest) and reconcile of `table`, whose parts hold `rows`.
    fn copy_and_reconcile(&self, table: &str, rows: u64) -> Result<Vec<String>> {
        let t = self.table(table);
        let staging = self.staging(&t.table);
        let stage = pgshift::stage::open(&self.plan.stage)?;
        let manifest = format!("{}/{}", self.plan.stage, manifest_key(&self.plan.run_id, &t.table));
        let copy = match rows {
            0 => "SELECT 0 AS no_parts_to_copy".to_string(),
            _ => copy_sql(
                &CopyJob {
                    staging: &staging,
                    columns: &t.columns,
                    manifest_url: &manifest,
                    files: &[],
                    stage: stage.as_ref(),
                    truncate_long_text: false,
                },
                IAM_ROLE,
            )?,
        };
        Ok(vec![copy, reconcile_sql(&staging, rows)?])
    }

    /// The swap of `table` in `mode`: lock, change the target, log, drop and unregister the staging table. `select`
    /// is the staging columns as the target takes them (`None`: the columns themselves).
    fn swap(&self, table: &str, mode: LoadMode, rows: u64, select: Option<&str>) -> Vec<String> {
        let t = self.table(table);
        let (target, staging) = (q(&t.table), q(&self.staging(&t.table)));
        let columns: Vec<String> = t.columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
        let columns = columns.join(", ");
        let mut out = vec![
            Dialect::Redshift.lock_target(&target),
            // Once locked: the target holds no newer data than this run's (another run may have loaded since).
            format!(
                "SELECT 1 / CASE WHEN COALESCE(MAX(data_at), 0) <= {} THEN 1 ELSE 0 END FROM \"pgshift\".\"load_log\" \
                 WHERE schema_name = '{}' AND table_name = '{}'",
                self.plan.data_instant(),
                t.table.schema,
                t.table.name
            ),
        ];
        let rename = mode == LoadMode::Replace && select.is_none();
        if rename {
            // Replace by rename: the old target dropped, the staging table (COPYed and reconciled) renamed to it.
            out.extend([
                format!("DROP TABLE {target}"),
                format!("ALTER TABLE {staging} RENAME TO \"{}\"", t.table.name),
            ]);
        }
        match mode {
            LoadMode::Replace if rename => {}
            LoadMode::Replace => out.push(format!("DELETE FROM {target}")),
            LoadMode::Append if !t.key.is_empty() => {
                // Redshift enforces no key: a guard refuses an append that would leave a key twice.
                let key: Vec<String> = t.key.iter().map(|k| format!("\"{k}\"")).collect();
                let on: Vec<String> = key.iter().map(|k| format!("t.{k} = s.{k}")).collect();
                out.push(format!(
                    "SELECT 1 / (CASE WHEN EXISTS (SELECT 1 FROM {target} t JOIN {staging} s ON {}) OR EXISTS (SELECT 1 \
                     FROM {staging} GROUP BY {} HAVING COUNT(*) > 1) THEN 0 ELSE 1 END) AS new_keys_to_append",
                    on.join(" AND "),
                    key.join(", ")
                ));
            }
            LoadMode::Append => {}
            LoadMode::Merge => {
                // Redshift's MERGE (docs/state-machine.md): a guard against a key twice in staging, then one MERGE
                // that updates the rows of the run's keys and inserts the others.
                let key: Vec<String> = t.key.iter().map(|k| format!("\"{k}\"")).collect();
                out.push(format!(
                    "SELECT 1 / (CASE WHEN EXISTS (SELECT 1 FROM {staging} GROUP BY {} HAVING COUNT(*) > 1) THEN 0 ELSE \
                     1 END) AS unique_keys_to_merge",
                    key.join(", ")
                ));
                let on: Vec<String> = key.iter().map(|k| format!("{target}.{k} = s.{k}")).collect();
                let names: Vec<String> = t.columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
                let set: Vec<String> = names
                    .iter()
                    .filter(|n| !key.contains(n))
                    .map(|n| format!("{n} = s.{n}"))
                    .collect();
                let values: Vec<String> = names.iter().map(|n| format!("s.{n}")).collect();
                out.push(format!(
                    "MERGE INTO {target} USING {staging} AS s ON {} WHEN MATCHED THEN UPDATE SET {} WHEN NOT MATCHED \
                     THEN INSERT ({columns}) VALUES ({})",
                    on.join(" AND "),
                    set.join(", "),
                    values.join(", ")
                ));
            }
        }
        let mode_name = match mode {
            LoadMode::Replace => "replace",
            LoadMode::Append => "append",
            LoadMode::Merge => "merge",
        };
        if mode != LoadMode::Merge && !rename {
            out.push(format!(
                "INSERT INTO {target} ({columns}) SELECT {} FROM {staging}",
                select.unwrap_or(&columns)
            ));
        }
        out.extend([
            // GETDATE(): Redshift's CURRENT_TIMESTAMP is a leader-node function and fails on a user table.
            format!(
                "INSERT INTO \"pgshift\".\"load_log\" (run_id, schema_name, table_name, mode, rows, loaded_at, plan_id, \
                 data_at) VALUES ('{}', '{}', '{}', '{mode_name}', {rows}, GETDATE(), '{}', {})",
                self.plan.run_id,
                t.table.schema,
                t.table.name,
                self.plan.plan_id,
                self.plan.data_instant()
            ),
            format!("DROP TABLE {staging}"),
            Self::unregister(&self.staging(&t.table)),
        ]);
        if rename {
            // The staging table is the target now: nothing to drop.
            out.retain(|s| *s != format!("DROP TABLE {staging}"));
        }
        out
    }

    /// One table's load transaction.
    fn load(&self, table: &str, mode: LoadMode, rows: u64, select: Option<&str>) -> Result<Vec<String>> {
        let mut out = self.copy_and_reconcile(table, rows)?;
        out.extend(self.swap(table, mode, rows, select));
        Ok(out)
    }
}

/// `note` sized from the data: its longest value, with headroom, at least 256 bytes.
const ORDERS_COLUMNS: &str =
    "\"id\" BIGINT NOT NULL, \"amount\" DECIMAL(12,2) NOT NULL, \"note\" VARCHAR(256), \"placed\" TIMESTAMPTZ NOT NULL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_waits_on_a_redshift_load_and_checks_it() -> Result<()> {
    let source = super::db("rswait", super::load::SALES).await?;
    let api = DataApi::new();
    api.script(is_load, Script::running_for(1));
    let (out, stage) = run_redshift(&source, &["sales.orders"], &api, "rswait", |_| {}).await?;
    let output = out.output.as_ref().map_err(|f| anyhow!("{f}"))?.clone();
    assert!(out.report.reconciled(), "{}", out.report.render());
    let run = Run::read(&stage, &out)?;
    // Every statement of the run, in order. COPY, reconcile and swap are one batch: one transaction. The target is
    // locked after the COPY, before the swap, so a second run loading it waits instead of doubling it.
    let mut expected = run.before_load("sales.orders", ORDERS_COLUMNS, ORDERS_COLUMNS);
    expected.extend(run.rename_reads("sales.orders")?);
    expected.push(run.load("sales.orders", LoadMode::Replace, 20_000, None)?);
    expected.push(run.analyze("sales.orders"));
    let sent: Vec<Vec<String>> = api.submitted().into_iter().map(|s| s.sqls).collect();
    assert_eq!(sent, expected);
    assert!(api.submitted().iter().all(|s| s.target == cluster_target()));
    // Running at the first check, finished at the second: the Wait state did the waiting, one status asked per
    // check, and the run ended only once the load had finished.
    let (id, _) = the_load(&api);
    assert_eq!(output["load"]["progress"]["done"], true);
    assert_eq!(
        output["load"]["progress"]["checks"].as_u64(),
        Some(api.describes(&id) as u64),
        "{output:#}"
    );
    assert_eq!(api.answered(&id), [StatusString::Started, StatusString::Finished]);
    assert!(api.cancelled().is_empty());
    // Under Redshift's serializable isolation, the load transaction locks the tables every load shares (the load
    // log, the staging registry) with its target, in that order, before it reads or writes any of them.
    let (_, load) = the_load(&api);
    let lock = "LOCK \"pgshift\".\"load_log\", \"pgshift\".\"staging\", \"sales\".\"orders\"";
    let at = load
        .iter()
        .position(|s| s == lock)
        .expect("the shared tables and the target locked");
    let shared = load
        .iter()
        .position(|s| s != lock && (s.contains("\"pgshift\".\"load_log\"") || s.contains("\"pgshift\".\"staging\"")));
    assert!(shared.is_some_and(|s| s > at), "{load:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_run_past_the_data_apis_batch_is_refused_at_plan_time_before_anything_is_sent() -> Result<()> {
    // Six tables of 9 statements each: 54, past the 40 of one BatchExecuteStatement.
    let ddl: String = (1..=6)
        .map(|i| format!("CREATE TABLE s.t{i} (id int8 PRIMARY KEY); INSERT INTO s.t{i} VALUES (1);"))
        .collect();
    let source = super::db("rsatomic", &format!("CREATE SCHEMA s; {ddl} ANALYZE;")).await?;
    let api = DataApi::new();
    let t0 = std::time::Instant::now();
    let atomic = LoadOptions {
        atomic: Atomicity::Run,
        ..Default::default()
    };
    let (out, _) = run_redshift(&source, &["s.*"], &api, "rsatomic", with_load(atomic)).await?;
    let f = out.output.expect_err("refused");
    assert_eq!(f.error, "Pipeline.Fatal.InvalidInput", "{f:?}");
    assert!(
        f.cause.contains("--atomic table") && f.cause.contains("at most 4 tables"),
        "{}",
        f.cause
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "at once");
    assert_eq!(
        api.requests(),
        [],
        "nothing reached the warehouse: no staging table exists"
    );
    assert!(out.report.tables.is_empty(), "nothing was extracted");
    Ok(())
}

/// The grants check on Redshift (`load::grants`): one read-only statement before anything else is sent to the
/// warehouse, whose rows (what the Serverless IAM user `IAMR:<role>` lacks) end the run by name, before any range is
/// extracted, with the statements to run for that user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_grants_on_redshift_are_one_query_whose_rows_end_the_run_with_the_statements_to_run() -> Result<()> {
    let source = super::db("rsgrants", super::load::SALES).await?;
    let api = DataApi::new();
    let user = "IAMR:pgshift-LoaderFunctionRole-XYZ";
    let row = |kind: &str, schema: &str, table: &str, privilege: &str| {
        [user, "dev", kind, schema, table, privilege]
            .map(|s| Field::StringValue(s.to_string()))
            .to_vec()
    };
    api.answer(
        |s| s.starts_with("WITH targets AS ("),
        vec![
            row("schema", "sales", "", "CREATE"),
            row("table", "sales", "orders", "DELETE"),
            row("table", "sales", "orders", "SELECT"),
        ],
    );
    let (out, stage) = run_redshift(&source, &["sales.orders"], &api, "rsgrants", |_| {}).await?;
    let failure = out.output.as_ref().err().ok_or_else(|| anyhow!("refused"))?;
    assert_eq!(failure.error, "Pipeline.Fatal.PermissionDenied", "{}", failure.cause);
    let cause: serde_json::Value = serde_json::from_str(&failure.cause)?;
    assert!(
        cause["errorMessage"].as_str().unwrap_or_default().ends_with(&format!(
            "run: GRANT CREATE ON SCHEMA \"sales\" TO \"{user}\"; GRANT SELECT, DELETE ON TABLE \"sales\".\"orders\" TO \"{user}\";"
        )),
        "{}",
        failure.cause
    );
    // The check was the only statement the pre-flight sent, and it is the one the run's plan makes.
    let run = Run::read(&stage, &out)?;
    let sent: Vec<Vec<String>> = api.submitted().into_iter().map(|s| s.sqls).collect();
    assert_eq!(sent.first(), Some(&vec![run.grants_check()]), "{sent:#?}");
    assert!(
        !sent.iter().flatten().any(|s| s.starts_with("CREATE SCHEMA")),
        "{sent:#?}"
    );
    let parts: Vec<String> = pgshift_tests::list_files(&pgshift_tests::stage_dir("rsgrants"))
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(parts.is_empty(), "nothing extracted: {parts:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_table_loads_without_a_copy_and_still_empties_its_target() -> Result<()> {
    let source = super::db(
        "rsempty",
        "CREATE SCHEMA sales; CREATE TABLE sales.gone (id int8 PRIMARY KEY, note text); ANALYZE;",
    )
    .await?;
    let api = DataApi::new();
    let (out, stage) = run_redshift(&source, &["sales.gone"], &api, "rsempty", |_| {}).await?;
    out.output.as_ref().map_err(|f| anyhow!("{f}"))?;
    assert!(out.report.reconciled(), "{}", out.report.render());
    let all = api.statements();
    assert!(
        !all.iter().any(|s| s.starts_with("COPY ")),
        "no COPY from a manifest that lists no file: {all:#?}"
    );
    // The COPY's place holds a statement that changes nothing; the reconcile against 0 and the replace still run: an
    // emptied source empties its target.
    let run = Run::read(&stage, &out)?;
    let (_, load) = the_load(&api);
    assert_eq!(load, run.load("sales.gone", LoadMode::Replace, 0, None)?);
    assert_eq!(load[4], "DROP TABLE \"sales\".\"gone\"");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_bytea_loads_into_varbyte_and_text_is_sized_from_the_data() -> Result<()> {
    // A 100 kB bytea: more than VARCHAR's 65,535, well within VARBYTE's 1,024,000.
    let source = super::db(
        "rsbytea",
        "CREATE SCHEMA sales; CREATE TABLE sales.blobs (id int8 PRIMARY KEY, body bytea, note text);
         INSERT INTO sales.blobs SELECT g, decode(repeat('ab', 100000), 'hex'), 'n' FROM generate_series(1, 3) g;
         ANALYZE;",
    )
    .await?;
    let api = DataApi::new();
    let (out, stage) = run_redshift(&source, &["sales.blobs"], &api, "rsbytea", |_| {}).await?;
    out.output.as_ref().map_err(|f| anyhow!("{f}"))?;
    let run = Run::read(&stage, &out)?;
    // bytea gets VARBYTE's maximum (only a VARCHAR can be widened later); the text's values are one byte long, and
    // it gets the narrowest width pgshift gives (a later run's longer values widen it first).
    let columns = "\"id\" BIGINT NOT NULL, \"body\" VARBYTE(16777216), \"note\" VARCHAR(256)";
    let setups: Vec<Vec<String>> = api
        .batches()
        .into_iter()
        .map(|b| b.sqls)
        .filter(|b| !is_load(b))
        .collect();
    assert_eq!(setups, [run.setup("sales.blobs", columns, columns)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_differ_only_in_case_are_refused_at_plan_time_by_name() -> Result<()> {
    let source = super::db(
        "rscase",
        r#"CREATE SCHEMA s;
           CREATE TABLE s.t ("Id" int8 PRIMARY KEY, id int8, "Note" text);
           CREATE TABLE s."Orders" (id int8 PRIMARY KEY); CREATE TABLE s.orders (id int8 PRIMARY KEY);
           ANALYZE;"#,
    )
    .await?;
    let api = DataApi::new();
    let (out, _) = run_redshift(&source, &["s.*"], &api, "rscase", |_| {}).await?;
    let f = out.output.expect_err("refused");
    assert_eq!(f.error, "Pipeline.Fatal.InvalidInput", "{f:?}");
    for said in [r#"columns \"Id\" and \"id\""#, "s.Orders and s.orders", "--exclude"] {
        assert!(f.cause.contains(said), "{said}: {}", f.cause);
    }
    assert!(
        !f.cause.contains("Note"),
        "a mixed-case name alone is fine: {}",
        f.cause
    );
    assert_eq!(api.requests(), [], "nothing reached the warehouse");
    Ok(())
}

/// The most load transactions ever pending at once (submitted, and not yet seen ended by a status), and the target
/// each load locks, in the order they were submitted.
fn most_pending(requests: &[Request]) -> (usize, Vec<String>) {
    let (mut running, mut most, mut order) = (BTreeSet::new(), 0, Vec::new());
    for r in requests {
        match r {
            Request::Submit(s) if is_load(&s.sqls) => {
                running.insert(s.id.clone());
                order.push(s.sqls[2].clone());
                most = most.max(running.len());
            }
            Request::Describe { id, status: Some(s) } if *s != StatusString::Started => {
                running.remove(id);
            }
            _ => {}
        }
    }
    (most, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_concurrency_loads_are_pending_and_the_rest_are_set_up_by_the_checks() -> Result<()> {
    let source = super::db(
        "rsqueue",
        "CREATE SCHEMA q; CREATE TABLE q.a (id int8 PRIMARY KEY, v text); CREATE TABLE q.b (LIKE q.a INCLUDING ALL);
         CREATE TABLE q.c (LIKE q.a INCLUDING ALL); CREATE TABLE q.d (LIKE q.a INCLUDING ALL);
         INSERT INTO q.a SELECT g, 'a' || g FROM generate_series(1, 300) g; INSERT INTO q.b SELECT * FROM q.a;
         INSERT INTO q.c SELECT * FROM q.a; INSERT INTO q.d SELECT * FROM q.a; ANALYZE;",
    )
    .await?;
    // (concurrency, budget, the most pending at once, checks at least): every load finishes by its first status, so
    // the checks that set the queued tables up are counted; with no time to spare, one table is set up per
    // invocation, and the start and three checks set up the four.
    let cases = [
        ("rsqueue1", 1, None, 1, 4),
        ("rsqueue2", 2, None, 2, 2),
        ("rsqueue3", 2, Some(Duration::ZERO), 1, 3),
    ];
    let every_lock: BTreeSet<String> = ["a", "b", "c", "d"]
        .map(|t| Dialect::Redshift.lock_target(&q(&TableRef::new("q", t))))
        .into();
    for (name, concurrency, budget, expected_most, checks) in cases {
        let api = DataApi::new();
        let options = LoadOptions {
            concurrency: Some(concurrency),
            ..Default::default()
        };
        let (out, stage) = run_redshift(&source, &["q.*"], &api, name, |r| {
            r.request.load = Some(options);
            r.load_budget = budget;
        })
        .await?;
        let output = out.output.as_ref().map_err(|f| anyhow!("{f}"))?;
        let requests = api.requests();
        let (most, order) = most_pending(&requests);
        assert_eq!(most, expected_most, "{name}: {requests:#?}");
        assert_eq!(order.len(), 4, "{name}: every table loaded once: {order:#?}");
        assert_eq!(order.into_iter().collect::<BTreeSet<_>>(), every_lock, "{name}");
        // The checks set up and submitted the tables the start left queued.
        assert!(
            output["load"]["progress"]["checks"].as_u64() >= Some(checks),
            "{name}: {output:#}"
        );
        assert!(output["load"]["progress"].get("queued").is_none(), "{output:#}");
        assert!(out.report.reconciled(), "{name}: {}", out.report.render());
        let path = Path::new(stage.trim_start_matches("file://"))
            .join(pgshift::contract::layout::load_key(&out.report.run_id));
        let load: pgshift::contract::load::LoadResult = serde_json::from_slice(&std::fs::read(&path)?)?;
        assert!(load.done, "{name}: {load:?}");
        for t in &load.tables {
            assert_eq!(t.committed_rows, Some(300), "{name}: {t:?}");
            assert!(
                t.steps.iter().any(|s| s.step == StepKind::Setup),
                "{name}: set-up timed: {t:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_as_super_copies_text_into_varchar_staging_and_parses_it_in_the_swap() -> Result<()> {
    let source = super::db(
        "rsjson",
        "CREATE SCHEMA j; CREATE TABLE j.docs (id int8 PRIMARY KEY, doc jsonb NOT NULL, raw json);
         INSERT INTO j.docs SELECT g, jsonb_build_object('n', g), '[1, 2]' FROM generate_series(1, 50) g; ANALYZE;",
    )
    .await?;
    let api = DataApi::new();
    let options = LoadOptions {
        json_as_super: true,
        ..Default::default()
    };
    let (out, stage) = run_redshift(&source, &["j.docs"], &api, "rsjson", with_load(options)).await?;
    out.output.as_ref().map_err(|f| anyhow!("{f}"))?;
    let run = Run::read(&stage, &out)?;
    // The target's JSON columns are SUPER; staging holds the same columns as VARCHAR text.
    let target = "\"id\" BIGINT NOT NULL, \"doc\" SUPER NOT NULL, \"raw\" SUPER";
    let staging = "\"id\" BIGINT NOT NULL, \"doc\" VARCHAR(256) NOT NULL, \"raw\" VARCHAR(256)";
    let mut expected = run.before_load("j.docs", target, staging);
    // No SERIALIZETOJSON in the COPY; a string inserted into SUPER stays a string, so the swap parses each document
    // (replaced by rows, not renamed).
    let select = "\"id\", JSON_PARSE(\"doc\"), JSON_PARSE(\"raw\")";
    expected.push(run.load("j.docs", LoadMode::Replace, 50, Some(select))?);
    expected.push(run.analyze("j.docs"));
    let sent: Vec<Vec<String>> = api.submitted().into_iter().map(|s| s.sqls).collect();
    assert_eq!(sent, expected);
    Ok(())
}

/// The load transaction of one `sales.orders` load in `mode`, through the definition against the fake, and what
/// it should be.
async fn one_load(name: &str, mode: LoadMode) -> Result<(Vec<String>, Vec<String>)> {
    let source = super::db(name, super::load::SALES).await?;
    let api = DataApi::new();
    let options = LoadOptions {
        mode,
        ..Default::default()
    };
    let (out, stage) = run_redshift(&source, &["sales.orders"], &api, name, with_load(options)).await?;
    out.output.as_ref().map_err(|f| anyhow!("{f}"))?;
    assert!(out.report.reconciled(), "{}", out.report.render());
    let run = Run::read(&stage, &out)?;
    Ok((the_load(&api).1, run.load("sales.orders", mode, 20_000, None)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_merge_send_exactly_their_statements_in_one_transaction() -> Result<()> {
    // Append: COPY, reconcile, lock, insert every staged row, log, drop staging and its registry row.
    let (append, expected) = one_load("rsappend", LoadMode::Append).await?;
    assert_eq!(append, expected);
    // Merge: the staged keys checked unique, then one MERGE: rows of the run's keys updated, the others inserted.
    let (merge, expected) = one_load("rsmerge", LoadMode::Merge).await?;
    assert_eq!(merge, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_and_a_failed_reconcile_end_the_run_by_name_with_the_warehouse_as_it_was() -> Result<()> {
    let source = super::db("rsfail", super::load::SALES).await?;
    let cases = [
        (
            0,
            "ERROR: Spectrum Scan Error",
            "Pipeline.Fatal.Warehouse",
            "COPY into sales.orders failed",
        ),
        (
            1,
            "ERROR: division by zero",
            "Pipeline.Fatal.Reconcile",
            "sales.orders: staging holds",
        ),
    ];
    let explain = "SELECT file_name, column_name, error_message FROM sys_load_error_detail WHERE query_id = 4242 \
                   ORDER BY start_time LIMIT 10";
    for (step, error, name, says) in cases {
        let api = DataApi::new();
        api.script(is_load, Script::fails_at(step, error, 4242));
        let (out, _) = run_redshift(&source, &["sales.orders"], &api, &format!("rsfail{step}"), |_| {}).await?;
        let f = out.output.expect_err("the load fails");
        assert_eq!(f.error, name, "{f:?}");
        assert!(f.cause.contains(says), "{f:?}");
        // A failed COPY is explained from SYS_LOAD_ERROR_DETAIL by the failing sub-statement's query id.
        let explained = api.statements().iter().any(|s| s == explain);
        assert_eq!(explained, step == 0, "{:#?}", api.statements());
        // Cleanup cancelled what the state last saw pending (the load, though it had ended), and nothing else; the
        // report says nothing was committed.
        let (id, _) = the_load(&api);
        let cleanup = out.cleanup.expect("cleanup ran");
        assert_eq!(cleanup.cancelled, std::slice::from_ref(&id));
        assert_eq!(api.cancelled(), [id]);
        let report = out.report.render();
        assert!(report.contains("no table of this run was committed"), "{report}");
        assert!(out.report.tables.iter().all(|t| t.loaded_rows.is_none()), "{report}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_run_copies_reconciles_and_swaps_every_table_in_one_transaction() -> Result<()> {
    let source = super::db("rsatomicok", super::load::SALES).await?;
    let api = DataApi::new();
    let atomic = LoadOptions {
        atomic: Atomicity::Run,
        ..Default::default()
    };
    let (out, stage) = run_redshift(&source, &["sales.*"], &api, "rsatomicok", with_load(atomic)).await?;
    out.output.as_ref().map_err(|f| anyhow!("{f}"))?;
    assert!(out.report.reconciled(), "{}", out.report.render());
    let run = Run::read(&stage, &out)?;
    // Every table's COPY and reconcile first, then every swap: nothing changes unless everything staged.
    let tables: Vec<(String, u64)> = run
        .plan
        .tables
        .iter()
        .map(|t| {
            let rows = if t.table.name == "orders" { 20_000 } else { 30_000 };
            (t.table.to_string(), rows)
        })
        .collect();
    let mut expected = Vec::new();
    for (t, rows) in &tables {
        expected.extend(run.copy_and_reconcile(t, *rows)?);
    }
    for (t, rows) in &tables {
        expected.extend(run.swap(t, LoadMode::Replace, *rows, None));
    }
    let (_, load) = the_load(&api);
    assert_eq!(load, expected, "one transaction for the run");
    assert!(
        load.len() <= 40,
        "inside the Data API's 40 statements a batch: {}",
        load.len()
    );
    Ok(())
}

/// A load that fails after it submitted another table's transaction cancels that transaction before it reports the
/// error: the state machine keeps the progress of the call before, so Cleanup would never see it, and it could
/// commit after the run is marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_fails_after_submitting_cancels_what_it_submitted() -> Result<()> {
    let source = super::db(
        "rscancel",
        "CREATE SCHEMA q; CREATE TABLE q.a (id int8 PRIMARY KEY, v text); CREATE TABLE q.b (LIKE q.a INCLUDING ALL);
         INSERT INTO q.a SELECT g, 'a' || g FROM generate_series(1, 300) g; INSERT INTO q.b SELECT * FROM q.a;
         ANALYZE;",
    )
    .await?;
    let api = DataApi::new();
    let seen = AtomicUsize::new(0);
    api.refuse(
        move |sqls| is_load(sqls) && seen.fetch_add(1, Ordering::SeqCst) == 1,
        Refusal::Invalid("injected: the second load batch is refused".into()),
    );
    let options = LoadOptions {
        concurrency: Some(2),
        ..Default::default()
    };
    let (out, _) = run_redshift(&source, &["q.*"], &api, "rscancel", with_load(options)).await?;
    let f = out.output.expect_err("the second load batch is refused");
    assert!(f.cause.contains("injected: the second load batch is refused"), "{f:?}");
    let (submitted, _) = the_load(&api);
    assert_eq!(api.cancelled(), [submitted], "the submitted load was cancelled");
    Ok(())
}

/// A column of the warehouse's catalog, as `information_schema.columns` answers: name, data_type,
/// character_maximum_length, numeric_precision, numeric_scale.
fn catalog_row(name: &str, ty: &str, chars: Option<i64>, numeric: Option<(i64, i64)>) -> Vec<Field> {
    let int = |v: Option<i64>| v.map_or(Field::IsNull(true), Field::LongValue);
    vec![
        Field::StringValue(name.into()),
        Field::StringValue(ty.into()),
        int(chars),
        int(numeric.map(|n| n.0)),
        int(numeric.map(|n| n.1)),
    ]
}

/// Issue "never load wrong data, round two" 7: a mixed-case schema and table on Redshift, which stores them folded
/// to lower case. The loader reads the catalog under the folded names, finds the existing target, and its drift check
/// runs: a column the source dropped fails the load by name before any load transaction, instead of loading NULL in
/// every row of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_case_target_is_found_under_redshifts_folded_names_and_its_drift_checked() -> Result<()> {
    let source = super::db(
        "rsmixed",
        "CREATE SCHEMA \"Sales\"; CREATE TABLE \"Sales\".\"Orders\" (\"Id\" int8 PRIMARY KEY, amount numeric(12,2));
         INSERT INTO \"Sales\".\"Orders\" SELECT g, g / 100.0 FROM generate_series(1, 100) g; ANALYZE;",
    )
    .await?;
    let api = DataApi::new();
    // The target as Redshift holds it, with a column the source no longer has; the staging table as the run made it.
    api.answer(
        |sql| sql.contains("FROM information_schema.columns WHERE table_schema = 'sales' AND table_name = 'orders' "),
        vec![
            catalog_row("id", "bigint", None, Some((64, 0))),
            catalog_row("amount", "numeric", None, Some((12, 2))),
            catalog_row("dropped", "character varying", Some(256), None),
        ],
    );
    api.answer(
        |sql| sql.contains("WHERE table_schema = 'sales' AND table_name = 'orders__pgshift"),
        vec![
            catalog_row("id", "bigint", None, Some((64, 0))),
            catalog_row("amount", "numeric", None, Some((12, 2))),
        ],
    );
    let (out, _) = run_redshift(&source, &["Sales.Orders"], &api, "rsmixed", |_| {}).await?;
    let failure = out.output.expect_err("the drift is refused");
    let text = format!("{failure}");
    assert!(text.contains("Pipeline.Fatal.SchemaDrift"), "{text}");
    assert!(text.contains("dropped") && text.contains("no longer"), "{text}");
    assert!(
        !api.submitted().iter().any(|s| is_load(&s.sqls)),
        "no load transaction was sent"
    );
    // Every catalog read used the folded names.
    let reads: Vec<String> = api
        .statements()
        .into_iter()
        .filter(|s| s.contains("information_schema.columns"))
        .collect();
    assert!(
        !reads.is_empty() && reads.iter().all(|s| !s.contains("'Sales'") && !s.contains("'Orders")),
        "{reads:?}"
    );
    Ok(())
}
