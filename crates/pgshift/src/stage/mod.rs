//! Layer 2, the stage: where Parquet parts land between extraction and load. A narrow port ([`Stage`],
//! [`ObjectWriter`]) with one adapter per URL scheme. Every adapter makes an object visible under its final name only
//! once it is complete, and [`ObjectWriter::abort`] leaves nothing behind.

use crate::contract::code::Code;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

mod local;
pub mod overlay;
pub(crate) mod parquet;
pub use parquet::WriteError;
pub(crate) mod run;
pub mod s3;

pub(crate) use local::LocalStage;
use s3::{S3Options, S3Stage};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("stage URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("stage I/O on {location}: {source}")]
    Io { location: String, source: std::io::Error },
    #[error("{location} does not exist on the stage")]
    Missing { location: String },
    #[error("{location} is not what pgshift wrote there: {reason}")]
    Malformed { location: String, reason: String },
    #[error("stage request on {location} failed: {detail}")]
    Remote {
        location: String,
        detail: String,
        retryable: bool,
    },
}

impl StageError {
    pub fn code(&self) -> Code {
        match self {
            StageError::BadUrl { .. } | StageError::Missing { .. } => Code::FatalStage,
            StageError::Malformed { .. } => Code::FatalInvalidInput,
            StageError::Remote { retryable: true, .. } => Code::RetryableStage,
            StageError::Remote { retryable: false, .. } => Code::FatalStage,
            StageError::Io { source, .. } if io_is_permanent(source) => Code::FatalStage,
            StageError::Io { .. } => Code::RetryableStage,
        }
    }

    /// The stable name of [`Self::code`].
    pub fn name(&self) -> &'static str {
        self.code().name()
    }
}

/// Local file errors no retry can fix: no permission, a missing directory, a path through a file (ENOTDIR, or the
/// EEXIST of a directory that cannot be made where a file is), a full
/// disk or quota (ENOSPC, EDQUOT), a read-only file system, a name too long (ENAMETOOLONG). Retrying them for a
/// minute and a half only delays the error the user has to act on.
fn io_is_permanent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::PermissionDenied
            | K::NotFound
            | K::NotADirectory
            | K::AlreadyExists
            | K::IsADirectory
            | K::StorageFull
            | K::QuotaExceeded
            | K::ReadOnlyFilesystem
            | K::InvalidFilename
            | K::FileTooLarge
    )
}

/// What a completed object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedObject {
    pub url: String,
    pub bytes: u64,
    /// The full-object CRC32 of its bytes, base64 of the big-endian value: the form S3 reports as `ChecksumCRC32`.
    pub crc32: String,
}

/// What a complete object on the stage is, as the stage reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSum {
    pub bytes: u64,
    /// Its full-object CRC32 (see [`StagedObject::crc32`]).
    pub crc32: String,
}

/// The running full-object CRC32 of an object being written.
#[derive(Debug, Clone, Default)]
pub struct Crc32(crc32fast::Hasher);

impl Crc32 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Base64 of the big-endian CRC32, as S3 writes `x-amz-checksum-crc32`.
    pub fn encoded(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0.clone().finalize().to_be_bytes())
    }

    pub fn of(bytes: &[u8]) -> String {
        let mut c = Self::default();
        c.update(bytes);
        c.encoded()
    }
}

/// A place to stream objects to.
pub trait Stage: Send + Sync {
    /// The stage's URL prefix (no trailing slash).
    fn url(&self) -> &str;

    /// Starts an object at `key` (relative to the prefix, `/`-separated). Nothing is visible until `finish`.
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>>;

    /// The size of the complete object at `key`, or `None` when there is none.
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StageError>>;

    /// Every complete object whose key starts with `prefix`: (key relative to the stage, size), sorted by key.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, StageError>>;

    /// The whole object at `key` (small objects: plans, manifests, task lists, Parquet parts for a local load).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StageError>>;

    /// The size and full-object CRC32 of the complete object at `key`, or `None` when there is none: what the
    /// loader checks every part against before anything loads. S3 answers from `HeadObject` (no download).
    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectSum>, StageError>>;

    /// Deletes every object whose key starts with `prefix` (a run restarted from scratch); returns how many.
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>>;

