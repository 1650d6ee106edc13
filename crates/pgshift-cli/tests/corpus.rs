//! The bad-input corpus: the `pgshift` binary given wrong URLs, flags, config files, plans, tasks, types, values and
//! names. Every case must exit with a failure, in seconds, without a panic, with an error that names the thing that
//! is wrong, and leave the warehouse untouched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgshift_tests::{cluster, connect};

/// The source every case that reaches a database reads: two tables, and the shapes that must be refused.
const SOURCE: &str = "
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text);
INSERT INTO sales.orders SELECT g, g / 100.0, 'n' || g FROM generate_series(1, 500) g;
CREATE TABLE public.nocols ();
CREATE TABLE public.geo (id int4 PRIMARY KEY, location point);
INSERT INTO public.geo VALUES (1, point(1, 2));
ANALYZE;";

/// One case: its name, the arguments (with `{src}`, `{wh}`, `{stage}`, `{dir}` filled in), and what its error must
/// say (every fragment, case-insensitively).
struct Case {
    name: &'static str,
    args: &'static str,
    says: &'static [&'static str],
}

const fn case(name: &'static str, args: &'static str, says: &'static [&'static str]) -> Case {
    Case { name, args, says }
}

/// `run` with a good source, stage and warehouse before the rest of the flags.
const RUN: &str = "run --source {src} --stage {stage} --warehouse {wh} --progress none";

