//! The local stage: `file:///dir`. An object is written to a hidden temporary beside its final name, synced, then
//! renamed: visible only when complete.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use super::{Crc32, ObjectSum, ObjectWriter, Stage, StageError, StagedObject};

/// A directory on the local file system.
pub(crate) struct LocalStage {
    pub(super) url: String,
    pub(super) root: PathBuf,
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

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
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
            // Created without an await point, its guard at once: a task aborted here (a failing Map drops its other
            // iterations) can leave no file behind, as it could while a blocking create was still in flight.
            let file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            let tmp = TmpFile(Some(tmp));
            Ok(Box::new(LocalObject {
                url: format!("{}/{key}", self.url),
                path,
                tmp,
                file: tokio::fs::File::from_std(file),
                bytes: 0,
                crc: Crc32::default(),
            }) as Box<dyn ObjectWriter>)
        })
    }

    fn put_new<'a>(&'a self, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let dir = path.parent().unwrap_or(&self.root).to_path_buf();
            tokio::fs::create_dir_all(&dir).await.map_err(|e| io(&dir, e))?;
            let tmp = dir.join(format!(".lock.{}.tmp", uuid::Uuid::new_v4().simple()));
            tokio::fs::write(&tmp, &body).await.map_err(|e| io(&tmp, e))?;
            // link(2) fails when the name exists: the object appears whole, and only once.
            let linked = tokio::fs::hard_link(&tmp, &path).await;
            let _ = tokio::fs::remove_file(&tmp).await;
            match linked {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io(&path, e)),
            }
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

/// The file an object is written to before it is renamed into place: removed when the writer is dropped unfinished
/// (its task aborted, as a failing Map aborts its other iterations), so no half-written file is left behind.
struct TmpFile(Option<PathBuf>);

impl TmpFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// The path, no longer removed on drop (renamed into place, or removed by the caller).
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct LocalObject {
    url: String,
    path: PathBuf,
    tmp: TmpFile,
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
            self.file.write_all(&chunk).await.map_err(|e| io(self.tmp.path(), e))?;
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
                tokio::fs::rename(tmp.path(), &path).await
            };
            if let Err(e) = done.await {
                // Dropping the guard removes the temporary file.
                drop(tmp);
                return Err(io(&path, e));
            }
            tmp.keep();
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
            let tmp = tmp.keep();
            match tokio::fs::remove_file(&tmp).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(&tmp, e)),
            }
        })
    }
}