    /// Writes a small object at `key` only if none is there: `false` when one is (a lock another holder took). The
    /// adapters make it atomic (S3's conditional `PutObject` with `If-None-Match: *`, a hard link locally); this
    /// default, for wrappers, checks and then writes.
    fn put_new<'a>(&'a self, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            if self.head(key).await?.is_some() {
                return Ok(false);
            }
            let mut w = self.create(key).await?;
            if let Err(e) = w.write(body).await {
                let _ = w.abort().await;
                return Err(e);
            }
            w.finish().await.map(|_| true)
        })
    }

    /// Where the object at `key` is on this machine's file system, when the stage is local: a reader can then read
    /// the parts of it it needs instead of the whole object.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }

    /// The key of a URL under this stage, if it is one.
    fn key_of<'a>(&self, url: &'a str) -> Option<&'a str> {
        url.strip_prefix(self.url())?.strip_prefix('/')
    }
}

/// Writes a small object whole.
pub async fn put(stage: &dyn Stage, key: &str, body: Bytes) -> Result<StagedObject, StageError> {
    let mut w = stage.create(key).await?;
    if let Err(e) = w.write(body).await {
        let _ = w.abort().await;
        return Err(e);
    }
    w.finish().await
}

/// Requests made of a stage by S3's price classes, counted by [`Counted`] (what an extractor records in its result).
#[derive(Debug, Default)]
pub(crate) struct RequestCount {
    put_class: std::sync::atomic::AtomicU64,
    get_class: std::sync::atomic::AtomicU64,
}

impl RequestCount {
    fn add(&self, put: u64, get: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.put_class.fetch_add(put, Relaxed);
        self.get_class.fetch_add(get, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> crate::contract::ledger::StageRequests {
        use std::sync::atomic::Ordering::Relaxed;
        crate::contract::ledger::StageRequests {
            put_class: self.put_class.load(Relaxed),
            get_class: self.get_class.load(Relaxed),
        }
    }
}

/// PUT-class requests of writing one object of `bytes` to S3: one PutObject, or CreateMultipartUpload, a part per
/// [`s3::PART_BYTES`] and CompleteMultipartUpload.
pub(crate) fn puts_of(bytes: u64) -> u64 {
    let part = s3::PART_BYTES as u64;
    if bytes <= part {
        1
    } else {
        2 + bytes.div_ceil(part)
    }
}

/// A stage that counts the requests made of it as S3 would bill them (on a local stage too: what the same run would
/// make of S3). LIST is PUT-class, a page of 1,000 keys a request; HEAD and GET are GET-class.
pub(crate) struct Counted {
    inner: Arc<dyn Stage>,
    count: Arc<RequestCount>,
}

impl Counted {
    pub(crate) fn new(inner: Arc<dyn Stage>, count: Arc<RequestCount>) -> Self {
        Self { inner, count }
    }
}

struct CountedWriter {
    inner: Box<dyn ObjectWriter>,
    count: Arc<RequestCount>,
    bytes: u64,
}

impl ObjectWriter for CountedWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StageError>> {
        self.bytes += chunk.len() as u64;
        self.inner.write(chunk)
    }
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StagedObject, StageError>> {
        self.count.add(puts_of(self.bytes), 0);
        self.inner.finish()
    }
    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StageError>> {
        // The parts sent so far, and the CreateMultipartUpload; the abort itself is free.
        let parts = self.bytes / s3::PART_BYTES as u64;
        self.count.add(if parts > 0 { parts + 1 } else { 0 }, 0);
        self.inner.abort()
    }
}

impl Stage for Counted {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        Box::pin(async move {
            let inner = self.inner.create(key).await?;
            Ok(Box::new(CountedWriter {
                inner,
                count: self.count.clone(),
                bytes: 0,
            }) as Box<dyn ObjectWriter>)
        })
    }
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StageError>> {
        self.count.add(0, 1);
        self.inner.head(key)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, StageError>> {
        Box::pin(async move {
            let out = self.inner.list(prefix).await?;
            self.count.add((out.len() as u64).div_ceil(1000).max(1), 0);
            Ok(out)
        })
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StageError>> {
        self.count.add(0, 1);
        self.inner.get(key)
    }
    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectSum>, StageError>> {
        self.count.add(0, 1);
        self.inner.checksum(key)
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        self.count.add(1, 0);
        self.inner.delete_prefix(prefix)
    }
    fn put_new<'a>(&'a self, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<bool, StageError>> {
        self.count.add(1, 0);
        self.inner.put_new(key, body)
    }
    fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        self.inner.local_path(key)
    }
}

/// What is wrong with a staged file against the size and CRC32 its extractor recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileProblem {
    Missing(String),
    Corrupt(String),
}