fn cases() -> Vec<Case> {
    vec![
        // URLs
        case(
            "source scheme",
            "run --source mysql://u@h/db --stage {stage} --warehouse {wh} --tables t",
            &["scheme"],
        ),
        case(
            "source port",
            "run --source postgres://u@h:port/db --stage {stage} --warehouse {wh} --tables t",
            &["port"],
        ),
        case(
            "source sslmode",
            "plan --source postgres://u@127.0.0.1/db?sslmode=sometimes --stage {stage} --tables t",
            &["sslmode"],
        ),
        case(
            "source unknown host",
            "plan --source postgres://u@no-such-host.invalid:5432/db --stage {stage} --tables t",
            &["no-such-host.invalid", "Pipeline.Fatal.NotFound"],
        ),
        case(
            "source database missing",
            "plan --source {srv}/no_such_db --stage {stage} --tables t",
            &["no_such_db"],
        ),
        case(
            "stage scheme",
            "plan --source {src} --stage ftp://x/y --tables sales.orders",
            &["ftp://x/y"],
        ),
        case(
            "stage relative path",
            "plan --source {src} --stage file://relative/dir --tables sales.orders",
            &["absolute path"],
        ),
        case(
            "stage through a file",
            "plan --source {src} --stage file://{dir}/afile/stage --tables sales.orders",
            &["afile", "Pipeline.Fatal.Stage"],
        ),
        case(
            "warehouse scheme",
            "run --source {src} --stage {stage} --warehouse oracle://x/y --tables t",
            &["oracle"],
        ),
        case(
            "redshift without credentials",
            "run --source {src} --stage {stage} --warehouse redshift://c/dw --tables t",
            &["redshift"],
        ),
        case(
            "serverless without a workgroup",
            "run --source {src} --stage {stage} --warehouse redshift-serverless:///dw --tables t",
            &["workgroup"],
        ),
        case(
            "load with a bad warehouse",
            "load --plan file:///x/r/plan.json --warehouse mysql://x",
            &["mysql"],
        ),
        case(
            "gc with a bad warehouse",
            "gc --warehouse mysql://x --snapshot-dir {dir}/snaps",
            &["mysql"],
        ),
        // Flags
        case(
            "no source",
            "run --stage {stage} --warehouse {wh} --tables t",
            &["--source"],
        ),
        case(
            "no stage",
            "run --source {src} --warehouse {wh} --tables t",
            &["--stage"],
        ),
        case(
            "no warehouse",
            "run --source {src} --stage {stage} --tables t",
            &["--warehouse"],
        ),
        case(
            "no tables",
            "run --source {src} --stage {stage} --warehouse {wh}",
            &["--tables"],
        ),
        case("unknown flag", "run --sauce x", &["--sauce"]),
        case("zero extractors", "run --concurrency 0", &["--concurrency"]),
        case(
            "zero load concurrency",
            "run --load-concurrency 0",
            &["--load-concurrency"],
        ),
        case("parts not a number", "run --parts many", &["--parts", "many"]),
        case("unknown mode", "run --mode upsert", &["--mode", "upsert"]),
        case("unknown atomicity", "run --atomic schema", &["--atomic", "schema"]),
        case(
            "unknown schema evolution",
            "run --schema-evolution yes",
            &["--schema-evolution"],
        ),
        case(
            "unknown infinity policy",
            "run --infinity zero",
            &["--infinity", "zero"],
        ),
        case("unknown cast", "run --cast sales.orders.note=float", &["float"]),
        case(
            "cast without its table",
            "{run} --tables sales.* --cast note=text",
            &["--cast schema.table.note=text"],
        ),
        case(
            "cast without a column",
            "plan --source {src} --stage {stage} --tables t --cast =text",
            &["--cast"],
        ),
        case(
            "zstd level",
            "plan --source {src} --stage {stage} --tables sales.orders --zstd-level 100",
            &["--zstd-level"],
        ),
        case(
            "row group of 0",
            "plan --source {src} --stage {stage} --tables sales.orders --row-group-mib 0",
            &["--row-group-mib"],
        ),
        case(
            "file smaller than a row group",
            "plan --source {src} --stage {stage} --tables sales.orders --file-mib 1 --row-group-mib 16",
            &["--file-mib"],
        ),
        case(
            "zero extractors in plan",
            "plan --source {src} --stage {stage} --tables t --max-concurrency 0",
            &["--max-concurrency"],
        ),
        // Config files
        case("config file missing", "run --config {dir}/nope.toml", &["nope.toml"]),
        case("config not TOML", "run --config {dir}/garbage.toml", &["garbage.toml"]),
        case("config unknown key", "run --config {dir}/unknown.toml", &["sauce"]),
        case("config settings typo", "run --config {dir}/typo.toml", &["slice"]),
        case("config unknown mode", "run --config {dir}/mode.toml", &["upsert"]),
        case("config unknown cast", "run --config {dir}/cast.toml", &["float"]),
        // Plans and tasks
        case(
            "plan missing",
            "load --plan file://{dir}/none/run/plan.json --warehouse {wh}",
            &["plan.json"],
        ),
        case(
            "plan URL not a plan",
            "load --plan file://{dir}/whatever.txt --warehouse {wh}",
            &["plan.json"],
        ),
        case(
            "plan corrupt",
            "load --plan file://{dir}/stage-corrupt/r1/plan.json --warehouse {wh}",
            &["plan.json"],
        ),
        case(
            "task file missing",
            "extract --source {src} --stage {stage} --task {dir}/none.json",
            &["none.json"],
        ),
        case(
            "task not JSON",
            "extract --source {src} --stage {stage} --task {dir}/garbage.toml",
            &["garbage.toml"],
        ),
        case(
            "task without columns",
            "extract --source {src} --stage {stage} --task {dir}/nocols-task.json",
            &["no columns"],
        ),
        case(
            "task without a run id",
            "extract --source {src} --stage {stage} --task {dir}/norun-task.json",
            &["run_id"],
        ),
        // Types and values
        case(
            "unsupported type",
            "plan --source {src} --stage {stage} --tables public.geo",
            &["location", "point", "--cast public.geo.location=text"],
        ),
        case(
            "lower not below upper",
            "extract --source {src} --stage {stage} --table sales.orders --lower 10 --upper 5",
            &["--lower 10", "--upper 5"],
        ),
        case(
            "lower equal to upper",
            "extract --source {src} --stage {stage} --table sales.orders --lower 7 --upper 7",
            &["empty"],
        ),
        case(
            "bound of the wrong arity",
            "extract --source {src} --stage {stage} --table sales.orders --lower 1 --lower 2",
            &["--lower", "1 key column"],
        ),
        case(
            "bound not of the key's type",
            "extract --source {src} --stage {stage} --table sales.orders --lower abc",
            &["abc"],
        ),
        case(
            "cast naming another table",
            "extract --source {src} --stage {stage} --table sales.orders --cast public.geo.location=text",
            &["public.geo"],
        ),
        // Names
        case("table not found", "{run} --tables sales.nope", &["sales.nope"]),
        case("pattern matching nothing", "{run} --tables nope.*", &["nope.*"]),
        case(
            "everything excluded",
            "{run} --tables sales.* --exclude sales.*",
            &["sales.*"],
        ),
        case(
            "table with no columns",
            "{run} --tables public.nocols",
            &["public.nocols", "no columns", "--exclude public.nocols"],
        ),
        case(
            "extract of a missing table",
            "extract --source {src} --stage {stage} --table sales.nope",
            &["sales.nope"],
        ),
        case(
            "extract by a missing key column",
            "extract --source {src} --stage {stage} --table sales.orders --key nope --lower 1",
            &["nope"],
        ),
        case(
            "report of a missing run",
            "report --plan file://{dir}/none/r/plan.json",
            &["plan.json"],
        ),
        case(
            "snapshot that does not exist",
            "{run} --tables sales.* --snapshot nope --snapshot-dir {dir}/snaps",
            &["nope"],
        ),
    ]
}

