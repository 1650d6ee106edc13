//! A Lambda Runtime API endpoint on loopback (the protocol of `AWS_LAMBDA_RUNTIME_API`), to run the real Lambda
//! binaries in tests: it hands out queued events on `GET …/invocation/next` (and holds the request open once the
//! queue is empty, as Lambda does between invocations) and records what comes back on `…/response`, `…/error` and
//! `…/init/error`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

/// What a function answered to one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Response(Value),
    /// `errorType`, `errorMessage`.
    Error(String, String),
}

#[derive(Default)]
struct State {
    queue: VecDeque<(String, Value)>,
    answers: Vec<(String, Answer)>,
    init_error: Option<Value>,
}

/// A running endpoint.
pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::Notify>,
}

impl RuntimeApi {
    pub async fn start() -> Result<RuntimeApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (s, c) = (s.clone(), c.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| serve(s.clone(), c.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(RuntimeApi {
            address,
            state,
            changed,
        })
    }

    /// Queues an invocation; returns its request id.
    pub fn invoke(&self, event: Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(mut s) = self.state.lock() {
            s.queue.push_back((id.clone(), event));
        }
        self.changed.notify_waiters();
        id
    }

    /// The answer to an invocation, waiting up to `timeout` for it.
    pub async fn answer(&self, id: &str, timeout: Duration) -> Result<Answer> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(a) = self
                .state
                .lock()
                .ok()
                .and_then(|s| s.answers.iter().find(|(i, _)| i == id).map(|(_, a)| a.clone()))
            {
                return Ok(a);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("no answer to invocation {id} within {timeout:?}");
            }
        }
    }

    /// An invocation's answer, in one call.
    pub async fn call(&self, event: Value, timeout: Duration) -> Result<Answer> {
        let id = self.invoke(event);
        self.answer(&id, timeout).await
    }

    pub fn init_error(&self) -> Option<Value> {
        self.state.lock().ok().and_then(|s| s.init_error.clone())
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

async fn serve(
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::Notify>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let rest = path.strip_prefix("/2018-06-01/runtime/").unwrap_or_default();
    if rest == "invocation/next" {
        loop {
            let notified = changed.notified();
            let next = state.lock().ok().and_then(|mut s| s.queue.pop_front());
            if let Some((id, event)) = next {
                let mut r = reply(StatusCode::OK, Bytes::from(event.to_string()));
                let h = r.headers_mut();
                let deadline = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() + 900_000)
                    .unwrap_or_default();
                let headers = [
                    ("lambda-runtime-aws-request-id", id),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:000000000000:function:pgshift-test".into(),
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000".into(),
                    ),
                    ("content-type", "application/json".into()),
                ];
                for (k, v) in headers {
                    if let Ok(v) = v.parse() {
                        h.insert(k, v);
                    }
                }
                return Ok(r);
            }
            notified.await;
        }
    }
    if rest == "init/error" {
        if let Ok(mut s) = state.lock() {
            s.init_error = Some(json());
        }
        changed.notify_waiters();
        return Ok(reply(StatusCode::ACCEPTED, Bytes::new()));
    }
    if let Some(r) = rest.strip_prefix("invocation/") {
        if let Some((id, what)) = r.split_once('/') {
            let answer = match what {
                "response" => Some(Answer::Response(json())),
                "error" => {
                    let v = json();
                    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                    Some(Answer::Error(s("errorType"), s("errorMessage")))
                }
                _ => None,
            };
            if let Some(a) = answer {
                if let Ok(mut s) = state.lock() {
                    s.answers.push((id.to_string(), a));
                }
                changed.notify_waiters();
                return Ok(reply(StatusCode::ACCEPTED, Bytes::new()));
            }
        }
    }
    Ok(reply(
        StatusCode::NOT_FOUND,
        Bytes::from_static(b"unknown runtime API path"),
    ))
}
