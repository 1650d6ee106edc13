//! The stage: where Parquet parts land between extraction and load. A narrow port ([`Stage`], [`ObjectWriter`]) with
//! one adapter per URL scheme. Every adapter makes an object visible under its final name only once it is complete,
//! and [`ObjectWriter::abort`] leaves nothing behind.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::io::AsyncWriteExt;

pub mod s3;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("stage URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("stage I/O on {location}: {source}")]
    Io { location: String, source: std::io::Error },
    #[error("{location} does not exist on the stage")]
    Missing { location: String },
    #[error("stage request on {location} failed: {detail}")]
    Remote {
        location: String,
        detail: String,
        retryable: bool,
    },
}

impl StageError {
    pub fn name(&self) -> &'static str {
        match self {
            StageError::BadUrl { .. } | StageError::Missing { .. } => "Pipeline.Fatal.Stage",
            StageError::Remote { retryable: true, .. } => "Pipeline.Retryable.Stage",
            StageError::Remote { retryable: false, .. } => "Pipeline.Fatal.Stage",
            StageError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => "Pipeline.Fatal.Stage",
                _ => "Pipeline.Retryable.Stage",
            },
        }
    }
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

/// One object being written.
pub trait ObjectWriter: Send {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StageError>>;
    /// Makes the object visible under its final name, replacing any earlier object there.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StagedObject, StageError>>;
    /// Discards the object; an earlier complete object at the same key is left as it was.
    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StageError>>;
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
            root: PathBuf::from(path),
        }));
    }
    Err(StageError::BadUrl {
        url: url.into(),
        reason: "unsupported scheme; use file:///dir".into(),
    })
}

/// A directory on the local file system.
pub struct LocalStage {
    url: String,
    root: PathBuf,
}

impl LocalStage {
    fn path(&self, key: &str) -> Result<PathBuf, StageError> {
        if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(StageError::BadUrl {
                url: format!("{}/{key}", self.url),
                reason: "bad object key".into(),
            });
        }
        Ok(self.root.join(key))
    }
}

fn io(location: &Path, source: std::io::Error) -> StageError {
    StageError::Io {
        location: location.display().to_string(),
        source,
    }
}

impl Stage for LocalStage {
    fn url(&self) -> &str {
        &self.url
    }

    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let dir = path.parent().unwrap_or(&self.root).to_path_buf();
            tokio::fs::create_dir_all(&dir).await.map_err(|e| io(&dir, e))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
            let file = tokio::fs::File::create(&tmp).await.map_err(|e| io(&tmp, e))?;
            Ok(Box::new(LocalObject {
                url: format!("{}/{key}", self.url),
                path,
                tmp,
                file,
                bytes: 0,
                crc: Crc32::default(),
            }) as Box<dyn ObjectWriter>)
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(&path, e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, StageError>> {
        Box::pin(async move {
            let root = self.root.clone();
            let prefix = prefix.to_string();
            let walk = move || -> Result<Vec<(String, u64)>, StageError> {
                let mut out = Vec::new();
                let mut dirs = vec![root.clone()];
                while let Some(dir) = dirs.pop() {
                    let entries = match std::fs::read_dir(&dir) {
                        Ok(e) => e,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io(&dir, e)),
                    };
                    for entry in entries {
                        let entry = entry.map_err(|e| io(&dir, e))?;
                        let path = entry.path();
                        let meta = entry.metadata().map_err(|e| io(&path, e))?;
                        if meta.is_dir() {
                            dirs.push(path);
                            continue;
                        }
                        // Temporaries of writes in progress are not objects.
                        if entry.file_name().to_string_lossy().starts_with('.') {
                            continue;
                        }
                        let Ok(rel) = path.strip_prefix(&root) else { continue };
                        let key = rel.to_string_lossy().into_owned();
                        if key.starts_with(&prefix) {
                            out.push((key, meta.len()));
                        }
                    }
                }
                out.sort();
                Ok(out)
            };
            tokio::task::spawn_blocking(walk)
                .await
                .map_err(|e| io(&self.root, std::io::Error::other(e)))?
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::read(&path).await {
                Ok(b) => Ok(Bytes::from(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StageError::Missing {
                    location: format!("{}/{key}", self.url),
                }),
                Err(e) => Err(io(&path, e)),
            }
        })
    }

    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectSum>, StageError>> {
        Box::pin(async move { file_sum(&self.path(key)?).await })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        Box::pin(async move {
            let mut n = 0;
            for (key, _) in self.list(prefix).await? {
                let path = self.path(&key)?;
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path, e)),
                }
            }
            Ok(n)
        })
    }
}

struct LocalObject {
    url: String,
    path: PathBuf,
    tmp: PathBuf,
    file: tokio::fs::File,
    bytes: u64,
    crc: Crc32,
}

/// Size and CRC32 of a local file, read in bounded chunks.
async fn file_sum(path: &Path) -> Result<Option<ObjectSum>, StageError> {
    use tokio::io::AsyncReadExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    if !file.metadata().await.map_err(|e| io(path, e))?.is_file() {
        return Ok(None);
    }
    let mut crc = Crc32::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(Some(ObjectSum {
        bytes,
        crc32: crc.encoded(),
    }))
}

impl ObjectWriter for LocalObject {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StageError>> {
        Box::pin(async move {
            self.file.write_all(&chunk).await.map_err(|e| io(&self.tmp, e))?;
            self.bytes += chunk.len() as u64;
            self.crc.update(&chunk);
            Ok(())
        })
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<StagedObject, StageError>> {
        Box::pin(async move {
            let LocalObject {
                url,
                path,
                tmp,
                mut file,
                bytes,
                crc,
            } = *self;
            let done = async {
                file.flush().await?;
                file.sync_all().await?;
                drop(file);
                tokio::fs::rename(&tmp, &path).await
            };
            if let Err(e) = done.await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(io(&path, e));
            }
            Ok(StagedObject {
                url,
                bytes,
                crc32: crc.encoded(),
            })
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StageError>> {
        Box::pin(async move {
            let LocalObject { tmp, file, .. } = *self;
            drop(file);
            match tokio::fs::remove_file(&tmp).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(&tmp, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
