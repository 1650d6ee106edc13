//! Stages that read through to the real ones and keep every write in memory: what a dry run loads with, so that
//! running the real loader's code changes nothing on the stage (no manifest, no `load.json`, no lock), while what it
//! wrote earlier in the same dry run reads back as written. Deletes hide objects from the overlay's reads only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{Crc32, ObjectSum, ObjectWriter, Stage, StageError, StageOpener, StagedObject};

/// Opens each stage once, as an overlay over the real one.
pub struct OverlayStages {
    pub inner: Arc<dyn StageOpener>,
    opened: Mutex<BTreeMap<String, Arc<OverlayStage>>>,
}

impl OverlayStages {
    pub fn new(inner: Arc<dyn StageOpener>) -> Self {
        Self {
            inner,
            opened: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every object written to any stage, by its URL, with its body.
    pub fn written(&self) -> BTreeMap<String, Bytes> {
        let opened = self.opened.lock().map(|o| o.clone()).unwrap_or_default();
        let mut out = BTreeMap::new();
        for s in opened.values() {
            let url = s.inner.url().to_string();
            for (k, v) in s.state.lock().map(|st| st.objects.clone()).unwrap_or_default() {
                out.insert(format!("{url}/{k}"), v);
            }
        }
        out
    }
}

impl StageOpener for OverlayStages {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Arc<dyn Stage>, StageError>> {
        Box::pin(async move {
            let key = url.trim_end_matches('/').to_string();
            if let Some(s) = self.opened.lock().ok().and_then(|o| o.get(&key).cloned()) {
                return Ok(s as Arc<dyn Stage>);
            }
            let inner = self.inner.open(url).await?;
            let s = Arc::new(OverlayStage {
                inner,
                state: Arc::new(Mutex::new(State::default())),
            });
            if let Ok(mut o) = self.opened.lock() {
                o.insert(key, s.clone());
            }
            Ok(s as Arc<dyn Stage>)
        })
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Bytes>,
    deleted: BTreeSet<String>,
}

pub struct OverlayStage {
    inner: Arc<dyn Stage>,
    state: Arc<Mutex<State>>,
}

impl OverlayStage {
    fn written(&self, key: &str) -> Option<Bytes> {
        self.state.lock().ok().and_then(|s| s.objects.get(key).cloned())
    }

    fn hidden(&self, key: &str) -> bool {
        self.state
            .lock()
            .map(|s| s.deleted.iter().any(|p| key.starts_with(p.as_str())))
            .unwrap_or(false)
    }
}

struct MemoryWriter {
    key: String,
    url: String,
    body: Vec<u8>,
    state: Arc<Mutex<State>>,
}

impl ObjectWriter for MemoryWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StageError>> {
        self.body.extend_from_slice(&chunk);
        Box::pin(async { Ok(()) })
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StagedObject, StageError>> {
        Box::pin(async move {
            let bytes = self.body.len() as u64;
            let crc32 = Crc32::of(&self.body);
            if let Ok(mut s) = self.state.lock() {
                s.deleted.retain(|p| !self.key.starts_with(p.as_str()));
                s.objects.insert(self.key.clone(), Bytes::from(self.body));
            }
            Ok(StagedObject {
                url: self.url,
                bytes,
                crc32,
            })
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StageError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Stage for OverlayStage {
    fn url(&self) -> &str {
        self.inner.url()
    }

    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        Box::pin(async move {
            Ok(Box::new(MemoryWriter {
                key: key.to_string(),
                url: format!("{}/{key}", self.inner.url()),
                body: Vec::new(),
                state: self.state.clone(),
            }) as Box<dyn ObjectWriter>)
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StageError>> {
        Box::pin(async move {
            if let Some(b) = self.written(key) {
                return Ok(Some(b.len() as u64));
            }
            if self.hidden(key) {
                return Ok(None);
            }
            self.inner.head(key).await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, StageError>> {
        Box::pin(async move {
            let mut all: BTreeMap<String, u64> = self
                .inner
                .list(prefix)
                .await?
                .into_iter()
                .filter(|(k, _)| !self.hidden(k))
                .collect();
            if let Ok(s) = self.state.lock() {
                for (k, v) in s
                    .objects
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                {
                    all.insert(k.clone(), v.len() as u64);
                }
            }
            Ok(all.into_iter().collect())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StageError>> {
        Box::pin(async move {
            if let Some(b) = self.written(key) {
                return Ok(b);
            }
            if self.hidden(key) {
                return Err(StageError::Missing {
                    location: format!("{}/{key}", self.inner.url()),
                });
            }
            self.inner.get(key).await
        })
    }

    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectSum>, StageError>> {
        Box::pin(async move {
            if let Some(b) = self.written(key) {
                return Ok(Some(ObjectSum {
                    bytes: b.len() as u64,
                    crc32: Crc32::of(&b),
                }));
            }
            if self.hidden(key) {
                return Ok(None);
            }
            self.inner.checksum(key).await
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        Box::pin(async move {
            let below = self.inner.list(prefix).await?.len();
            let mut s = self.state.lock().map_err(|_| StageError::Missing {
                location: prefix.into(),
            })?;
            let before = s.objects.len();
            s.objects.retain(|k, _| !k.starts_with(prefix));
            let gone = before - s.objects.len();
            s.deleted.insert(prefix.to_string());
            Ok(below + gone)
        })
    }

    fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        match self.written(key).is_some() || self.hidden(key) {
            true => None,
            false => self.inner.local_path(key),
        }
    }
}
