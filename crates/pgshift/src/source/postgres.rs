//! The source's PostgreSQL adapter: a connection string (with libpq's environment, [`crate::pgclient::libpq`]) and
//! TLS, sessions whose whole handshake is bounded by the connect timeout, and every failed connection classified: at
//! once fatal when no retry can help, else retryable.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_postgres::Client;

use super::{chain, Connection, SourceConnector, SourceError};
use crate::contract::snapshot::Endpoint;

/// A Postgres connection string (`postgres://user:pass@host:port/db` or `host=… dbname=…`).
#[derive(Clone)]
pub struct PgConnector {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// Where the password came from (for an authentication error).
    password: crate::pgclient::libpq::PasswordOrigin,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("PgConnector")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .finish()
    }
}

impl PgConnector {
    pub fn new(url: &str) -> Result<Self, SourceError> {
        let parsed = crate::pgclient::tls::config(url).map_err(|e| SourceError::BadUrl(e.to_string()))?;
        let mut c = Self::from_parts(parsed.config, parsed.tls);
        c.password = parsed.password;
        Ok(c)
    }

    /// A connector for a ready config and TLS connector (see [`crate::pgclient::tls`]; the password may come from a secret:
    /// it is never printed).
    pub fn from_parts(mut config: tokio_postgres::Config, tls: tokio_postgres_rustls::MakeRustlsConnect) -> Self {
        if config.get_application_name().is_none() {
            config.application_name("pgshift");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.keepalives_idle(Duration::from_secs(30));
        Self {
            config,
            tls,
            password: Default::default(),
        }
    }

    /// A session and its connection's future; `first`: the run's first contact ([`SourceConnector::connect_first`]).
    async fn open(&self, first: bool) -> Result<(Client, Connection), SourceError> {
        use crate::pgclient::ConnectFailure;
        let (client, connection) = match crate::pgclient::connect(&self.config, self.tls.clone()).await {
            Ok(c) => c,
            Err(ConnectFailure::Driver(e)) => return Err(connect_error(self, &e, first)),
            Err(ConnectFailure::NoAnswer(secs)) => {
                return Err(SourceError::Unavailable {
                    detail: format!(
                        "connecting to the source at {}: no answer within {secs} s (connect_timeout)",
                        crate::pgclient::endpoint(&self.config)
                    ),
                    driver: None,
                })
            }
        };
        Ok((client, Box::pin(ended(connection)) as Connection))
    }
}

/// A failed connection: at once fatal when retrying cannot help ([`crate::pgclient::permanent_connect_error`]),
/// else retryable; either way naming host, port and cause.
fn connect_error(c: &PgConnector, e: &tokio_postgres::Error, first: bool) -> SourceError {
    let at = crate::pgclient::endpoint(&c.config);
    match crate::pgclient::permanent_connect_error(e, first, &c.password) {
        Some(p) => {
            let (hint, not_found) = match p {
                crate::pgclient::Permanent::Refused(h) => (h, false),
                crate::pgclient::Permanent::NotFound(h) => (h, true),
            };
            SourceError::Connect {
                at,
                cause: chain(e),
                hint,
                not_found,
            }
        }
        None => SourceError::Unavailable {
            detail: format!("connecting to the source at {at}: {}", chain(e)),
            driver: None,
        },
    }
}

impl SourceConnector for PgConnector {
    fn connect(&self) -> BoxFuture<'_, Result<Client, SourceError>> {
        Box::pin(async move {
            let (client, connection) = self.connect_driven().await?;
            tokio::spawn(connection);
            Ok(client)
        })
    }

    fn connect_first(&self) -> BoxFuture<'_, Result<Client, SourceError>> {
        Box::pin(async move {
            let (client, connection) = self.open(true).await?;
            tokio::spawn(connection);
            Ok(client)
        })
    }

    fn connect_driven(&self) -> BoxFuture<'_, Result<(Client, Connection), SourceError>> {
        Box::pin(self.open(false))
    }

    fn at(&self, endpoint: &Endpoint) -> Result<Arc<dyn SourceConnector>, SourceError> {
        Ok(Arc::new(Self {
            config: moved(&self.config, endpoint),
            tls: self.tls.clone(),
            password: self.password.clone(),
        }))
    }
}

/// A config with every setting of `c` but its hosts and ports, which are `endpoint`'s.
fn moved(c: &tokio_postgres::Config, endpoint: &Endpoint) -> tokio_postgres::Config {
    let mut n = tokio_postgres::Config::new();
    n.host(&endpoint.host).port(endpoint.port);
    if let Some(u) = c.get_user() {
        n.user(u);
    }
    if let Some(p) = c.get_password() {
        n.password(p);
    }
    if let Some(d) = c.get_dbname() {
        n.dbname(d);
    }
    if let Some(o) = c.get_options() {
        n.options(o);
    }
    if let Some(a) = c.get_application_name() {
        n.application_name(a);
    }
    if let Some(t) = c.get_connect_timeout() {
        n.connect_timeout(*t);
    }
    n.ssl_mode(c.get_ssl_mode())
        .ssl_negotiation(c.get_ssl_negotiation())
        .channel_binding(c.get_channel_binding())
        .keepalives(c.get_keepalives())
        .keepalives_idle(c.get_keepalives_idle());
    n
}

/// A connection's future, its end logged.
async fn ended<F, E>(connection: F)
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "source connection ended");
    }
}
