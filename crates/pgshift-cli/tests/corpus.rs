//! The bad-input corpus: the `pgshift` binary given wrong URLs, flags, config files, plans, tasks, types, values and
//! names. Every case must exit with a failure within 20 s (killed and failed past that; a run's first contact with a
//! server, 5 s), without a panic, with an error that names the thing that is wrong, with the exit code of its class
//! where the case says one, and leave the warehouse untouched.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
CREATE TABLE public.nokey (v text);
INSERT INTO public.nokey VALUES ('a');
CREATE TABLE public.\"MixedCase\" (id int4 PRIMARY KEY);
ANALYZE;";

/// One case: its name, the arguments (with `{src}`, `{wh}`, `{stage}`, `{dir}` filled in), and what its error must
/// say (every fragment, case-insensitively).
struct Case {
    name: &'static str,
    args: &'static str,
    says: &'static [&'static str],
    /// How long it may take (default [`LIMIT`]).
    within: Option<Duration>,
    /// The exit code it must end with (`commands::exit`: 2 usage, 3 failed for good, 4 retryable).
    code: Option<i32>,
    /// Environment variables set for it; an empty value removes the variable.
    env: &'static [(&'static str, &'static str)],
}

const fn case(name: &'static str, args: &'static str, says: &'static [&'static str]) -> Case {
    Case {
        name,
        args,
        says,
        within: None,
        code: None,
        env: &[],
    }
}

impl Case {
    /// A run's first contact with a server: named within 5 s, not after retries.
    const fn first_contact(mut self) -> Self {
        self.within = Some(Duration::from_secs(5));
        self
    }

    const fn exits(mut self, code: i32) -> Self {
        self.code = Some(code);
        self
    }

    const fn env(mut self, env: &'static [(&'static str, &'static str)]) -> Self {
        self.env = env;
        self
    }
}

