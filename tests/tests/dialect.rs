//! The Redshift SQL of a load, shown before it runs: `pgshift load --dry-run`'s transactions for a `redshift://` URL
//! (the loader's own code against a recording warehouse, nothing written to the stage) for each mode, the atomic
//! run, JSON into SUPER, schema evolution of an assumed target, a mixed-case table and an empty one; each asserted, and
//! every statement parsed by an independent parser with a Redshift dialect (sqlglot): a second opinion on syntax, not
//! proof. Where it and the AWS docs disagree, the docs win and the allowance below says why.

use std::sync::Arc;

use anyhow::{Context, Result};
use pgshift::contract::load::{Atomicity, LoadMode, LoadOptions, LoadRequest, SchemaEvolution};
use pgshift::contract::model::TableRef;
use pgshift::contract::plan::{PlanRequest, TableOverride};
use pgshift::warehouse::dryrun::DryRunWarehouse;
use pgshift::warehouse::WarehouseColumn;
use pgshift::UrlStages;
use pgshift_tests::{list_files, stage_dir};

use super::db;
use super::load::{plan_and_extract, plan_and_extract_request, plan_url};

const SOURCE: &str = r#"
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text, placed timestamptz NOT NULL);
INSERT INTO sales.orders SELECT g, g / 100.0, CASE WHEN g % 3 = 0 THEN 'n' || g END,
    TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 minute' FROM generate_series(1, 3000) g;
CREATE TABLE sales.docs (id int4 PRIMARY KEY, body jsonb NOT NULL);
INSERT INTO sales.docs SELECT g, jsonb_build_object('n', g) FROM generate_series(1, 100) g;
CREATE TABLE sales."MixedCase" (id int4 PRIMARY KEY, v text);
INSERT INTO sales."MixedCase" SELECT g, 'v' || g FROM generate_series(1, 10) g;
CREATE TABLE sales.empty (id int4 PRIMARY KEY, v text);
ANALYZE;"#;

const WAREHOUSE: &str = "redshift://analytics/dw?db_user=loader&iam_role=arn:aws:iam::123456789012:role/pgshift-copy";

/// The statements sqlglot does not take, and why the AWS docs win.
const ALLOWED: &[(&str, &str)] = &[(
    "LOCK ",
    "Redshift's LOCK takes a list of tables (https://docs.aws.amazon.com/redshift/latest/dg/r_LOCK.html); sqlglot \
     models no LOCK statement and falls back to an opaque command",
)];