/// One file against the stage: `None` when it is there exactly as its extractor wrote it. The loader checks every
/// part with it before loading; an extractor, before it keeps a range that landed in an earlier attempt.
pub(crate) async fn file_problem(
    stage: &dyn Stage,
    f: &crate::contract::model::StagedFile,
) -> Result<Option<FileProblem>, StageError> {
    let Some(key) = stage.key_of(&f.url) else {
        return Ok(Some(FileProblem::Missing(format!(
            "{} is not on the stage {}",
            f.url,
            stage.url()
        ))));
    };
    Ok(match stage.checksum(key).await? {
        None => Some(FileProblem::Missing(format!("{}: missing", f.url))),
        Some(s) if s.bytes != f.bytes => Some(FileProblem::Missing(format!(
            "{}: {} bytes, the extractor wrote {}",
            f.url, s.bytes, f.bytes
        ))),
        Some(s) => match &f.crc32 {
            None => Some(FileProblem::Corrupt(format!(
                "{}: its result records no checksum (an older extractor); extract it again",
                f.url
            ))),
            Some(c) if *c != s.crc32 => Some(FileProblem::Corrupt(format!(
                "{}: CRC32 {} on the stage, the extractor wrote {c}",
                f.url, s.crc32
            ))),
            Some(_) => None,
        },
    })
}

/// Opens the stage a task names. A port, so the Lambda gets exactly the stages its role may write.
pub trait StageOpener: Send + Sync {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Arc<dyn Stage>, StageError>>;
}

/// Opens a `file://` stage by URL (`s3://` stages need a client: see [`s3::S3Stage`] and `extract::UrlStages`).
pub fn open(url: &str) -> Result<Box<dyn Stage>, StageError> {
    let url = url.trim_end_matches('/');
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(StageError::BadUrl {
                url: url.into(),
                reason: "a file:// stage needs an absolute path (file:///dir)".into(),
            });
        }
        return Ok(Box::new(LocalStage {
            url: url.to_string(),
            root: std::path::PathBuf::from(path),
        }));
    }
    Err(StageError::BadUrl {
        url: url.into(),
        reason: "unsupported scheme; use file:///dir".into(),
    })
}

/// Opens stages by URL scheme: `file:///dir`, and `s3://bucket/prefix` with one S3 client built on first use from
/// the standard AWS environment (region, credentials, `AWS_ENDPOINT_URL`; path-style addressing when an endpoint is
/// set or `PGSHIFT_S3_PATH_STYLE=true`; SSE-KMS with `PGSHIFT_S3_SSE_KMS_KEY_ID`). A run that stages locally never
/// builds it.
#[derive(Default)]
pub struct UrlStages {
    s3: tokio::sync::OnceCell<aws_sdk_s3::Client>,
    s3_options: S3Options,
}

impl UrlStages {
    /// Stages with a given S3 client (tests, or a client configured by the caller).
    pub fn with_s3_client(client: aws_sdk_s3::Client, options: S3Options) -> Self {
        Self {
            s3: tokio::sync::OnceCell::new_with(Some(client)),
            s3_options: options,
        }
    }

    async fn s3_client(&self) -> &aws_sdk_s3::Client {
        self.s3
            .get_or_init(|| async {
                let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let path_style = env("PGSHIFT_S3_PATH_STYLE")
                    .map(|v| v == "true" || v == "1")
                    .unwrap_or_else(|| env("AWS_ENDPOINT_URL_S3").is_some() || env("AWS_ENDPOINT_URL").is_some());
                let config = aws_sdk_s3::config::Builder::from(&conf)
                    .force_path_style(path_style)
                    .build();
                aws_sdk_s3::Client::from_conf(config)
            })
            .await
    }
}