/// No AWS set-up at all: no region, no credentials, no instance metadata to ask.
const NO_AWS: &[(&str, &str)] = &[
    ("AWS_REGION", ""),
    ("AWS_DEFAULT_REGION", ""),
    ("AWS_PROFILE", ""),
    ("AWS_ACCESS_KEY_ID", ""),
    ("AWS_SECRET_ACCESS_KEY", ""),
    ("AWS_ENDPOINT_URL", ""),
    ("AWS_ENDPOINT_URL_S3", ""),
    ("AWS_CONFIG_FILE", "/nonexistent/config"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// `run` with a good source, stage and warehouse before the rest of the flags.
const RUN: &str = "run --source {src} --stage {stage} --warehouse {wh} --progress none";

fn cases() -> Vec<Case> {
    vec![
        // URLs
        case(
            "source scheme",
            "run --source mysql://u@h/db --stage {stage} --warehouse {wh} --tables t",
            &["scheme \"mysql\"", "use postgres://"],
        ),
        case(
            "source port",
            "run --source postgres://u@h:port/db --stage {stage} --warehouse {wh} --tables t",
            &["port \"port\" is not a number"],
        ),
        case(
            "source sslmode",
            "plan --source postgres://u@127.0.0.1/db?sslmode=sometimes --stage {stage} --tables t",
            &["unknown sslmode \"sometimes\""],
        ),
        case(
            "source unknown host",
            "plan --source postgres://u@no-such-host.invalid:5432/db --stage {stage} --tables t",
            &[
                "no-such-host.invalid:5432",
                "check the host name",
                "Pipeline.Fatal.NotFound",
            ],
        ),
        case(
            "source database missing",
            "plan --source {srv}/no_such_db --stage {stage} --tables t",
            &["database \"no_such_db\" does not exist", "check the database name"],
        ),
        case(
            "stage scheme",
            "plan --source {src} --stage ftp://x/y --tables sales.orders",
            &["\"ftp://x/y\": unsupported scheme"],
        ),
        case(
            "stage relative path",
            "plan --source {src} --stage file://relative/dir --tables sales.orders",
            &["needs an absolute path"],
        ),
        case(
            "stage through a file",
            "plan --source {src} --stage file://{dir}/afile/stage --tables sales.orders",
            &["afile/stage", "not a directory", "Pipeline.Fatal.Stage"],
        ),
        case(
            "warehouse scheme",
            "run --source {src} --stage {stage} --warehouse oracle://x/y --tables t",
            &["warehouse \"oracle://x/y\": use postgres://"],
        ),
        case(
            "redshift without credentials",
            "run --source {src} --stage {stage} --warehouse redshift://c/dw --tables t",
            &["iam_role", "is required"],
        ),
        case(
            "serverless without a workgroup",
            "run --source {src} --stage {stage} --warehouse redshift-serverless:///dw --tables t",
            &["expected <cluster or workgroup>/<database>"],
        ),
        case(
            "load with a bad warehouse",
            "load --plan file:///x/r/plan.json --warehouse mysql://x",
            &["warehouse \"mysql://x\": use postgres://"],
        ),
        case(
            "gc with a bad warehouse",
            "gc --warehouse mysql://x --snapshot-dir {dir}/snaps",
            &["warehouse \"mysql://x\": use postgres://"],
        ),
        // Flags
        case(
            "no source",
            "run --stage {stage} --warehouse {wh} --tables t",
            &["no source: pass --source"],
        ),
        case(
            "no stage",
            "run --source {src} --warehouse {wh} --tables t",
            &["no stage: pass --stage"],
        ),
        case(
            "no warehouse",
            "run --source {src} --stage {stage} --tables t",
            &["no warehouse: pass --warehouse"],
        ),
        case(
            "no tables",
            "run --source {src} --stage {stage} --warehouse {wh}",
            &["no tables: pass --tables"],
        ),
        case("unknown flag", "run --sauce x", &["unexpected argument '--sauce'"]),
        case(
            "zero extractors",
            "run --concurrency 0",
            &["'0' for '--concurrency", "not in 1.."],
        ),
        case(
            "zero load concurrency",
            "run --load-concurrency 0",
            &["'0' for '--load-concurrency", "not in 1.."],
        ),
        case(
            "parts not a number",
            "run --parts many",
            &["invalid value 'many' for '--parts"],
        ),
        case(
            "unknown mode",
            "run --mode upsert",
            &[
                "invalid value 'upsert' for '--mode",
                "possible values: replace, append, merge",
            ],
        ),
        case(
            "unknown atomicity",
            "run --atomic schema",
            &["invalid value 'schema' for '--atomic", "possible values: table, run"],
        ),
        case(
            "unknown schema evolution",
            "run --schema-evolution yes",
            &[
                "invalid value 'yes' for '--schema-evolution",
                "possible values: refuse, add-and-widen",
            ],
        ),
        case(
            "unknown infinity policy",
            "run --infinity zero",
            &[
                "invalid value 'zero' for '--infinity",
                "possible values: error, null, clamp",
            ],
        ),
        case(
            "unknown cast",
            "run --cast sales.orders.note=float",
            &["unknown cast \"float\": use text, json or numeric"],
        ),
        case(
            "cast without its table",
            "{run} --tables sales.* --cast note=text",
            &["name the table too", "--cast schema.table.note=text"],
        ),
        case(
            "cast without a column",
            "plan --source {src} --stage {stage} --tables t --cast =text",
            &["expected [schema.]table.column=cast"],
        ),
        case(
            "zstd level",
            "plan --source {src} --stage {stage} --tables sales.orders --zstd-level 100",
            &["zstd level 100", "--zstd-level from 1 to 22"],
        ),
        case(
            "row group of 0",
            "plan --source {src} --stage {stage} --tables sales.orders --row-group-mib 0",
            &["row groups of 0 bytes", "--row-group-mib from 1"],
        ),
        case(
            "file smaller than a row group",
            "plan --source {src} --stage {stage} --tables sales.orders --file-mib 1 --row-group-mib 16",
            &["cannot hold a row group", "--file-mib at least --row-group-mib"],
        ),
        case(
            "zero extractors in plan",
            "plan --source {src} --stage {stage} --tables t --max-concurrency 0",
            &["'0' for '--concurrency", "not in 1.."],
        ),
        case(
            "zero parts",
            "plan --source {src} --stage {stage} --tables t --parts 0",
            &["'0' for '--parts", "not in 1.."],
        ),
        case(
            "parts of zero bytes in the config file",
            "plan --config {dir}/zero.toml --source {src} --stage {stage} --tables sales.orders",
            &["target_part_bytes (--target-part-mib) is 0", "give 1 or more"],
        ),
        // The Redshift table design, checked at plan time against the columns.
        case(
            "a design naming a column the table lacks",
            "plan --config {dir}/design.toml --source {src} --stage {stage} --tables sales.orders",
            &[
                "[table.\"sales.orders\"]",
                "sortkey column \"placed\" is not a column of the table (its columns: id, amount, note)",
                "diststyle = \"key\" needs a distkey",
            ],
        )
        .exits(2),
        case(
            "a table section naming no table, cased otherwise",
            "plan --config {dir}/cased.toml --source {src} --stage {stage} --tables sales.orders",
            &[
                "[table.\"public.mixedcase\"] in the settings names no table of the source",
                "did you mean [table.\"public.MixedCase\"]",
            ],
        )
        .exits(2),
        // A merge matches by key: a keyless table is refused before anything is extracted or changed.
        case(
            "merge of a table without a key",
            "run --source {src} --stage {stage} --warehouse {wh} --progress none --tables public.nokey --mode merge",
            &["public.nokey", "--mode merge matches rows by key", "has no primary key", "--mode replace"],
        )
        .exits(2),
        case(
            "a writer typo in the config file",
            "plan --config {dir}/writer.toml --source {src} --stage {stage} --tables sales.orders",
            &["writer.toml", "compresion"],
        ),
        // Config files
        case(
            "config file missing",
            "run --config {dir}/nope.toml",
            &["nope.toml", "no such file"],
        ),
        case(
            "config not TOML",
            "run --config {dir}/garbage.toml",
            &["garbage.toml", "TOML parse error"],
        ),
        case(
            "config unknown key",
            "run --config {dir}/unknown.toml",
            &["unknown field `sauce`"],
        ),
        case(
            "config settings typo",
            "run --config {dir}/typo.toml",
            &["unknown field `slice`", "`slices`"],
        ),
        case(
            "config unknown mode",
            "run --config {dir}/mode.toml",
            &["unknown variant `upsert`"],
        ),
        case(
            "config unknown cast",
            "run --config {dir}/cast.toml",
            &["unknown variant `float`"],
        ),
        // Plans and tasks
        case(
            "plan missing",
            "load --plan file://{dir}/none/run/plan.json --warehouse {wh}",
            &["none/run/plan.json does not exist"],
        ),
        case(
            "plan URL not a plan",
            "load --plan file://{dir}/whatever.txt --warehouse {wh}",
            &["whatever.txt", "not a <stage>/<run>/plan.json URL"],
        ),
        case(
            "plan corrupt",
            "load --plan file://{dir}/stage-corrupt/r1/plan.json --warehouse {wh}",
            &[
                "stage-corrupt/r1/plan.json is not what pgshift wrote there",
                "EOF while parsing",
            ],
        ),
        case(
            "task file missing",
            "extract --source {src} --stage {stage} --task {dir}/none.json",
            &["none.json", "no such file"],
        ),
        case(
            "task not JSON",
            "extract --source {src} --stage {stage} --task {dir}/garbage.toml",
            &["--task", "garbage.toml: not JSON"],
        ),
        case(
            "task without columns",
            "extract --source {src} --stage {stage} --task {dir}/nocols-task.json",
            &["no columns to extract from sales.orders"],
        ),
        case(
            "task without a run id",
            "extract --source {src} --stage {stage} --task {dir}/norun-task.json",
            &["run_id is empty"],
        ),
        // Types and values
        case(
            "unsupported type",
            "plan --source {src} --stage {stage} --tables public.geo",
            &["location", "type point", "--cast public.geo.location=text"],
        ),
        case(
            "lower not below upper",
            "extract --source {src} --stage {stage} --table sales.orders --lower 10 --upper 5",
            &["--lower 10 is not below --upper 5"],
        ),
        case(
            "lower equal to upper",
            "extract --source {src} --stage {stage} --table sales.orders --lower 7 --upper 7",
            &["--lower 7 is not below --upper 7", "the range is empty"],
        ),
        case(
            "bound of the wrong arity",
            "extract --source {src} --stage {stage} --table sales.orders --lower 1 --lower 2",
            &["--lower has 2 value(s) for the 1 key column"],
        ),
        case(
            "bound not of the key's type",
            "extract --source {src} --stage {stage} --table sales.orders --lower abc",
            &["invalid input syntax for type bigint: \"abc\""],
        ),
        case(
            "cast naming another table",
            "extract --source {src} --stage {stage} --table sales.orders --cast public.geo.location=text",
            &["--cast public.geo.location: this extract reads sales.orders"],
        ),
        // Names
        case(
            "table not found",
            "{run} --tables sales.nope",
            &["table sales.nope not found"],
        ),
        case(
            "pattern matching nothing",
            "{run} --tables nope.*",
            &["pattern \"nope.*\" matches no table"],
        ),
        case(
            "everything excluded",
            "{run} --tables sales.* --exclude sales.*",
            &["pattern \"sales.*\" matches no table"],
        ),
        case(
            "table with no columns",
            "{run} --tables public.nocols",
            &["public.nocols has no columns", "--exclude public.nocols"],
        ),
        case(
            "extract of a missing table",
            "extract --source {src} --stage {stage} --table sales.nope",
            &["table sales.nope not found"],
        ),
        case(
            "extract by a missing key column",
            "extract --source {src} --stage {stage} --table sales.orders --key nope --lower 1",
            &["column \"nope\" not found in table sales.orders"],
        ),
        case(
            "report of a missing run",
            "report --plan file://{dir}/none/r/plan.json",
            &["none/r/plan.json does not exist"],
        ),
        case(
            "snapshot that does not exist",
            "{run} --tables sales.* --snapshot nope --snapshot-dir {dir}/snaps",
            &["snapshot nope not found", "Rds.DbSnapshotNotFoundException"],
        ),
        // A run's first contact with each server: named within 5 s, with host, port and what to do.
        case(
            "source without a password",
            "run --source {pwsrc} --stage {stage} --warehouse {wh} --progress none --tables sales.*",
            &["127.0.0.1:", "password missing", "PGPASSWORD is unset", "~/.pgpass", "Pipeline.Fatal.PermissionDenied"],
        )
        .first_contact()
        .exits(3),
        case(
            "source with a wrong password",
            "run --source {pwbadsrc} --stage {stage} --warehouse {wh} --progress none --tables sales.*",
            &["password authentication failed", "check the user and password", "the password in the connection string"],
        )
        .first_contact()
        .exits(3),
        case(
            "source on a closed port",
            "run --source postgres://postgres@127.0.0.1:1/db --stage {stage} --warehouse {wh} --progress none --tables sales.*",
            &["127.0.0.1:1", "nothing listens there", "check the host and port", "Pipeline.Fatal.NotFound"],
        )
        .first_contact()
        .exits(3),
        case(
            "warehouse on a closed port",
            "run --source {src} --stage {stage} --warehouse postgres://postgres@127.0.0.1:1/wh --progress none --tables sales.*",
            &["127.0.0.1:1", "nothing listens there", "before extracting anything", "Pipeline.Fatal.NotFound"],
        )
        .first_contact()
        .exits(3),
        case(
            "warehouse without a password",
            "run --source {src} --stage {stage} --warehouse {pwwh} --progress none --tables sales.*",
            &["password missing", "PGPASSWORD is unset", "Pipeline.Fatal.PermissionDenied"],
        )
        .first_contact()
        .exits(3),
        case(
            "S3 stage without an AWS region",
            "run --source {src} --stage s3://pgshift-corpus/stage --warehouse {wh} --progress none --tables sales.*",
            &["no AWS region", "AWS_REGION", "--region"],
        )
        .first_contact()
        .exits(3)
        .env(NO_AWS),
        case(
            "AWS call without credentials",
            "runs --state-machine arn:aws:states:us-east-1:123456789012:stateMachine:pgshift --region us-east-1",
            &["no AWS credentials", "AWS_PROFILE"],
        )
        .first_contact()
        .env(NO_AWS),
        // Errors that give the next step.
        case(
            "table typo",
            "{run} --tables sales.ordrs",
            &["table sales.ordrs not found", "did you mean sales.orders?"],
        )
        .exits(3),
        case(
            "schema typo in a pattern",
            "{run} --tables sale.*",
            &["pattern \"sale.*\" matches no table", "did you mean sales.*?"],
        )
        .exits(3),
        case(
            "a task list given as one task",
            "extract --source {src} --stage {stage} --task {dir}/tasks.json",
            &["holds 2 tasks", "--index N"],
        )
        .exits(2),
        case(
            "a task index past the list",
            "extract --source {src} --stage {stage} --task {dir}/tasks.json --index 7",
            &["--index 7", "holds 2 tasks", "--index 0 to 1"],
        )
        .exits(2),
        case(
            "no warehouse",
            "run --source {src} --stage {stage} --tables sales.*",
            &["no warehouse", "--warehouse"],
        )
        .exits(2),
        case(
            "events to a scheme that takes none",
            "{run} --tables sales.* --events s3://bucket/events.jsonl",
            &["--events", "scheme \"s3\"", "http://"],
        )
        .exits(2),
        // A server that accepts the connection and never answers: the whole handshake is bounded by connect_timeout,
        // as libpq bounds it (not only the socket's connect).
        case(
            "source that accepts and never answers",
            "plan --source postgres://u@127.0.0.1:{silent}/db?connect_timeout=2&sslmode=disable --stage {stage} --tables t",
            &["no answer within 2 s", "connect_timeout"],
        )
        .first_contact()
        .exits(4),
    ]
}

/// How long a case may run before it is killed and fails.
const LIMIT: Duration = Duration::from_secs(20);

/// Waits for `child` at most `limit`; kills it past that. Its output, and whether it was killed. The pipes are drained
/// on threads, so a chatty case cannot block on a full pipe.
fn bounded(mut child: Child, limit: Duration) -> anyhow::Result<(std::process::Output, bool)> {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>));
    let t0 = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t0.elapsed() > limit {
            child.kill()?;
            killed = true;
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().map_err(|_| anyhow::anyhow!("stdout reader"))?;
    let stderr = err.join().map_err(|_| anyhow::anyhow!("stderr reader"))?;
    Ok((std::process::Output { status, stdout, stderr }, killed))
}

struct Env {
    src: String,
    srv: String,
    wh: String,
    dir: PathBuf,
    /// A port whose listener accepts connections and never answers.
    silent: u16,
}

/// The role of the cases that must give a password (scram over TCP).
const PW_ROLE: &str = "corpus_pw";

fn fill(args: &str, env: &Env, stage: &Path) -> Vec<String> {
    let args = args.replace("{run}", RUN);
    args.split_whitespace()
        .map(|a| {
            let as_role = |url: &str, who: &str| url.replacen("postgres://postgres@", &format!("postgres://{who}@"), 1);
            a.replace("{pwsrc}", &as_role(&env.src, PW_ROLE))
                .replace("{pwbadsrc}", &as_role(&env.src, &format!("{PW_ROLE}:wrong")))
                .replace("{pwwh}", &as_role(&env.wh, PW_ROLE))
                .replace("{src}", &env.src)
                .replace("{silent}", &env.silent.to_string())
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
    write("zero.toml", "[settings]\ntarget_part_bytes = 0\n")?;
    write("writer.toml", "[writer]\ncompresion = \"snappy\"\n")?;
    write(
        "design.toml",
        "[table.\"sales.orders\"]\ndiststyle = \"key\"\nsortkey = [\"placed\"]\n",
    )?;
    write("cased.toml", "[table.\"public.mixedcase\"]\nparts = 2\n")?;
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
    write("tasks.json", &format!("[{}, {}]", task(col, "r"), task(col, "r")))?;
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
        cluster().password_role(PW_ROLE, "corpus-secret").await?;
        let wh = cluster().create_db("corpuswh").await?;
        anyhow::Ok((src, wh))
    })?;
    let srv = src.rsplit_once('/').map(|(s, _)| s.to_string()).unwrap_or_default();
    let dir = pgshift_tests::fresh_dir("corpus");
    files(&dir)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let env = Env {
        src,
        srv,
        wh,
        dir,
        silent,
    };
    let all = cases();
    assert!(all.len() >= 50, "{} cases", all.len());
    let mut wrong = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let stage = env.dir.join(format!("stage-{i}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgshift"));
        cmd.args(fill(c.args, &env, &stage))
            .env_remove("PGSHIFT_SOURCE")
            .env_remove("PGSHIFT_WAREHOUSE")
            // libpq's variables are honoured: none of the machine's may stand in for what a case leaves out.
            .env("HOME", &env.dir)
            .current_dir(&env.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for v in [
            "PGPASSWORD",
            "PGPASSFILE",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSSLMODE",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in c.env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let limit = c.within.unwrap_or(LIMIT);
        let t0 = Instant::now();
        let (out, killed) = bounded(cmd.spawn()?, limit)?;
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let lower = err.to_lowercase();
        let mut why = Vec::new();
        if out.status.success() {
            why.push("it succeeded".to_string());
        }
        if lower.contains("panicked") || (out.status.code().is_none() && !killed) {
            why.push("it panicked or was killed".into());
        }
        for s in c.says {
            if !lower.contains(&s.to_lowercase()) {
                why.push(format!("the error does not say {s:?}"));
            }
        }
        // A bad input is refused in seconds, not after retries of a permanent error: a case still running at the
        // limit is killed and fails, so a hang cannot stall the suite.
        if killed {
            why.push(format!("it was still running after {limit:?} and was killed"));
        }
        if let (Some(want), Some(got)) = (c.code, out.status.code()) {
            if want != got {
                why.push(format!("it exited {got}, not {want}"));
            }
        }
        if c.within.is_some() {
            eprintln!("{}: {:.2} s", c.name, took.as_secs_f64());
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
