//! A stage that runs a hook before each object is created: how a test breaks something at an exact point of a run
//! (a server killed as the first part is written is killed mid-extraction, by construction).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use pgshift::stage::{ObjectSum, ObjectWriter, Stage, StageError, StageOpener};

/// Called with the key of every object about to be created.
pub type Hook = Arc<dyn Fn(&str) + Send + Sync>;

/// Opens stages through `inner` and hooks every one of them.
pub struct HookedStages {
    pub inner: Arc<dyn StageOpener>,
    pub hook: Hook,
}

impl StageOpener for HookedStages {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Arc<dyn Stage>, StageError>> {
        Box::pin(async move {
            let inner = self.inner.open(url).await?;
            Ok(Arc::new(HookedStage {
                inner,
                hook: self.hook.clone(),
            }) as Arc<dyn Stage>)
        })
    }
}

struct HookedStage {
    inner: Arc<dyn Stage>,
    hook: Hook,
}

impl Stage for HookedStage {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        (self.hook)(key);
        self.inner.create(key)
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
        self.inner.checksum(key)
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        self.inner.delete_prefix(prefix)
    }
    fn put_new<'a>(&'a self, key: &'a str, body: bytes::Bytes) -> BoxFuture<'a, Result<bool, StageError>> {
        (self.hook)(key);
        self.inner.put_new(key, body)
    }
    fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        self.inner.local_path(key)
    }
}
