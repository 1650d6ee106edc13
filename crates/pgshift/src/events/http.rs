//! A JSON POST over HTTP or HTTPS (hyper, rustls with the system's roots): what `--events URL` and OpenLineage's
//! endpoint receive. One attempt with a 5 s deadline; a status other than 2xx is an error naming it.

use std::time::Duration;

use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a POST did not land: the endpoint did not answer (unreachable, or silent past the deadline: the next POST
/// would wait the same), or it answered with an error.
#[derive(Debug)]
pub enum PostError {
    NoAnswer(String),
    Refused(String),
}

/// POSTs `body` as `application/json` to `url`.
pub async fn post_json(url: &str, body: Vec<u8>) -> Result<(), PostError> {
    post(url, body).await
}

async fn post(url: &str, body: Vec<u8>) -> Result<(), PostError> {
    use PostError::{NoAnswer, Refused};
    // The provider named, not the process default: the same aws-lc-rs the rest of pgshift's TLS uses.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| Refused(format!("TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("pgshift/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| Refused(e.to_string()))?;
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| NoAnswer("no answer in 5 s".to_string()))?
        .map_err(|e| NoAnswer(crate::pgclient::chain(&e)))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(Refused(format!("HTTP {}", res.status())))
    }
}