impl StageOpener for UrlStages {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Arc<dyn Stage>, StageError>> {
        Box::pin(async move {
            if url.starts_with("s3://") {
                let mut options = self.s3_options.clone();
                if options.sse_kms_key_id.is_none() {
                    options.sse_kms_key_id = std::env::var("PGSHIFT_S3_SSE_KMS_KEY_ID")
                        .ok()
                        .filter(|v| !v.is_empty());
                }
                let client = self.s3_client().await.clone();
                return Ok(Arc::new(S3Stage::new(client, url, options)?) as Arc<dyn Stage>);
            }
            Ok(Arc::from(open(url)?))
        })
    }
}

/// One object being written.
pub trait ObjectWriter: Send {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StageError>>;
    /// Makes the object visible under its final name, replacing any earlier object there.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StagedObject, StageError>>;
    /// Discards the object; an earlier complete object at the same key is left as it was.
    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StageError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_errors_no_retry_can_fix_are_fatal_at_once() {
        let dir = std::env::temp_dir().join(format!("pgshift-stage-{}", uuid::Uuid::new_v4().simple()));
        let stage = open(&format!("file://{}", dir.display())).expect("stage");
        put(stage.as_ref(), "run/afile", Bytes::from_static(b"x"))
            .await
            .expect("a file");
        let code = |r: Result<StagedObject, StageError>| r.expect_err("fails").code();
        // A directory where a file is (ENOTDIR), and a name longer than the file system's 255 bytes.
        let through_a_file = put(stage.as_ref(), "run/afile/part.parquet", Bytes::from_static(b"x")).await;
        assert_eq!(code(through_a_file), Code::FatalStage);
        let long = format!("run/{}.parquet", "n".repeat(300));
        assert_eq!(
            code(put(stage.as_ref(), &long, Bytes::from_static(b"x")).await),
            Code::FatalStage
        );
        for errno in [28 /* ENOSPC */, 122 /* EDQUOT */, 30 /* EROFS */] {
            let e = StageError::Io {
                location: "x".into(),
                source: std::io::Error::from_raw_os_error(errno),
            };
            assert_eq!(e.code(), Code::FatalStage, "errno {errno}");
        }
        let transient = StageError::Io {
            location: "x".into(),
            source: std::io::Error::from(std::io::ErrorKind::Interrupted),
        };
        assert_eq!(transient.code(), Code::RetryableStage);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_local_object_reports_the_crc32_it_was_written_with_and_a_prefix_goes_whole() {
        let dir = std::env::temp_dir().join(format!("pgshift-stage-{}", uuid::Uuid::new_v4().simple()));
        let stage = open(&format!("file://{}", dir.display())).expect("stage");
        let mut w = stage.create("run/t/a.bin").await.expect("create");
        w.write(Bytes::from_static(b"pg")).await.expect("write");
        w.write(Bytes::from_static(b"shift")).await.expect("write");
        let done = w.finish().await.expect("finish");
        // The standard check value of CRC-32 ("123456789" → 0xCBF43926), in S3's base64 form.
        assert_eq!(Crc32::of(b"123456789"), "y/Q5Jg==");
        assert_eq!(done.crc32, Crc32::of(b"pgshift"));
        let sum = stage.checksum("run/t/a.bin").await.expect("sum").expect("object");
        assert_eq!((sum.bytes, sum.crc32), (7, done.crc32.clone()));
        std::fs::write(dir.join("run/t/a.bin"), b"pgshifT").expect("corrupt");
        let sum = stage.checksum("run/t/a.bin").await.expect("sum").expect("object");
        assert_ne!(sum.crc32, done.crc32);
        put(stage.as_ref(), "other/b.bin", Bytes::from_static(b"x"))
            .await
            .expect("put");
        assert_eq!(stage.delete_prefix("run/").await.expect("delete"), 1);
        assert_eq!(stage.checksum("run/t/a.bin").await.expect("sum"), None);
        assert!(stage.head("other/b.bin").await.expect("head").is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn only_absolute_file_urls_open() {
        assert!(open("file:///tmp/x").is_ok());
        assert!(open("file://relative").is_err());
        assert!(open("gs://bucket").is_err());
    }
}
