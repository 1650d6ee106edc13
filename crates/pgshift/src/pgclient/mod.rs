//! Layer 1, PostgreSQL client plumbing shared by the source and the PostgreSQL warehouse: connection strings with TLS
//! (libpq's `sslmode`, [`tls`]), and which server errors may pass on a retry.

pub(crate) mod tls;

/// Whether a server error may pass on a retry, by its SQLSTATE class: 08 (connection), 40 (serialization failure,
/// deadlock), 53 (insufficient resources), 57 (operator intervention: shutdown, admin cancel) and 58 (system I/O).
/// Every other class fails again.
pub(crate) fn transient(code: &tokio_postgres::error::SqlState) -> bool {
    matches!(&code.code()[..2], "08" | "40" | "53" | "57" | "58")
}

/// A connection attempt that cannot succeed by retrying, and what to do about it: the server refused who we are or
/// the database we asked for, the host name does not exist, or its certificate does not verify. `None`: the error
/// may pass (refused or reset connections, timeouts, a server starting up or out of slots, a name server that did
/// not answer).
pub(crate) fn permanent_connect_error(e: &tokio_postgres::Error) -> Option<Permanent> {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return match code.code() {
            c if c.starts_with("28") => Some(Permanent::Refused(
                "check the user and password (the secret's username and password)",
            )),
            _ if *code == SqlState::INVALID_CATALOG_NAME => {
                Some(Permanent::NotFound("check the database name in the connection string"))
            }
            _ => None,
        };
    }
    let text = chain(e);
    let has = |s: &str| text.contains(s);
    if has("Name or service not known") || has("nodename nor servname") || has("No address associated with hostname") {
        Some(Permanent::NotFound("check the host name"))
    } else if has("invalid peer certificate") || has("UnknownIssuer") || has("NotValidForName") || has("certificate") {
        Some(Permanent::Refused(
            "the server's certificate does not verify against sslrootcert for this host: check sslrootcert and the host name, or sslmode",
        ))
    } else {
        None
    }
}

/// Why a connection cannot succeed, and the advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permanent {
    /// Authentication or certificate: the caller is not let in.
    Refused(&'static str),
    /// The host or the database does not exist.
    NotFound(&'static str),
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