/// sqlglot's verdict on each statement: the expression it parsed it as, or its error; `Command` when it fell back to
/// an opaque command (no parse at all).
fn sqlglot(statements: &[String]) -> Result<Vec<String>> {
    let script = r#"
import json, sys
import sqlglot
out = []
for s in json.load(sys.stdin):
    try:
        e = sqlglot.parse_one(s, read="redshift", error_level=sqlglot.ErrorLevel.RAISE)
        out.append(type(e).__name__)
    except Exception as x:
        out.append("ERROR " + str(x).replace("\n", " "))
print(json.dumps(out))
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("python3 (scripts/setup.sh installs sqlglot)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(&serde_json::to_vec(statements)?)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "sqlglot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

struct Case {
    name: &'static str,
    options: LoadOptions,
    assumed: Vec<(TableRef, Vec<WarehouseColumn>)>,
}

fn col(name: &str, ty: &str) -> WarehouseColumn {
    WarehouseColumn {
        name: name.into(),
        data_type: ty.into(),
        char_length: None,
        precision: None,
        scale: None,
    }
}

fn cases() -> Vec<Case> {
    let with = |mode, atomic, f: fn(&mut LoadOptions)| {
        let mut o = LoadOptions {
            mode,
            atomic,
            ..LoadOptions::default()
        };
        f(&mut o);
        o
    };
    // The target of sales.orders as it is in the warehouse, without `note`: schema evolution adds it.
    let orders = vec![
        col("id", "bigint"),
        WarehouseColumn {
            precision: Some(12),
            scale: Some(2),
            ..col("amount", "numeric")
        },
        col("placed", "timestamp with time zone"),
    ];
    // The same target with `note` as an earlier run sized it, narrower than this run's longest value.
    let mut narrow = orders.clone();
    narrow.push(WarehouseColumn {
        char_length: Some(2),
        ..col("note", "character varying")
    });
    vec![
        Case {
            name: "replace",
            options: with(LoadMode::Replace, Atomicity::Table, |_| {}),
            assumed: vec![],
        },
        Case {
            name: "append",
            options: with(LoadMode::Append, Atomicity::Table, |_| {}),
            assumed: vec![],
        },
        Case {
            name: "merge",
            options: with(LoadMode::Merge, Atomicity::Table, |_| {}),
            assumed: vec![],
        },
        Case {
            name: "atomic run",
            options: with(LoadMode::Replace, Atomicity::Run, |_| {}),
            assumed: vec![],
        },
        Case {
            name: "json as super",
            options: with(LoadMode::Replace, Atomicity::Table, |o| o.json_as_super = true),
            assumed: vec![],
        },
        Case {
            // A target made by an earlier run whose longest note was shorter: widened first, whatever the policy.
            name: "longer text",
            options: with(LoadMode::Append, Atomicity::Table, |_| {}),
            assumed: vec![(TableRef::new("sales", "orders"), narrow.clone())],
        },
        Case {
            // The same, replaced: the new table is made with the new width, the old one is not widened first.
            name: "longer text, replaced",
            options: with(LoadMode::Replace, Atomicity::Table, |_| {}),
            assumed: vec![(TableRef::new("sales", "orders"), narrow.clone())],
        },
        Case {
            name: "schema evolution",
            options: with(LoadMode::Append, Atomicity::Table, |o| {
                o.schema_evolution = SchemaEvolution::AddAndWiden
            }),
            assumed: vec![(TableRef::new("sales", "orders"), orders)],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_runs_redshift_sql_for_every_mode_is_what_the_docs_allow_and_writes_nothing() -> Result<()> {
    let source = db("dialectsrc", SOURCE).await?;
    let dir = stage_dir("dialect");
    let stage = format!("file://{}", dir.display());
    let tables = ["sales.orders", "sales.docs", r#"sales."MixedCase""#, "sales.empty"];
    let plan = plan_and_extract(&source, &tables, &stage, Arc::new(UrlStages::default())).await?;
    let before = list_files(&dir);
    let mut all = Vec::new();
    let mut merged: Vec<String> = Vec::new();
    let mut appended: Option<String> = None;
    for c in cases() {
        let wh = Arc::new(DryRunWarehouse::of(WAREHOUSE, &c.assumed)?);
        let req = LoadRequest {
            plan_url: plan_url(&plan),
            options: c.options.clone(),
            ..LoadRequest::default()
        };
        let txs = pgshift::load::dry_run(Arc::new(UrlStages::default()), wh.clone(), req)
            .await
            .with_context(|| c.name)?;
        let flat: Vec<&String> = txs.iter().flat_map(|t| &t.statements).collect();
        let has = |s: &str| flat.iter().any(|x| x.contains(s));
        let count = |s: &str| flat.iter().filter(|x| x.contains(s)).count();
        let name = c.name;
        // Every table with rows is copied from its manifest with the URL's role; the empty one copies nothing.
        assert_eq!(count("FORMAT AS PARQUET MANIFEST"), 3, "{name}: {flat:#?}");
        assert!(has("IAM_ROLE 'arn:aws:iam::123456789012:role/pgshift-copy'"), "{name}");
        assert!(
            has(r#"COPY "sales"."MixedCase__pgshift_"#) || has(r#""MixedCase"#),
            "{name}: mixed case quoted"
        );
        assert!(
            has("SELECT 0 AS no_parts_to_copy"),
            "{name}: the empty table copies nothing"
        );
        assert!(has(r#"LOCK "pgshift"."load_log", "pgshift"."staging""#), "{name}");
        assert!(has(r#"INSERT INTO "pgshift"."load_log""#), "{name}");
        // Once each table committed, its statistics are asked for, outside the load transaction.
        assert!(
            txs.iter()
                .any(|t| t.statements == [r#"ANALYZE "sales"."orders" PREDICATE COLUMNS"#]),
            "{name}: {txs:#?}"
        );
        // Unbounded text is sized from the data: `note`'s longest value is 5 bytes.
        assert!(has(r#""note" VARCHAR(256)"#), "{name}: {flat:#?}");
        match name {
            "replace" | "atomic run" | "longer text, replaced" => {
                // Replace by rename: nothing depends on the (new) target, so the staging table becomes it.
                assert!(
                    has(r#"ALTER TABLE "sales"."orders__pgshift_"#) && has(r#"RENAME TO "orders""#),
                    "{name}: {flat:#?}"
                );
                assert!(has(r#"DROP TABLE "sales"."orders""#), "{name}");
                assert!(!has(r#"DELETE FROM "sales"."orders""#), "{name}: {flat:#?}");
            }
            "json as super" => assert!(has(r#"DELETE FROM "sales"."docs""#), "{name}: {flat:#?}"),
            "merge" => {
                assert!(
                    has(r#"MERGE INTO "sales"."orders" USING "sales"."orders__pgshift_"#),
                    "{name}: {flat:#?}"
                );
                assert!(
                    has("AS unique_keys_to_merge") && !has("DELETE FROM \"sales\""),
                    "{name}: {flat:#?}"
                );
                merged.extend(
                    flat.iter()
                        .filter(|s| {
                            s.contains("\"sales\".\"orders__pgshift_")
                                && (s.contains("unique_keys_to_merge") || s.starts_with("MERGE INTO"))
                        })
                        .map(|s| s.to_string()),
                );
            }
            _ => {
                assert!(!has("DELETE FROM \"sales\""), "{name}: an append deletes nothing");
                // Redshift enforces no key: a keyed append is guarded against leaving a key twice.
                let guards: Vec<&&String> = flat
                    .iter()
                    .filter(|s| s.contains("AS new_keys_to_append") && s.contains("\"sales\".\"orders\" t"))
                    .collect();
                assert_eq!(guards.len(), 1, "{name}: {flat:#?}");
                appended = Some(guards[0].to_string());
            }
        }
        if name == "atomic run" {
            let copies = txs
                .iter()
                .map(|t| t.statements.iter().filter(|s| s.starts_with("COPY ")).count())
                .max();
            assert_eq!(copies, Some(3), "{name}: one transaction loads the run");
        }
        if name == "json as super" {
            assert!(has("JSON_PARSE(\"body\")") && has("SUPER"), "{name}: {flat:#?}");
        }
        if name == "longer text, replaced" {
            assert!(!has("ALTER COLUMN"), "{name}: {flat:#?}");
            assert!(has(r#"RENAME TO "orders""#), "{name}: {flat:#?}");
        }
        if name == "longer text" {
            let widen = r#"ALTER TABLE "sales"."orders" ALTER COLUMN "note" TYPE VARCHAR(256)"#;
            // Alone in its transaction: Redshift alters a column's type outside a transaction block only.
            assert!(txs.iter().any(|t| t.statements == [widen]), "{name}: {txs:#?}");
        }
        if name == "schema evolution" {
            assert!(
                has(r#"ALTER TABLE "sales"."orders" ADD COLUMN "note""#),
                "{name}: {flat:#?}"
            );
        }
        all.extend(flat.into_iter().cloned());
        // The catalog reads too: Redshift SQL no local server runs (the rename's facts among them).
        let reads = wh.reads();
        if matches!(name, "replace" | "atomic run") {
            assert!(
                reads.iter().any(|r| r.contains("svv_relation_privileges")),
                "{name}: {reads:#?}"
            );
        }
        all.extend(reads);
    }
    assert_eq!(list_files(&dir), before, "a dry run writes nothing to the stage");
    all.extend(designed(&source, &stage).await?);
    merge_runs_on_postgres(&source, &merged).await?;
    append_guard_runs_on_postgres(&appended.context("the append's guard")?).await?;

    // The second opinion: every distinct statement parsed with sqlglot's Redshift dialect.
    all.sort();
    all.dedup();
    let verdicts = sqlglot(&all)?;
    let mut wrong = Vec::new();
    for (s, v) in all.iter().zip(&verdicts) {
        let allowed = ALLOWED.iter().any(|(prefix, _)| s.starts_with(prefix));
        let parsed = !v.starts_with("ERROR") && v != "Command";
        if !parsed && !allowed {
            wrong.push(format!("{v}: {s}"));
        }
        if parsed && allowed {
            wrong.push(format!("now parsed ({v}), drop its allowance: {s}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} statements:\n{}",
        wrong.len(),
        all.len(),
        wrong.join("\n")
    );
    Ok(())
}

/// A table design set per table (as `pgshift.toml`'s `[table."sales.orders"]` sets it): the target and its staging
/// table are created with it, a misspelt column fails the plan by name, and its statements are returned for sqlglot.
async fn designed(source: &str, stage: &str) -> Result<Vec<String>> {
    let over: TableOverride = toml::from_str(
        "distkey = \"id\"\nsortkey = [\"placed\", \"id\"]\nencode = { note = \"zstd\", amount = \"AZ64\" }",
    )?;
    let req = |over: TableOverride| PlanRequest {
        tables: vec!["sales.orders".into()],
        overrides: [("sales.orders".to_string(), over)].into(),
        stage: stage.to_string(),
        ..PlanRequest::default()
    };
    let plan = plan_and_extract_request(source, req(over.clone()), Arc::new(UrlStages::default())).await?;
    let wh = Arc::new(DryRunWarehouse::of(WAREHOUSE, &[])?);
    let load = LoadRequest {
        plan_url: plan_url(&plan),
        ..LoadRequest::default()
    };
    let txs = pgshift::load::dry_run(Arc::new(UrlStages::default()), wh, load).await?;
    let flat: Vec<String> = txs.into_iter().flat_map(|t| t.statements).collect();
    let creates: Vec<&String> = flat.iter().filter(|s| s.starts_with("CREATE TABLE")).collect();
    for table in [r#""sales"."orders" ("#, r#""sales"."orders__pgshift_"#] {
        let create = creates
            .iter()
            .find(|s| s.contains(table))
            .with_context(|| format!("{table}: {creates:#?}"))?;
        for says in [
            r#""amount" DECIMAL(12,2) ENCODE AZ64 NOT NULL"#,
            r#""note" VARCHAR(256) ENCODE ZSTD"#,
            r#") DISTSTYLE KEY DISTKEY ("id") SORTKEY ("placed", "id")"#,
        ] {
            assert!(create.contains(says), "{says} in {create}");
        }
    }
    // The target as such a load made it, assumed: its encoded columns read back as their types, so nothing drifts
    // and nothing is altered.
    let assumed = vec![(
        TableRef::new("sales", "orders"),
        vec![
            col("id", "bigint"),
            WarehouseColumn {
                precision: Some(12),
                scale: Some(2),
                ..col("amount", "numeric")
            },
            WarehouseColumn {
                char_length: Some(256),
                ..col("note", "character varying")
            },
            col("placed", "timestamp with time zone"),
        ],
    )];
    let again = LoadRequest {
        plan_url: plan_url(&plan),
        options: LoadOptions {
            mode: LoadMode::Append,
            ..LoadOptions::default()
        },
        ..LoadRequest::default()
    };
    let wh = Arc::new(DryRunWarehouse::of(WAREHOUSE, &assumed)?);
    let txs = pgshift::load::dry_run(Arc::new(UrlStages::default()), wh, again).await?;
    assert!(
        !txs.iter()
            .flat_map(|t| &t.statements)
            .any(|s| s.starts_with("ALTER TABLE")),
        "{txs:#?}"
    );
    let bad: TableOverride = toml::from_str("sortkey = [\"placd\"]")?;
    let err = plan_and_extract_request(source, req(bad), Arc::new(UrlStages::default()))
        .await
        .expect_err("a misspelt sortkey column fails the plan");
    assert!(
        format!("{err:#}").contains(r#"[table."sales.orders"]: sortkey column "placd" is not a column"#),
        "{err:#}"
    );
    Ok(flat)
}

/// The append's key guard, as the dry run printed it, run on PostgreSQL: it passes while the run's keys are new and
/// once each, and fails when one is in the target already or twice among the run's rows.
async fn append_guard_runs_on_postgres(guard: &str) -> Result<()> {
    let staging = guard
        .split(" JOIN ")
        .nth(1)
        .and_then(|r| r.split(" s ON ").next())
        .context("the staging table")?
        .to_string();
    let wh = db(
        "appendwh",
        &format!(
            "CREATE SCHEMA sales; CREATE TABLE sales.orders (id int8, note text); \
             INSERT INTO sales.orders SELECT g, 'old' FROM generate_series(5001, 5010) g; \
             CREATE TABLE {staging} (LIKE sales.orders); \
             INSERT INTO {staging} SELECT g, 'new' FROM generate_series(1, 3000) g;"
        ),
    )
    .await?;
    let c = pgshift_tests::connect(&wh).await?;
    c.batch_execute(guard).await.context("new keys, once each")?;
    for bad in [
        format!("INSERT INTO {staging} VALUES (5001, 'in the target')"),
        format!("DELETE FROM {staging} WHERE id = 5001; INSERT INTO {staging} VALUES (1, 'twice')"),
    ] {
        c.batch_execute(&bad).await?;
        let e = c.batch_execute(guard).await.expect_err(&bad);
        let said = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        assert!(said.contains("division by zero"), "{bad}: {e:?}");
    }
    Ok(())
}

/// Redshift's `MERGE` and its guard are PostgreSQL's too (15+): run as the dry run printed them against a target with
/// rows to update and rows the run does not touch, the target then holds the source's rows, by the test's own
/// fingerprint, and the untouched ones as they were; a staging table with a key twice fails the guard.
async fn merge_runs_on_postgres(source: &str, statements: &[String]) -> Result<()> {
    let [guard, merge] = statements else {
        anyhow::bail!("the merge of sales.orders: its guard and its MERGE, not {statements:#?}");
    };
    let staging = merge
        .split(" USING ")
        .nth(1)
        .and_then(|r| r.split(" AS s ").next())
        .context("the staging table")?
        .to_string();
    let wh = db(
        "mergewh",
        &format!(
            "CREATE SCHEMA sales; \
             CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text, placed timestamptz NOT NULL); \
             INSERT INTO sales.orders SELECT g, 7.77, 'old', TIMESTAMPTZ '2020-01-01' FROM generate_series(1, 100) g; \
             INSERT INTO sales.orders SELECT g, 7.77, 'kept', TIMESTAMPTZ '2020-01-01' FROM generate_series(5001, 5010) g; \
             CREATE TABLE {staging} (LIKE sales.orders); \
             INSERT INTO {staging} SELECT g, g / 100.0, CASE WHEN g % 3 = 0 THEN 'n' || g END, \
                 TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 minute' FROM generate_series(1, 3000) g; \
             CREATE SCHEMA checks; CREATE VIEW checks.merged AS SELECT * FROM sales.orders WHERE id <= 3000;"
        ),
    )
    .await?;
    let c = pgshift_tests::connect(&wh).await?;
    c.batch_execute(&format!("BEGIN; {guard}; {merge}; COMMIT;")).await?;
    let key = ["id".to_string()];
    let merged = pgshift_tests::fingerprint::fingerprint_of(&wh, ("checks", "merged"), &[], &key, &[]).await?;
    let want = pgshift_tests::fingerprint::fingerprint_of(source, ("sales", "orders"), &[], &key, &[]).await?;
    assert_eq!(merged, want, "the merged rows are the source's");
    let kept: i64 = c
        .query_one(
            "SELECT count(*) FROM sales.orders WHERE id > 5000 AND amount = 7.77 AND note = 'kept'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(kept, 10, "rows the run does not touch are as they were");
    c.batch_execute(&format!("INSERT INTO {staging} SELECT * FROM {staging} WHERE id = 1"))
        .await?;
    let e = c.batch_execute(guard).await.expect_err("a key twice");
    let said = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert!(said.contains("division by zero"), "{e:?}");
    Ok(())
}

/// `--incremental diff` on Redshift: the second run's load, dry: the changed rows and a row per deleted key copied
/// with the deleted flag, the guard that the target is as the first run left it, the deletes and upserts by key
/// (`DELETE … USING`, <https://docs.aws.amazon.com/redshift/latest/dg/r_DELETE.html>), the insert of the rows only,
/// and the target's count checked; every statement parsed by sqlglot's Redshift dialect. The same statements (but
/// LOCK's) run on PostgreSQL in `incremental.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_loads_redshift_sql_deletes_and_upserts_by_key_after_its_guard() -> Result<()> {
    let source = db("dialectincsrc", SOURCE).await?;
    let first_wh = pgshift_tests::cluster().create_db("dialectincwh").await?;
    let dir = stage_dir("dialect-incremental");
    let stage = format!("file://{}", dir.display());
    let mut req = super::pipeline::request(&stage, &["sales.orders"], 3);
    req.incremental = pgshift::contract::incremental::Incremental::Diff;
    req.settings.static_source = true;
    req.run_id = Some("dialect-inc-1".into());
    let out = super::pipeline::run_local(
        &source,
        req.clone(),
        Arc::new(UrlStages::default()),
        Arc::new(pgshift::warehouse::postgres::PgWarehouse::new(&first_wh)?),
    )
    .await?;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    pgshift_tests::connect(&source)
        .await?
        .batch_execute("UPDATE sales.orders SET note = 'x' WHERE id = 7; DELETE FROM sales.orders WHERE id = 2999;")
        .await?;
    req.run_id = Some("dialect-inc-2".into());
    let plan = plan_and_extract_request(&source, req, Arc::new(UrlStages::default())).await?;
    let wh = Arc::new(DryRunWarehouse::of(WAREHOUSE, &[])?);
    let load = LoadRequest {
        plan_url: plan_url(&plan),
        ..LoadRequest::default()
    };
    let txs = pgshift::load::dry_run(Arc::new(UrlStages::default()), wh.clone(), load).await?;
    let flat: Vec<String> = txs.iter().flat_map(|t| t.statements.clone()).collect();
    let has = |s: &str| flat.iter().any(|x| x.contains(s));
    for s in [
        r#""_pgshift_deleted" BOOLEAN NOT NULL"#,
        r#", "_pgshift_deleted") FROM '"#,
        "AS target_as_its_last_run_left_it",
        r#"DELETE FROM "sales"."orders" USING "sales"."orders__pgshift_"#,
        r#"WHERE NOT "_pgshift_deleted""#,
        r#"SELECT 1 / (CASE WHEN c.n = 2999 AND c.s = "#,
        "AS target_holds_the_source_rows",
    ] {
        assert!(has(s), "{s}: {flat:#?}");
    }
    assert!(
        !has(r#"RENAME TO "orders""#),
        "an incremental load keeps its target: {flat:#?}"
    );
    let mut all = flat.clone();
    all.extend(wh.reads());
    all.sort();
    all.dedup();
    let verdicts = sqlglot(&all)?;
    let wrong: Vec<String> = all
        .iter()
        .zip(&verdicts)
        .filter(|(s, v)| (v.starts_with("ERROR") || *v == "Command") && !ALLOWED.iter().any(|(p, _)| s.starts_with(p)))
        .map(|(s, v)| format!("{v}: {s}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}
