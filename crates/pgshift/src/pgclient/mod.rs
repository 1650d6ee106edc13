//! Layer 1, PostgreSQL client plumbing shared by the source and the PostgreSQL warehouse: connection strings with
//! TLS (libpq's `sslmode`, [`tls`]), and which server errors may pass on a retry.

pub(crate) mod tls;

/// Whether a server error may pass on a retry, by its SQLSTATE class: 08 (connection), 40 (serialization failure,
/// deadlock), 53 (insufficient resources), 57 (operator intervention: shutdown, admin cancel) and 58 (system I/O).
/// Every other class fails again.
pub(crate) fn transient(code: &tokio_postgres::error::SqlState) -> bool {
    matches!(&code.code()[..2], "08" | "40" | "53" | "57" | "58")
}
