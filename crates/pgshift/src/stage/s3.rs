//! The S3 stage: `s3://bucket/prefix`.
//!
//! An object streams out as a multipart upload: parts of at least [`PART_BYTES`] are uploaded while the extractor
//! keeps reading, at most [`MAX_PARTS_IN_FLIGHT`] at a time (bounded memory), each with a CRC32 checksum. The object
//! appears under its key only when `CompleteMultipartUpload` succeeds; any error aborts the upload, once the parts
//! in flight have answered, so no orphan parts are left. An object smaller than one part is a single `PutObject`.
//! Keys are deterministic, so a retried task overwrites its files. Optional SSE-KMS.
//!
//! Every object carries a full-object CRC32 that the writer computes as the bytes pass: a single `PutObject` sends
//! it, a multipart upload is created with `ChecksumType=FULL_OBJECT` and completed with it, so S3 validates the whole
//! object on arrival and reports the same value on `HeadObject` with `ChecksumMode=ENABLED`; the loader compares it
//! with the extractor's record without downloading anything ("Checking object integrity in Amazon S3",
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>: precalculated values for
//! multipart uploads use the full object checksum type).

use std::sync::Arc;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
    ServerSideEncryption,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::task::JoinSet;

use super::{Crc32, ObjectSum, ObjectWriter, Stage, StageError, StagedObject};

/// Size of the parts of a multipart upload (S3's minimum is 5 MiB, except for the last part).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts uploading at once for one object.
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 2;

/// Options of an S3 stage beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// KMS key id or ARN for SSE-KMS; `None` leaves the bucket's default encryption.
    pub sse_kms_key_id: Option<String>,
}

/// A bucket and key prefix.
#[derive(Clone)]
pub struct S3Stage {
    inner: Arc<Shared>,
    url: String,
    prefix: String,
}

struct Shared {
    client: Client,
    bucket: String,
    options: S3Options,
}

impl S3Stage {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub fn new(client: Client, url: &str, options: S3Options) -> Result<Self, StageError> {
        let url = url.trim_end_matches('/');
        let rest = url.strip_prefix("s3://").ok_or_else(|| StageError::BadUrl {
            url: url.into(),
            reason: "an S3 stage URL starts with s3://".into(),
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(StageError::BadUrl {
                url: url.into(),
                reason: "expected s3://bucket/prefix".into(),
            });
        }
        Ok(Self {
            inner: Arc::new(Shared {
                client,
                bucket: bucket.to_string(),
                options,
            }),
            url: url.to_string(),
            prefix: prefix.to_string(),
        })
    }

    fn object_key(&self, key: &str) -> Result<String, StageError> {
        if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(StageError::BadUrl {
                url: format!("{}/{key}", self.url),
                reason: "bad object key".into(),
            });
        }
        Ok(if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }
}

/// An SDK error as a stage error: retryable when S3 or the network may answer differently next time.
fn remote<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    location: &str,
    e: SdkError<E, R>,
) -> StageError {
    let retryable = crate::awsclient::transient(
        &e,
        &[
            "SlowDown",
            "RequestTimeout",
            "InternalError",
            "ServiceUnavailable",
            "RequestTimeTooSkewed",
        ],
    );
    StageError::Remote {
        location: location.to_string(),
        detail: crate::awsclient::describe(&e),
        retryable,
    }
}

