//! Layer 1, PostgreSQL client plumbing shared by the source and the PostgreSQL warehouse: connection strings with TLS
//! (libpq's `sslmode`, [`tls`]), and which server errors may pass on a retry.

pub(crate) mod libpq;
pub(crate) mod tls;

/// Whether a server error may pass on a retry, by its SQLSTATE class: 08 (connection), 40 (serialization failure,
/// deadlock), 53 (insufficient resources), 57 (operator intervention: shutdown, admin cancel) and 58 (system I/O).
/// Every other class fails again.
pub(crate) fn transient(code: &tokio_postgres::error::SqlState) -> bool {
    matches!(&code.code()[..2], "08" | "40" | "53" | "57" | "58")
}

/// A connection attempt that cannot succeed by retrying, and what to do about it: the server refused who we are or
/// the database we asked for, no password was found for a server that asks for one, the host name does not exist,
/// or its certificate does not verify; and, at a run's first contact with a server (`first`), a refused connection
/// too: a server the run never reached is a wrong host or port far more often than a restart (the retries are for a
/// server the run has reached). `None`: the error may pass (reset connections, timeouts, a server starting up or out
/// of slots, a name server that did not answer). `password` says where the password came from.
pub(crate) fn permanent_connect_error(
    e: &tokio_postgres::Error,
    first: bool,
    password: &libpq::PasswordOrigin,
) -> Option<Permanent> {
    use tokio_postgres::error::SqlState;
    let auth = |what: &str| {
        Some(Permanent::Refused(format!(
            "{what} (password: {}); give it in the URL (postgres://user:password@host/db), PGPASSWORD or ~/.pgpass",
            password.0
        )))
    };
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return match code.code() {
            c if c.starts_with("28") => auth("check the user and password"),
            _ if *code == SqlState::INVALID_CATALOG_NAME => Some(Permanent::NotFound(
                "check the database name in the connection string".into(),
            )),
            _ => None,
        };
    }
    let text = chain(e);
    let has = |s: &str| text.contains(s);
    if has("password missing") {
        auth("the server asks for a password and none was found")
    } else if has("Name or service not known")
        || has("nodename nor servname")
        || has("No address associated with hostname")
    {
        Some(Permanent::NotFound("check the host name".into()))
    } else if has("invalid peer certificate") || has("UnknownIssuer") || has("NotValidForName") || has("certificate") {
        Some(Permanent::Refused(
            "the server's certificate does not verify against sslrootcert for this host: check sslrootcert and the host name, or sslmode".into(),
        ))
    } else if first && refused(e) {
        Some(Permanent::NotFound(
            "nothing listens there: check the host and port (and that the server runs and accepts TCP connections)"
                .into(),
        ))
    } else {
        None
    }
}

/// Whether the connection was refused (nothing listening at the address).
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Why a connection cannot succeed, and the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Permanent {
    /// Authentication or certificate: the caller is not let in.
    Refused(String),
    /// The host, the port or the database does not exist.
    NotFound(String),
}

/// A session's connection, as [`connect`] returns it.
pub(crate) type PgConnection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// Why [`connect`] did not: the driver's error, or no answer within the connect timeout (seconds).
pub(crate) enum ConnectFailure {
    Driver(tokio_postgres::Error),
    NoAnswer(u64),
}

/// Connects with the whole handshake bounded by the config's connect timeout (10 s when it sets none), as libpq
/// bounds it: tokio-postgres bounds only the socket's connect, and a server that accepts and never answers would hold
/// the caller.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
) -> Result<(tokio_postgres::Client, PgConnection), ConnectFailure> {
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(std::time::Duration::from_secs(10));
    match tokio::time::timeout(limit, config.connect(tls)).await {
        Ok(r) => r.map_err(ConnectFailure::Driver),
        Err(_) => Err(ConnectFailure::NoAnswer(limit.as_secs())),
    }
}

/// `host:port` of a connection config, for error messages (never the password).
pub(crate) fn endpoint(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// An error and its causes, `a: b: c` (a TLS failure's reason is in the cause).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}
