//! A stage that asks a gate before each request: how a test breaks something at an exact point of a run (a server
//! killed as the first part is written is killed mid-extraction, by construction; a write that fails at a key; an
//! object that lands while its writer reports a failure).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use pgshift::stage::{ObjectSum, ObjectWriter, Stage, StageError, StageOpener, StagedObject};

/// Called with the key of every object about to be created.
pub type Hook = Arc<dyn Fn(&str) + Send + Sync>;

/// The request a gate is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// An object about to be created (also a write-if-absent).
    Create(&'a str),
    /// An object's size and CRC32 read back.
    Checksum(&'a str),
}

/// What the request does.
pub enum Verdict {
    Pass,
    Fail(StageError),
    /// The object lands, and its writer reports a failure (a response lost after the write).
    LoseResponse,
}

/// Decides each request.
pub type Gate = Arc<dyn Fn(Op<'_>) -> Verdict + Send + Sync>;

/// Opens stages through `inner` and gates every one of them.
pub struct HookedStages {
    pub inner: Arc<dyn StageOpener>,
    pub gate: Gate,
}

impl HookedStages {
    /// A stage whose hook only watches: it runs before each object is created, and every request passes.
    pub fn watched(inner: Arc<dyn StageOpener>, hook: Hook) -> Self {
        let gate: Gate = Arc::new(move |op| {
            if let Op::Create(key) = op {
                hook(key);
            }
            Verdict::Pass
        });
        Self { inner, gate }
    }
}

impl StageOpener for HookedStages {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Arc<dyn Stage>, StageError>> {
        Box::pin(async move {
            let inner = self.inner.open(url).await?;
            Ok(Arc::new(HookedStage {
                inner,
                gate: self.gate.clone(),
            }) as Arc<dyn Stage>)
        })
    }
}

struct HookedStage {
    inner: Arc<dyn Stage>,
    gate: Gate,
}

impl Stage for HookedStage {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        Box::pin(async move {
            match (self.gate)(Op::Create(key)) {
                Verdict::Pass => self.inner.create(key).await,
                Verdict::Fail(e) => Err(e),
                Verdict::LoseResponse => Ok(Box::new(LostResponse {
                    inner: self.inner.create(key).await?,
                }) as Box<dyn ObjectWriter>),
            }
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
    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectSum>, StageError>> {
        Box::pin(async move {
            match (self.gate)(Op::Checksum(key)) {
                Verdict::Fail(e) => Err(e),
                _ => self.inner.checksum(key).await,
            }
        })
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        self.inner.delete_prefix(prefix)
    }
    fn put_new<'a>(&'a self, key: &'a str, body: bytes::Bytes) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            match (self.gate)(Op::Create(key)) {
                Verdict::Fail(e) => Err(e),
                _ => self.inner.put_new(key, body).await,
            }
        })
    }
    fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        self.inner.local_path(key)
    }
}

/// An object that lands, and a writer that says it did not.
struct LostResponse {
    inner: Box<dyn ObjectWriter>,
}

impl ObjectWriter for LostResponse {
    fn write(&mut self, chunk: bytes::Bytes) -> BoxFuture<'_, Result<(), StageError>> {
        self.inner.write(chunk)
    }
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StagedObject, StageError>> {
        Box::pin(async move {
            let done = self.inner.finish().await?;
            Err(StageError::Remote {
                location: done.url,
                detail: "injected: the response was lost after the object landed".into(),
                retryable: false,
            })
        })
    }
    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StageError>> {
        self.inner.abort()
    }
}