impl Stage for S3Stage {
    fn url(&self) -> &str {
        &self.url
    }

    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        Box::pin(async move {
            let object_key = self.object_key(key)?;
            Ok(Box::new(S3Object {
                shared: self.inner.clone(),
                url: format!("{}/{key}", self.url),
                key: object_key,
                buf: Vec::new(),
                upload_id: None,
                next_part: 1,
                in_flight: JoinSet::new(),
                done: Vec::new(),
                bytes: 0,
                crc: Crc32::default(),
            }) as Box<dyn ObjectWriter>)
        })
    }

    /// A conditional write: S3 refuses it with 412 PreconditionFailed when the key exists
    /// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>).
    fn put_new<'a>(&'a self, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            let object_key = self.object_key(key)?;
            let s = &self.inner;
            let mut req = s
                .client
                .put_object()
                .bucket(&s.bucket)
                .key(&object_key)
                .if_none_match("*")
                .body(ByteStream::from(body));
            if let Some(kms) = &s.options.sse_kms_key_id {
                req = req
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .ssekms_key_id(kms);
            }
            match req.send().await {
                Ok(_) => Ok(true),
                Err(e) if e.code() == Some("PreconditionFailed") => Ok(false),
                Err(e) => Err(remote(&format!("{}/{key}", self.url), e)),
            }
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StageError>> {
        Box::pin(async move {
            let object_key = self.object_key(key)?;
            let s = &self.inner;
            match s.client.head_object().bucket(&s.bucket).key(&object_key).send().await {
                Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
                Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
                Err(e) => Err(remote(&format!("{}/{key}", self.url), e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, StageError>> {
        Box::pin(async move {
            let s = &self.inner;
            let full = if self.prefix.is_empty() {
                prefix.to_string()
            } else {
                format!("{}/{prefix}", self.prefix)
            };
            let strip = if self.prefix.is_empty() {
                0
            } else {
                self.prefix.len() + 1
            };
            let mut pages = s
                .client
                .list_objects_v2()
                .bucket(&s.bucket)
                .prefix(&full)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| remote(&format!("{}/{prefix}", self.url), e))?;
                for o in page.contents() {
                    if let Some(k) = o.key() {
                        out.push((k[strip.min(k.len())..].to_string(), o.size().unwrap_or(0).max(0) as u64));
                    }
                }
            }
            out.sort();
            Ok(out)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StageError>> {
        Box::pin(async move {
            let object_key = self.object_key(key)?;
            let s = &self.inner;
            let location = format!("{}/{key}", self.url);
            let o = match s.client.get_object().bucket(&s.bucket).key(&object_key).send().await {
                Ok(o) => o,
                Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => {
                    return Err(StageError::Missing { location })
                }
                Err(e) => return Err(remote(&location, e)),
            };
            let body = o.body.collect().await.map_err(|e| StageError::Remote {
                location: location.clone(),
                detail: e.to_string(),
                retryable: true,
            })?;
            Ok(body.into_bytes())
        })
    }

    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectSum>, StageError>> {
        Box::pin(async move {
            let object_key = self.object_key(key)?;
            let s = &self.inner;
            let location = format!("{}/{key}", self.url);
            let head = s
                .client
                .head_object()
                .bucket(&s.bucket)
                .key(&object_key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await;
            let head = match head {
                Ok(o) => o,
                Err(SdkError::ServiceError(e)) if e.err().is_not_found() => return Ok(None),
                Err(e) => return Err(remote(&location, e)),
            };
            let bytes = head.content_length().unwrap_or(0).max(0) as u64;
            // A full-object CRC32 as S3 keeps it; a composite one ("…-N") or none (an object written by another
            // tool, or a stand-in that keeps no checksums) is computed by reading the object once.
            let full = head.checksum_type() != Some(&ChecksumType::Composite);
            match head.checksum_crc32().filter(|c| full && !c.contains('-')) {
                Some(crc) => Ok(Some(ObjectSum {
                    bytes,
                    crc32: crc.to_string(),
                })),
                None => self.read_sum(&object_key, &location).await.map(Some),
            }
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        Box::pin(async move {
            let keys = self.list(prefix).await?;
            let s = &self.inner;
            let location = format!("{}/{prefix}", self.url);
            // DeleteObjects takes at most 1,000 keys a request.
            for batch in keys.chunks(1000) {
                let bad = |e: aws_sdk_s3::error::BuildError| StageError::BadUrl {
                    url: location.clone(),
                    reason: e.to_string(),
                };
                let objects = batch
                    .iter()
                    .map(|(k, _)| {
                        ObjectIdentifier::builder()
                            .key(self.object_key(k)?)
                            .build()
                            .map_err(bad)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let delete = Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .map_err(bad)?;
                let out = s
                    .client
                    .delete_objects()
                    .bucket(&s.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| remote(&location, e))?;
                if let Some(err) = out.errors().first() {
                    return Err(StageError::Remote {
                        location: format!("{}/{}", self.url, err.key().unwrap_or("?")),
                        detail: format!("DeleteObjects: {}", err.message().unwrap_or("failed")),
                        retryable: false,
                    });
                }
            }
            Ok(keys.len())
        })
    }
}

impl S3Stage {
    /// Size and CRC32 of an object, read once in stream.
    async fn read_sum(&self, object_key: &str, location: &str) -> Result<ObjectSum, StageError> {
        let s = &self.inner;
        let mut o = s
            .client
            .get_object()
            .bucket(&s.bucket)
            .key(object_key)
            .send()
            .await
            .map_err(|e| remote(location, e))?;
        let mut crc = Crc32::default();
        let mut bytes = 0u64;
        while let Some(chunk) = o.body.next().await {
            let chunk = chunk.map_err(|e| StageError::Remote {
                location: location.to_string(),
                detail: e.to_string(),
                retryable: true,
            })?;
            crc.update(&chunk);
            bytes += chunk.len() as u64;
        }
        Ok(ObjectSum {
            bytes,
            crc32: crc.encoded(),
        })
    }
}

struct S3Object {
    shared: Arc<Shared>,
    url: String,
    key: String,
    buf: Vec<u8>,
    upload_id: Option<String>,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, StageError>>,
    done: Vec<CompletedPart>,
    bytes: u64,
    crc: Crc32,
}

impl S3Object {
    async fn start_upload(&mut self) -> Result<String, StageError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let s = &self.shared;
        let mut req = s
            .client
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_type(ChecksumType::FullObject);
        if let Some(kms) = &s.options.sse_kms_key_id {
            req = req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms);
        }
        let out = req.send().await.map_err(|e| remote(&self.url, e))?;
        let id = out.upload_id().ok_or_else(|| StageError::Remote {
            location: self.url.clone(),
            detail: "CreateMultipartUpload returned no upload id".into(),
            retryable: true,
        })?;
        self.upload_id = Some(id.to_string());
        Ok(id.to_string())
    }

    /// Uploads one part in the background, waiting first while too many are in flight.
    async fn send_part(&mut self, body: Bytes) -> Result<(), StageError> {
        let upload_id = self.start_upload().await?;
        while self.in_flight.len() >= MAX_PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let (s, key, url) = (self.shared.clone(), self.key.clone(), self.url.clone());
        self.in_flight.spawn(async move {
            let out = s
                .client
                .upload_part()
                .bucket(&s.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| remote(&format!("{url} (part {number})"), e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                .build())
        });
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<(), StageError> {
        match self.in_flight.join_next().await {
            Some(Ok(part)) => {
                self.done.push(part?);
                Ok(())
            }
            Some(Err(e)) => Err(StageError::Remote {
                location: self.url.clone(),
                detail: format!("part upload task: {e}"),
                retryable: true,
            }),
            None => Ok(()),
        }
    }

    async fn complete(&mut self) -> Result<(), StageError> {
        let s = self.shared.clone();
        let Some(upload_id) = self.upload_id.clone() else {
            // Smaller than one part: one PutObject.
            let mut req = s
                .client
                .put_object()
                .bucket(&s.bucket)
                .key(&self.key)
                .checksum_crc32(self.crc.encoded())
                .body(ByteStream::from(std::mem::take(&mut self.buf)));
            if let Some(kms) = &s.options.sse_kms_key_id {
                req = req
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .ssekms_key_id(kms);
            }
            req.send().await.map_err(|e| remote(&self.url, e))?;
            return Ok(());
        };
        if !self.buf.is_empty() {
            let last = Bytes::from(std::mem::take(&mut self.buf));
            self.send_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        self.done.sort_by_key(|p| p.part_number());
        s.client
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .checksum_type(ChecksumType::FullObject)
            .checksum_crc32(self.crc.encoded())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.done)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| remote(&self.url, e))?;
        // Completed: nothing left for a drop to abort.
        self.upload_id = None;
        Ok(())
    }

    /// Aborts the upload once no part of it is on the wire. A part request cancelled mid-flight may still land on
    /// the server after the abort and stay there as an orphan (S3 documents this), so the parts in flight are waited
    /// for, whatever their outcome, rather than cancelled.
    async fn abort_upload(&mut self) -> Result<(), StageError> {
        while self.in_flight.join_next().await.is_some() {}
        if let Some(upload_id) = self.upload_id.take() {
            let s = &self.shared;
            s.client
                .abort_multipart_upload()
                .bucket(&s.bucket)
                .key(&self.key)
                .upload_id(&upload_id)
                .send()
                .await
                .map_err(|e| remote(&self.url, e))?;
        }
        Ok(())
    }
}

/// A writer dropped with its multipart upload neither completed nor aborted (its task aborted: a failing Map drops
/// its other iterations, a Ctrl-C drops the run) aborts the upload in the background, once the parts it has in
/// flight are done, so that no upload is left in progress to be billed until the lifecycle rule removes it.
impl Drop for S3Object {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, key, url) = (self.shared.clone(), self.key.clone(), self.url.clone());
        let mut in_flight = std::mem::take(&mut self.in_flight);
        rt.spawn(async move {
            while in_flight.join_next().await.is_some() {}
            let abort = shared
                .client
                .abort_multipart_upload()
                .bucket(&shared.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(error = %remote(&url, e), "could not abort a dropped multipart upload");
            }
        });
    }
}

impl ObjectWriter for S3Object {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StageError>> {
        Box::pin(async move {
            self.bytes += chunk.len() as u64;
            self.crc.update(&chunk);
            if self.buf.is_empty() && chunk.len() >= PART_BYTES {
                // The usual case: the Parquet writer hands over whole part-sized chunks; no copy.
                return self.send_part(chunk).await;
            }
            self.buf.extend_from_slice(&chunk);
            while self.buf.len() >= PART_BYTES {
                let rest = self.buf.split_off(PART_BYTES);
                let part = Bytes::from(std::mem::replace(&mut self.buf, rest));
                self.send_part(part).await?;
            }
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<StagedObject, StageError>> {
        Box::pin(async move {
            if let Err(e) = self.complete().await {
                if let Err(abort) = self.abort_upload().await {
                    tracing::warn!(error = %abort, url = %self.url, "could not abort a failed multipart upload");
                }
                return Err(e);
            }
            Ok(StagedObject {
                url: self.url.clone(),
                bytes: self.bytes,
                crc32: self.crc.encoded(),
            })
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StageError>> {
        Box::pin(async move { self.abort_upload().await })
    }
}