struct Env {
    src: String,
    srv: String,
    wh: String,
    dir: PathBuf,
}

fn fill(args: &str, env: &Env, stage: &Path) -> Vec<String> {
    let args = args.replace("{run}", RUN);
    args.split_whitespace()
        .map(|a| {
            a.replace("{src}", &env.src)
                .replace("{srv}", &env.srv)
                .replace("{wh}", &env.wh)
                .replace("{stage}", &format!("file://{}", stage.display()))
                .replace("{dir}", &env.dir.display().to_string())
        })
        .collect()
}

fn files(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("stage-corrupt/r1"))?;
    let write = |name: &str, body: &str| std::fs::write(dir.join(name), body);
    write("afile", "a file, not a directory")?;
    write("garbage.toml", "this = is [not toml")?;
    write("unknown.toml", "sauce = \"x\"\n")?;
    write("typo.toml", "[settings]\nslice = 4\n")?;
    write("mode.toml", "[load]\nmode = \"upsert\"\n")?;
    write("cast.toml", "[table.\"sales.orders\"]\ncasts = { note = \"float\" }\n")?;
    write("whatever.txt", "x")?;
    write("stage-corrupt/r1/plan.json", "{\"not\": \"a plan\"")?;
    let task = |cols: &str, run: &str| {
        format!(
            "{{\"run_id\": \"{run}\", \"table\": {{\"schema\": \"sales\", \"name\": \"orders\"}}, \"columns\": {cols}, \
             \"range_index\": 0, \"bounds\": {{\"kind\": \"key\"}}, \"stage\": \"file:///tmp\"}}"
        )
    };
    write("nocols-task.json", &task("[]", "r"))?;
    let col = "[{\"name\": \"id\", \"type\": {\"name\": \"bigint\", \"oid\": 20, \"typmod\": -1}, \
               \"nullable\": false, \"mapping\": {\"as\": \"int64\"}}]";
    write("norun-task.json", &task(col, ""))?;
    Ok(())
}

/// Tables and schemas the warehouse holds beyond an empty database's.
async fn warehouse_objects(url: &str) -> anyhow::Result<i64> {
    let c = connect(url).await?;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
             AND nspname NOT IN ('public', 'information_schema')",
            &[],
        )
        .await?
        .get(0);
    let t: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await?
        .get(0);
    Ok(n + t)
}

#[test]
fn every_bad_input_fails_fast_by_name_without_a_panic_and_touches_nothing() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh) = rt.block_on(async {
        let src = cluster().create_db("corpussrc").await?;
        connect(&src).await?.batch_execute(SOURCE).await?;
        let wh = cluster().create_db("corpuswh").await?;
        anyhow::Ok((src, wh))
    })?;
    let srv = src.rsplit_once('/').map(|(s, _)| s.to_string()).unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("pgshift-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    files(&dir)?;
    let env = Env { src, srv, wh, dir };
    let all = cases();
    assert!(all.len() >= 50, "{} cases", all.len());
    let mut wrong = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let stage = env.dir.join(format!("stage-{i}"));
        let t0 = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
            .args(fill(c.args, &env, &stage))
            .env_remove("PGSHIFT_SOURCE")
            .env_remove("PGSHIFT_WAREHOUSE")
            .current_dir(&env.dir)
            .output()?;
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let lower = err.to_lowercase();
        let mut why = Vec::new();
        if out.status.success() {
            why.push("it succeeded".to_string());
        }
        if lower.contains("panicked") || out.status.code().is_none() {
            why.push("it panicked or was killed".into());
        }
        for s in c.says {
            if !lower.contains(&s.to_lowercase()) {
                why.push(format!("the error does not say {s:?}"));
            }
        }
        // A bad input is refused in seconds, not after retries of a permanent error.
        if took > Duration::from_secs(20) {
            why.push(format!("it took {took:?}"));
        }
        if !why.is_empty() {
            wrong.push(format!("{}: {} — stderr: {}", c.name, why.join("; "), err.trim()));
        }
    }
    let touched = rt.block_on(warehouse_objects(&env.wh))?;
    assert_eq!(touched, 0, "the warehouse was touched");
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        all.len(),
        wrong.join("\n\n")
    );
    Ok(())
}
