//! The S3 stage against a real S3-compatible HTTP server on loopback (s3s + s3s-fs, SigV4 checked).

use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pgshift::contract::model::{Compression, WriterSettings};
use pgshift::contract::types::TypePolicies;
use pgshift::stage::s3::{S3Options, S3Stage};
use pgshift::stage::{ObjectWriter, Stage, StageError, StagedObject};
use pgshift::{ExtractContext, ExtractError, UrlStages};
use pgshift_tests::{s3_server, S3Server};

use super::failures::Opener;
use super::{db, task_for};

fn s3_ctx(url: &str, server: &S3Server) -> ExtractContext {
    ExtractContext {
        source: Arc::new(pgshift::source::PgConnector::new(url).expect("connection string")),
        stages: Arc::new(UrlStages::with_s3_client(server.client(), S3Options::default())),
    }
}

/// A table whose Parquet (uncompressed) is a few S3 parts.
const WIDE: &str = "CREATE TABLE wide (id int8 PRIMARY KEY, a text NOT NULL, b text NOT NULL);
    INSERT INTO wide SELECT g, md5(g::text) || md5((g + 1)::text), md5((g * 3)::text) FROM generate_series(1, 250000) g;";

fn uncompressed() -> WriterSettings {
    WriterSettings {
        compression: Compression::None,
        row_group_bytes: 4 * 1024 * 1024,
        ..WriterSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_file_lands_whole_and_a_retry_overwrites_it() -> Result<()> {
    // A server of its own: the check below sees every upload the server holds.
    let server = S3Server::start()?;
    let bucket = server.bucket("multipart");
    let url = db("s3multi", WIDE).await?;
    let mut task = task_for(&url, "wide", &TypePolicies::default(), &[]).await?;
    task.stage = format!("s3://{bucket}/runs");
    task.writer = uncompressed();

    let first = pgshift::extract(&s3_ctx(&url, &server), task.clone()).await?;
    assert_eq!(first.files.len(), 1);
    let file = &first.files[0];
    assert!(
        file.bytes > 2 * pgshift::stage::s3::PART_BYTES as u64,
        "several parts: {} bytes",
        file.bytes
    );
    assert_eq!(
        file.url,
        format!("s3://{bucket}/runs/test-run/public/wide/part-00000-000.parquet")
    );

    let client = server.client();
    let key = "runs/test-run/public/wide/part-00000-000.parquet";
    let head = client.head_object().bucket(&bucket).key(key).send().await?;
    assert_eq!(
        head.content_length(),
        Some(file.bytes as i64),
        "the recorded size is the content length"
    );
    let etag = head.e_tag().unwrap_or_default().trim_matches('"').to_string();
    let parts: u64 = etag.rsplit_once('-').and_then(|(_, n)| n.parse().ok()).unwrap_or(1);
    assert!(parts >= 3, "a multipart object's ETag ends in -<parts>: {etag}");

    // An independent read of the object: every row, once.
    let body = client
        .get_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await?
        .body
        .collect()
        .await?
        .into_bytes();
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)?.build()?;
    let rows: usize = reader.map(|b| b.map(|b| b.num_rows())).sum::<Result<usize, _>>()?;
    assert_eq!(rows, 250_000);

    // A retry writes the same key: the run prefix holds the same object, nothing more, no upload left behind.
    let stage = S3Stage::new(server.client(), &format!("s3://{bucket}/runs"), S3Options::default())?;
    let before = stage.list("test-run/").await?;
    let again = pgshift::extract(&s3_ctx(&url, &server), task).await?;
    assert_eq!(again.files, first.files);
    let keys = |l: Vec<(String, u64)>| l.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let after = stage.list("test-run/").await?;
    assert_eq!(
        keys(after.clone()),
        keys(before.clone()),
        "the same objects, nothing added"
    );
    assert_eq!(
        keys(after.clone()),
        [
            "test-run/public/wide/part-00000-000.parquet",
            "test-run/public/wide/part-00000.result.json"
        ]
    );
    assert_eq!(after[0].1, file.bytes);
    assert!(
        server.uploads_in_progress().is_empty(),
        "{:?}",
        server.uploads_in_progress()
    );
    Ok(())
}

/// A stage whose objects fail on their n-th write: an upload that breaks between parts.
struct FailOnWrite {
    inner: Arc<dyn Stage>,
    fail_at: usize,
}

struct FailingObject {
    inner: Box<dyn ObjectWriter>,
    writes: usize,
    fail_at: usize,
}

impl Stage for FailOnWrite {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        Box::pin(async move {
            let inner = self.inner.create(key).await?;
            Ok(Box::new(FailingObject {
                inner,
                writes: 0,
                fail_at: self.fail_at,
            }) as Box<dyn ObjectWriter>)
        })
    }
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StageError>> {
        self.inner.head(key)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, StageError>> {
        self.inner.list(prefix)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StageError>> {
        self.inner.get(key)
    }
    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<pgshift::stage::ObjectSum>, StageError>> {
        self.inner.checksum(key)
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        self.inner.delete_prefix(prefix)
    }
}

impl ObjectWriter for FailingObject {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StageError>> {
        self.writes += 1;
        if self.writes == self.fail_at {
            return Box::pin(async {
                Err(StageError::Remote {
                    location: "test".into(),
                    detail: "connection reset".into(),
                    retryable: true,
                })
            });
        }
        self.inner.write(chunk)
    }
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StagedObject, StageError>> {
        self.inner.finish()
    }
    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StageError>> {
        self.inner.abort()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_parts_aborts_the_upload() -> Result<()> {
    // A server of its own: the check below sees every upload the server holds.
    let server = S3Server::start()?;
    let bucket = server.bucket("abort");
    let url = db("s3abort", WIDE).await?;
    let mut task = task_for(&url, "wide", &TypePolicies::default(), &[]).await?;
    task.stage = format!("s3://{bucket}/runs");
    task.writer = uncompressed();
    let s3 = Arc::new(S3Stage::new(server.client(), &task.stage, S3Options::default())?);
    let ctx = ExtractContext {
        source: Arc::new(pgshift::source::PgConnector::new(&url)?),
        stages: Arc::new(Opener(Arc::new(FailOnWrite {
            inner: s3.clone(),
            fail_at: 3,
        }))),
    };
    let e = pgshift::extract(&ctx, task).await.expect_err("the third part fails");
    assert!(matches!(e, ExtractError::Stage(StageError::Remote { .. })), "{e}");
    assert!(e.is_retryable(), "{}", e.name());
    assert_eq!(
        s3.head("test-run/public/wide/part-00000-000.parquet").await?,
        None,
        "no object appears"
    );
    // Nothing but the failed attempt's record, for the run report.
    let left: Vec<String> = s3.list("").await?.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        left,
        ["test-run/public/wide/part-00000.attempt-0.failed.json"],
        "{left:?}"
    );
    assert!(
        server.uploads_in_progress().is_empty(),
        "the upload was aborted: {:?}",
        server.uploads_in_progress()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_run_prefix_pages_through_every_object() -> Result<()> {
    let server = s3_server();
    let bucket = server.bucket("listing");
    let stage = S3Stage::new(server.client(), &format!("s3://{bucket}/stage"), S3Options::default())?;
    let mut want = Vec::new();
    for i in 0..1005 {
        let key = format!("run-1/t/part-{i:05}.parquet");
        let body = Bytes::from(vec![b'x'; i % 7 + 1]);
        pgshift::stage::put(&stage, &key, body).await?;
        want.push((key, (i % 7 + 1) as u64));
    }
    pgshift::stage::put(&stage, "run-10/other.json", Bytes::from_static(b"{}")).await?;
    pgshift::stage::put(&stage, "run-2/other.json", Bytes::from_static(b"{}")).await?;
    assert_eq!(
        stage.list("run-1/").await?,
        want,
        "more than one page (1,000 keys) of the run prefix, nothing else"
    );
    assert_eq!(stage.get("run-10/other.json").await?, Bytes::from_static(b"{}"));
    assert!(matches!(
        stage.get("run-3/none.json").await,
        Err(StageError::Missing { .. })
    ));
    assert_eq!(stage.head("run-3/none.json").await?, None);

    // A restarted run's prefix goes, in batches of at most 1,000 keys; its neighbours stay.
    assert_eq!(stage.delete_prefix("run-1/").await?, 1005);
    assert!(stage.list("run-1/").await?.is_empty());
    assert_eq!(stage.list("run-").await?.len(), 2, "run-10 and run-2 are untouched");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_reports_the_crc32_its_writer_computed() -> Result<()> {
    let server = s3_server();
    let bucket = server.bucket("crc");
    let stage = S3Stage::new(server.client(), &format!("s3://{bucket}/stage"), S3Options::default())?;
    // One PutObject, and a multipart upload of three parts (FULL_OBJECT checksum type).
    let small = pgshift::stage::put(&stage, "r/small.bin", Bytes::from_static(b"pgshift")).await?;
    assert_eq!(small.crc32, pgshift::stage::Crc32::of(b"pgshift"));
    let big: Vec<u8> = (0..(2 * pgshift::stage::s3::PART_BYTES + 12_345))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let mut w = stage.create("r/big.bin").await?;
    for chunk in big.chunks(3 * 1024 * 1024) {
        w.write(Bytes::copy_from_slice(chunk)).await?;
    }
    let done = w.finish().await?;
    assert_eq!(done.crc32, pgshift::stage::Crc32::of(&big));
    for (key, obj, len) in [("r/small.bin", &small, 7u64), ("r/big.bin", &done, big.len() as u64)] {
        let sum = stage.checksum(key).await?.expect("the object");
        assert_eq!((sum.bytes, &sum.crc32), (len, &obj.crc32), "{key}");
    }
    assert_eq!(stage.checksum("r/none.bin").await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_writes_its_plan_to_s3() -> Result<()> {
    let server = s3_server();
    let bucket = server.bucket("plan");
    let url = db(
        "s3plan",
        "CREATE TABLE p (id int8 PRIMARY KEY); INSERT INTO p SELECT generate_series(1, 1000);",
    )
    .await?;
    let ctx = pgshift::plan::PlanContext {
        source: Arc::new(pgshift::source::PgConnector::new(&url)?),
        stages: Arc::new(UrlStages::with_s3_client(server.client(), S3Options::default())),
    };
    let req = pgshift::contract::plan::PlanRequest {
        tables: vec!["p".into()],
        stage: format!("s3://{bucket}/stage"),
        ..Default::default()
    };
    let (plan, summary) = pgshift::plan::handle(&ctx, req).await?;
    assert_eq!(
        summary.tasks_url,
        format!("s3://{bucket}/stage/{}/tasks.json", plan.run_id)
    );
    let stage = S3Stage::new(server.client(), &format!("s3://{bucket}/stage"), S3Options::default())?;
    let tasks: Vec<pgshift::ExtractTask> =
        serde_json::from_slice(&stage.get(&format!("{}/tasks.json", plan.run_id)).await?)?;
    assert_eq!(tasks, plan.tasks);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_buckets_and_credentials_are_named() -> Result<()> {
    let server = s3_server();
    assert!(matches!(
        S3Stage::new(server.client(), "s3://", S3Options::default()),
        Err(StageError::BadUrl { .. })
    ));
    let url = db(
        "s3bad",
        "CREATE TABLE t (id int8 PRIMARY KEY); INSERT INTO t VALUES (1);",
    )
    .await?;
    let mut task = task_for(&url, "t", &TypePolicies::default(), &[]).await?;
    // (s3s-fs accepts a PutObject into a missing bucket, unlike S3; its listing refuses one, as S3 does.)
    let missing = S3Stage::new(server.client(), "s3://no-such-bucket/x", S3Options::default())?;
    let e = ExtractError::from(missing.list("").await.expect_err("no bucket"));
    assert!(
        e.to_string().contains("NoSuchBucket") && e.name() == "Pipeline.Fatal.Stage",
        "{e} ({})",
        e.name()
    );

    task.stage = format!("s3://{}/x", server.bucket("creds"));
    let wrong = ExtractContext {
        source: Arc::new(pgshift::source::PgConnector::new(&url)?),
        stages: Arc::new(UrlStages::with_s3_client(
            server.client_with_secret("wrong"),
            S3Options::default(),
        )),
    };
    let e = pgshift::extract(&wrong, task).await.expect_err("bad signature");
    assert!(
        e.to_string().contains("SignatureDoesNotMatch") && e.name() == "Pipeline.Fatal.Stage",
        "{e}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_write_creates_once_on_s3_and_locally() -> Result<()> {
    let server = s3_server();
    let bucket = server.bucket("locks");
    let s3 = S3Stage::new(server.client(), &format!("s3://{bucket}/runs"), S3Options::default())?;
    let dir = pgshift_tests::stage_dir("locks");
    let local = pgshift::stage::open(&format!("file://{}", dir.display()))?;
    for stage in [&s3 as &dyn Stage, local.as_ref()] {
        assert!(
            stage.put_new("r1/lock.json", Bytes::from_static(b"first")).await?,
            "{}",
            stage.url()
        );
        assert!(
            !stage.put_new("r1/lock.json", Bytes::from_static(b"second")).await?,
            "{}",
            stage.url()
        );
        assert_eq!(
            stage.get("r1/lock.json").await?,
            Bytes::from_static(b"first"),
            "the first write stays"
        );
    }
    assert!(
        pgshift_tests::list_files(&dir).iter().all(|f| !f.contains(".tmp")),
        "no temporary left"
    );
    Ok(())
}

/// A writer dropped mid-upload (its task aborted: a failing Map drops its other iterations, a Ctrl-C drops the run)
/// aborts its multipart upload: nothing is left in progress to be billed until the lifecycle rule removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_dropped_mid_upload_leaves_no_multipart_upload() -> Result<()> {
    let server = s3_server();
    let bucket = server.bucket("dropped");
    let stage = S3Stage::new(server.client(), &format!("s3://{bucket}/stage"), S3Options::default())?;
    let mut w = stage.create("run-1/t/part-00000-000.parquet").await?;
    // Two parts' worth: the upload is created and a part is on its way when the writer goes.
    let chunk = Bytes::from(vec![7u8; pgshift::stage::s3::PART_BYTES]);
    w.write(chunk.clone()).await?;
    w.write(chunk).await?;
    let started = server.uploads_in_progress();
    assert!(!started.is_empty(), "a multipart upload is under way");
    drop(w);
    let t0 = std::time::Instant::now();
    while !server.uploads_in_progress().is_empty() && t0.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        server.uploads_in_progress().is_empty(),
        "the dropped upload was aborted: {:?}",
        server.uploads_in_progress()
    );
    assert!(
        stage.head("run-1/t/part-00000-000.parquet").await?.is_none(),
        "and no object appeared"
    );
    Ok(())
}
