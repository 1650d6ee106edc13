//! Layer 3, the events port: where a run's events go when it ends ([`crate::contract::events`]). Adapters: the run's
//! `<run>/events.jsonl` on its stage ([`StageEvents`]), a file or an HTTP endpoint (`--events URL`, [`UrlEvents`]),
//! and EventBridge on AWS ([`eventbridge::EventBridgeEvents`]); [`Fanout`] sends to several. Sending never fails a
//! run: what cannot be sent is logged and returned, by name.

pub mod eventbridge;
pub mod http;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::contract::events::Event;
use crate::stage::StageOpener;

/// Why events could not be sent: where to, and the cause.
#[derive(Debug, thiserror::Error)]
#[error("sending events to {to}: {cause}")]
pub struct EventError {
    pub to: String,
    pub cause: String,
}

/// Sends a run's events.
pub trait EventSink: Send + Sync {
    /// Sends `events` of the run whose records are at `run_dir` of `stage` (`<stage>/<run>`).
    fn send<'a>(&'a self, run: RunAt<'a>, events: &'a [Event]) -> BoxFuture<'a, Result<(), EventError>>;
}

/// Which run the events are of: its stage and run id.
#[derive(Debug, Clone, Copy)]
pub struct RunAt<'a> {
    pub stage: &'a str,
    pub run_id: &'a str,
}

/// Several sinks: every one is sent to, whatever the others do; the errors are all returned.
pub struct Fanout(pub Vec<Arc<dyn EventSink>>);

impl Fanout {
    pub async fn send_all(&self, run: RunAt<'_>, events: &[Event]) -> Vec<EventError> {
        let mut errors = Vec::new();
        for s in &self.0 {
            if let Err(e) = s.send(run, events).await {
                tracing::warn!(error = %e, "events not sent");
                errors.push(e);
            }
        }
        errors
    }
}

/// Appends the events, one JSON line each, to `<run>/events.jsonl` on the run's stage (a resumed run's end adds its
/// own after the earlier attempt's).
pub struct StageEvents {
    pub stages: Arc<dyn StageOpener>,
}

impl EventSink for StageEvents {
    fn send<'a>(&'a self, run: RunAt<'a>, events: &'a [Event]) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            let key = crate::contract::layout::events_key(run.run_id);
            let err = |cause: String| EventError {
                to: format!("{}/{key}", run.stage.trim_end_matches('/')),
                cause,
            };
            let stage = self.stages.open(run.stage).await.map_err(|e| err(e.to_string()))?;
            let mut body = match stage.get(&key).await {
                Ok(b) => b.to_vec(),
                Err(crate::stage::StageError::Missing { .. }) => Vec::new(),
                Err(e) => return Err(err(e.to_string())),
            };
            body.extend(lines(events));
            crate::stage::put(stage.as_ref(), &key, Bytes::from(body))
                .await
                .map(drop)
                .map_err(|e| err(e.to_string()))
        })
    }
}

/// The events as JSON lines.
pub fn lines(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend(serde_json::to_vec(e).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

/// `--events URL`: a file (a path, or `file:///path`) the events are appended to as JSON lines, or an `http://` or
/// `https://` endpoint each event is POSTed to as JSON.
pub struct UrlEvents {
    pub url: String,
}

impl EventSink for UrlEvents {
    fn send<'a>(&'a self, _run: RunAt<'a>, events: &'a [Event]) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            let bodies: Vec<Vec<u8>> = events
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap_or_default())
                .collect();
            deliver(&self.url, &bodies).await
        })
    }
}

/// Whether `url` names an HTTP endpoint (the scheme in any case).
pub fn is_http(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Whether `url` is a target [`deliver`] takes: an `http(s)://` endpoint, a `file://` URL or a path; anything else
/// (`s3://…`) is named, before a run starts.
pub fn check_target(url: &str) -> Result<(), String> {
    match url.split_once("://") {
        _ if is_http(url) => Ok(()),
        Some(("file", _)) => Ok(()),
        Some((scheme, _)) => Err(format!(
            "{url:?}: scheme {scheme:?} is not one this takes: give an http:// or https:// endpoint, or a file (a path or \
             file:///path)"
        )),
        None if url.is_empty() => Err("empty: give an http(s):// endpoint or a file".into()),
        None => Ok(()),
    }
}

/// Delivers JSON documents to `url`: appended as lines to a file, or POSTed one by one to an HTTP endpoint.
pub async fn deliver(url: &str, bodies: &[Vec<u8>]) -> Result<(), EventError> {
    let err = |cause: String| EventError {
        to: url.to_string(),
        cause,
    };
    if is_http(url) {
        // Every document is tried, whatever the one before it got; an endpoint that does not answer at all is given
        // up at once rather than waited on once a document.
        let mut failed = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            match http::post_json(url, b.clone()).await {
                Ok(()) => {}
                Err(http::PostError::NoAnswer(why)) => {
                    failed.push(format!("{why}; {} of {} not sent", bodies.len() - i, bodies.len()));
                    break;
                }
                Err(http::PostError::Refused(why)) => failed.push(why),
            }
        }
        return match failed.as_slice() {
            [] => Ok(()),
            f => Err(err(crate::contract::code::first_few(f, "; "))),
        };
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    let mut text = Vec::new();
    for b in bodies {
        text.extend(b);
        text.push(b'\n');
    }
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| err(e.to_string()))?;
    f.write_all(&text).await.map_err(|e| err(e.to_string()))?;
    // tokio's file hands the write to a blocking thread: done only once flushed.
    f.flush().await.map_err(|e| err(e.to_string()))
}
