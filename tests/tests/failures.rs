//! Bad input and failures: each is a clear error naming the thing, and no partial file is ever visible.

use std::sync::Arc;

use anyhow::Result;
use futures_util::future::BoxFuture;
use pgshift::contract::model::{Bounds, KeyType, KeyValue, WriterSettings};
use pgshift::contract::types::{Cast, InfinityPolicy, TypePolicies};
use pgshift::source::SourceError;
use pgshift::stage::StageOpener;
use pgshift::stage::{ObjectWriter, Stage, StageError};
use pgshift::{ExtractContext, ExtractError};
use pgshift_tests::{connect, list_files};

use super::{ctx, db, stage_path, task_for};

fn err_of<T: std::fmt::Debug>(r: Result<T, ExtractError>) -> ExtractError {
    r.expect_err("the extraction must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tables_and_columns_are_named() -> Result<()> {
    let url = db("unknown", "CREATE TABLE t (id int8 PRIMARY KEY, v text);").await?;
    let task = task_for(&url, "t", &TypePolicies::default(), &[]).await?;

    let mut missing = task.clone();
    missing.table.name = "nope".into();
    let e = err_of(pgshift::extract(&ctx(&url), missing).await);
    assert!(matches!(e, ExtractError::Source(SourceError::TableNotFound(_))), "{e}");
    assert!(e.to_string().contains("public.nope"), "{e}");
    assert_eq!(e.name(), "Pipeline.Fatal.NotFound");

    let mut col = task.clone();
    col.columns[1].name = "ghost".into();
    let e = err_of(pgshift::extract(&ctx(&url), col).await);
    assert!(
        e.to_string().contains("\"ghost\"") && e.to_string().contains("public.t"),
        "{e}"
    );

    // The table changed since planning: v is now an int.
    connect(&url)
        .await?
        .batch_execute("ALTER TABLE t ALTER COLUMN v TYPE int4 USING 0")
        .await?;
    let e = err_of(pgshift::extract(&ctx(&url), task).await);
    assert!(
        matches!(e, ExtractError::Source(SourceError::SchemaChanged { .. })),
        "{e}"
    );
    assert_eq!(e.name(), "Pipeline.Fatal.SchemaChanged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_types_are_refused_until_cast() -> Result<()> {
    let url = db(
        "unsupported",
        "CREATE TABLE g (id int8 PRIMARY KEY, p point, r int4range);
        INSERT INTO g VALUES (1, '(1,2)', '[1,5)');",
    )
    .await?;
    let e = task_for(&url, "g", &TypePolicies::default(), &[])
        .await
        .expect_err("point has no mapping");
    let msg = e.to_string();
    assert!(
        msg.contains("\"p\"") && msg.contains("point") && msg.contains("cast"),
        "{msg}"
    );

    let casts = [("p".to_string(), Cast::Text), ("r".to_string(), Cast::Text)];
    let task = task_for(&url, "g", &TypePolicies::default(), &casts).await?;
    let r = pgshift::extract(&ctx(&url), task.clone()).await?;
    let (cols, _) = pgshift_tests::parquet_text::read_rust(&super::paths(&r))?;
    assert_eq!(cols[1].1, vec![Some("(1,2)".to_string())]);
    assert_eq!(cols[2].1, vec![Some("[1,5)".to_string())]);

    // A key of a type pgshift cannot range on.
    let url = db(
        "badkey",
        "CREATE TABLE bk (id float8 PRIMARY KEY); INSERT INTO bk VALUES (1.5);",
    )
    .await?;
    let mut t = task_for(&url, "bk", &TypePolicies::default(), &[]).await?;
    t.bounds = Bounds::Key {
        lower: Some(vec![KeyValue::new(KeyType::Int8, "1")]),
        upper: None,
    };
    let e = err_of(pgshift::extract(&ctx(&url), t).await);
    assert!(
        matches!(e, ExtractError::Source(SourceError::UnsupportedKeyType { .. })),
        "{e}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_do_not_fit_name_table_column_and_key() -> Result<()> {
    let url = db(
        "values",
        "CREATE TABLE v (id int8 PRIMARY KEY, n numeric, d date);
        INSERT INTO v VALUES (1, 1.5, '2020-01-01'), (2, 123456789012345678901234.5, '2020-01-01');",
    )
    .await?;
    let task = task_for(&url, "v", &TypePolicies::default(), &[]).await?;
    let e = err_of(pgshift::extract(&ctx(&url), task.clone()).await);
    let msg = e.to_string();
    assert!(
        msg.contains("public.v.n") && msg.contains("\"2\"::int8") && msg.contains("integer digits"),
        "{msg}"
    );
    assert_eq!(e.name(), "Pipeline.Fatal.BadValue");
    let files = list_files(&stage_path(&task));
    assert!(
        !files.iter().any(|f| f.ends_with(".parquet")),
        "no part appears for a failed range: {files:?}"
    );
    // Only the attempt's record, for the run report: its error by name.
    let record = files.iter().find(|f| f.ends_with("part-00000.attempt-0.failed.json"));
    let record = std::fs::read_to_string(stage_path(&task).join(record.expect("the failed attempt is recorded")))?;
    assert!(record.contains("Pipeline.Fatal.BadValue"), "{record}");

    let client = connect(&url).await?;
    client
        .batch_execute("UPDATE v SET n = 1.0000000000000000001 WHERE id = 2")
        .await?;
    let msg = err_of(pgshift::extract(&ctx(&url), task.clone()).await).to_string();
    assert!(
        msg.contains("fractional digits") && msg.contains("no rounding"),
        "{msg}"
    );
    client.batch_execute("UPDATE v SET n = 'NaN' WHERE id = 2").await?;
    let msg = err_of(pgshift::extract(&ctx(&url), task.clone()).await).to_string();
    assert!(msg.contains("NaN"), "{msg}");

    // As text, any numeric passes exactly.
    let text = TypePolicies {
        unconstrained_numeric_as_text: true,
        ..Default::default()
    };
    client
        .batch_execute("UPDATE v SET n = 123456789012345678901234567890.123456789 WHERE id = 2")
        .await?;
    let t = task_for(&url, "v", &text, &[]).await?;
    let r = pgshift::extract(&ctx(&url), t).await?;
    let (cols, _) = pgshift_tests::parquet_text::read_rust(&super::paths(&r))?;
    assert!(cols[1]
        .1
        .contains(&Some("123456789012345678901234567890.123456789".to_string())));

    // Postgres' last millennia of timestamps do not fit Parquet's INT64 microseconds: an error, not a wrap.
    client.batch_execute("ALTER TABLE v ADD COLUMN ts timestamp; UPDATE v SET n = 1, ts = '294276-12-31 23:59:59.999999' WHERE id = 2").await?;
    let t = task_for(&url, "v", &TypePolicies::default(), &[]).await?;
    let msg = err_of(pgshift::extract(&ctx(&url), t).await).to_string();
    assert!(
        msg.contains("public.v.ts") && msg.contains("294276-12-31 23:59:59.999999") && msg.contains("Parquet"),
        "{msg}"
    );
    client.batch_execute("ALTER TABLE v DROP COLUMN ts").await?;

    // ±infinity: an error by default, NULL or clamped on request.
    client
        .batch_execute("UPDATE v SET n = 1, d = 'infinity' WHERE id = 2")
        .await?;
    let msg = err_of(pgshift::extract(&ctx(&url), task.clone()).await).to_string();
    assert!(
        msg.contains("public.v.d") && msg.contains("infinity") && msg.contains("\"2\"::int8"),
        "{msg}"
    );
    for (policy, want) in [
        (InfinityPolicy::Null, None),
        (InfinityPolicy::Clamp, Some("106762939".to_string())),
    ] {
        let p = TypePolicies {
            infinity: policy,
            ..Default::default()
        };
        let t = task_for(&url, "v", &p, &[]).await?;
        let r = pgshift::extract(&ctx(&url), t).await?;
        let (cols, _) = pgshift_tests::parquet_text::read_rust(&super::paths(&r))?;
        let row2 = cols[0].1.iter().position(|v| v.as_deref() == Some("2")).expect("row 2");
        assert_eq!(cols[2].1[row2], want, "{policy:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_privilege_is_named() -> Result<()> {
    let url = db("privs", "CREATE TABLE secret (id int8 PRIMARY KEY, v text);
        CREATE TABLE partly (id int8 PRIMARY KEY, open text, hidden text);
        DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reader') THEN CREATE ROLE reader LOGIN; END IF; END $$;
        GRANT SELECT (id, open) ON partly TO reader;").await?;
    let task = task_for(&url, "secret", &TypePolicies::default(), &[]).await?;
    let reader_url = url.replace("postgres://postgres@", "postgres://reader@");
    let e = err_of(pgshift::extract(&ctx(&reader_url), task).await);
    assert!(
        matches!(e, ExtractError::Source(SourceError::PermissionDenied { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("public.secret"), "{e}");

    let task = task_for(&url, "partly", &TypePolicies::default(), &[]).await?;
    let e = err_of(pgshift::extract(&ctx(&reader_url), task.clone()).await);
    assert!(e.to_string().contains("\"hidden\""), "{e}");
    let mut granted = task;
    granted.columns.retain(|c| c.name != "hidden");
    pgshift::extract(&ctx(&reader_url), granted).await?;
    Ok(())
}

/// A stage that kills the source backend when the first file is opened: mid-stream, by construction.
struct KillOnCreate {
    inner: Arc<dyn Stage>,
    admin_url: String,
    app: String,
}

impl Stage for KillOnCreate {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        Box::pin(async move {
            if !key.ends_with(".parquet") {
                // The failed attempt's record, written after the kill.
                return self.inner.create(key).await;
            }
            let admin = connect(&self.admin_url).await.expect("admin connection");
            let killed: i64 = admin
                .query_one(
                    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = $1",
                    &[&self.app],
                )
                .await
                .expect("terminate")
                .get(0);
            assert_eq!(killed, 1, "exactly the extraction's backend");
            self.inner.create(key).await
        })
    }
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StageError>> {
        self.inner.head(key)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, StageError>> {
        self.inner.list(prefix)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bytes::Bytes, StageError>> {
        self.inner.get(key)
    }
    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<pgshift::stage::ObjectSum>, StageError>> {
        self.inner.checksum(key)
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        self.inner.delete_prefix(prefix)
    }
}

pub(crate) struct Opener(pub(crate) Arc<dyn Stage>);
impl StageOpener for Opener {
    fn open<'a>(&'a self, _url: &'a str) -> BoxFuture<'a, Result<Arc<dyn Stage>, StageError>> {
        let stage = self.0.clone();
        Box::pin(async move { Ok(stage) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_stream_leaves_no_file() -> Result<()> {
    let url = db(
        "drop",
        "CREATE TABLE d (id int8 PRIMARY KEY, payload text NOT NULL);
        INSERT INTO d SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 300000) g;",
    )
    .await?;
    let mut task = task_for(&url, "d", &TypePolicies::default(), &[]).await?;
    task.writer = WriterSettings {
        batch_bytes: 64 * 1024,
        ..WriterSettings::default()
    };
    let app = "pgshift-drop-test";
    let source_url = format!("{url}?application_name={app}");
    let stage: Arc<dyn Stage> = Arc::from(pgshift::stage::open(&task.stage)?);
    let ctx = ExtractContext {
        source: Arc::new(pgshift::source::PgConnector::new(&source_url)?),
        stages: Arc::new(Opener(Arc::new(KillOnCreate {
            inner: stage,
            admin_url: url.clone(),
            app: app.into(),
        }))),
    };
    let e = err_of(pgshift::extract(&ctx, task.clone()).await);
    assert!(
        e.is_retryable(),
        "a dropped connection is worth a retry: {e} ({})",
        e.name()
    );
    let msg = e.to_string();
    assert!(
        msg.contains("terminating connection") || msg.contains("closed"),
        "says what happened: {msg}"
    );
    let files = list_files(&stage_path(&task));
    assert_eq!(
        files,
        ["test-run/public/d/part-00000.attempt-0.failed.json"],
        "no partial or temporary file remains, only the attempt's record"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_cannot_succeed_fail_within_seconds_by_name_and_transient_ones_are_named_retryable(
) -> Result<()> {
    use pgshift::source::SourceConnector;
    let url = db("connfail", "SELECT 1").await?;
    let base = url.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or_default();
    let port = base.rsplit(':').next().unwrap_or_default().to_string();
    let unused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let cases = [
        // (connection string, stable name, what the message must say)
        (
            url.replace("postgres://postgres@", "postgres://no_such_role@"),
            "Pipeline.Fatal.PermissionDenied",
            vec!["no_such_role", "check the user and password"],
        ),
        (
            format!("{base}/no_such_database"),
            "Pipeline.Fatal.NotFound",
            vec!["no_such_database", "check the database name"],
        ),
        (
            url.replace("127.0.0.1", "no-such-host.invalid"),
            "Pipeline.Fatal.NotFound",
            vec!["no-such-host.invalid", "check the host name"],
        ),
        // Nobody listens: a server restarting looks the same, so this one is worth a retry.
        (
            url.replace(&format!(":{port}/"), &format!(":{unused}/")),
            "Pipeline.Retryable.SourceUnavailable",
            vec!["127.0.0.1"],
        ),
    ];
    for (conn, name, says) in cases {
        // At once: one attempt, no retry inside the connector (the state machine's Retry decides by the name).
        let t0 = std::time::Instant::now();
        let e = match pgshift::PgConnector::new(&conn)?.connect().await {
            Ok(_) => anyhow::bail!("{conn}: connected"),
            Err(e) => e,
        };
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{conn}: failed after {:?}",
            t0.elapsed()
        );
        assert_eq!(e.name(), name, "{conn}: {e}");
        let text = e.to_string();
        for s in says {
            assert!(text.contains(s), "{conn}: {text:?} should say {s:?}");
        }
        assert!(text.contains(':'), "names host and port: {text}");
    }
    // The run's first contact (the planner's): nobody listening is a wrong host or port, named at once, not retried.
    let closed = url.replace(&format!(":{port}/"), &format!(":{unused}/"));
    let e = match pgshift::PgConnector::new(&closed)?.connect_first().await {
        Ok(_) => anyhow::bail!("{closed}: connected"),
        Err(e) => e,
    };
    assert_eq!(e.name(), "Pipeline.Fatal.NotFound", "{e}");
    assert!(e.to_string().contains("nothing listens there"), "{e}");
    Ok(())
}
