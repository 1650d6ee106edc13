//! Layer 3, the source database: the connector port, its Postgres adapter, the session settings every extraction runs
//! with, and catalog introspection of one table (the planner extends this to many tables at once).

use crate::contract::code::Code;
use crate::contract::snapshot::Endpoint;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio_postgres::{Client, GenericClient};

use crate::contract::model::{ColumnSpec, KeyType, PgType, TableRef};
use crate::contract::types::{default_mapping, mapping_for_cast, Cast, CatalogType, TypePolicies};

mod datetime;
pub(crate) mod decode;
mod postgres;
pub(crate) mod screen;
pub(crate) mod sieve;
#[doc(hidden)]
pub use decode::decode_chunks;
pub use postgres::PgConnector;

/// What the source reports: a table or column that is not there (or changed), a type pgshift does not map, a
/// privilege missing, the server out of reach, a statement timed out or failed (retryable when the server may
/// answer differently next time). One classifier of driver errors ([`SourceError::from_pg`]) for every reader.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source connection string: {0}")]
    BadUrl(String),

    #[error("table {0} not found (or not visible to this user)")]
    TableNotFound(TableRef),

    #[error("column {column:?} not found in table {table}")]
    ColumnNotFound { table: TableRef, column: String },

    #[error(
        "column {column:?} of {table} has type {ty}, which pgshift does not map; override it with a per-column cast: \
         --cast {table}.{column}=text (or json) on pgshift run, plan or extract, or casts = {{ {column} = \"text\" }} \
         under [table.\"{table}\"] in pgshift.toml"
    )]
    UnsupportedType {
        table: TableRef,
        column: String,
        ty: String,
    },

    #[error("key column {column:?} of {table} has type {ty}, which pgshift cannot range-partition on")]
    UnsupportedKeyType {
        table: TableRef,
        column: String,
        ty: String,
    },

    #[error("column {column:?} of {table} changed since planning: the task says {expected}, the source has {actual}")]
    SchemaChanged {
        table: TableRef,
        column: String,
        expected: String,
        actual: String,
    },

    #[error("permission denied reading {table}: {detail}")]
    PermissionDenied { table: TableRef, detail: String },

    /// The server out of reach, or an error it may not repeat; `driver` is the driver's error when there is one.
    #[error("source unavailable: {detail}")]
    Unavailable {
        detail: String,
        #[source]
        driver: Option<tokio_postgres::Error>,
    },

    /// A server error no retry mends, met outside any one table's read (the planner's catalog reads).
    #[error("source error {detail}")]
    Server {
        detail: String,
        #[source]
        driver: Option<tokio_postgres::Error>,
    },

    /// A connection that cannot succeed however often it is retried (authentication, no such database or host, a
    /// certificate that does not verify): fails at once.
    #[error("connecting to the source at {at}: {cause}; {hint}")]
    Connect {
        at: String,
        cause: String,
        hint: String,
        not_found: bool,
    },

    #[error("statement timeout after {secs} s extracting {table}")]
    Timeout { table: TableRef, secs: u64 },

    #[error("source error reading {table}: {detail}")]
    Sql {
        table: TableRef,
        detail: String,
        retryable: bool,
        #[source]
        driver: Option<tokio_postgres::Error>,
    },
}

impl SourceError {
    /// The stable name the state machine matches on (`ErrorEquals`).
    pub fn code(&self) -> Code {
        match self {
            SourceError::BadUrl(_) => Code::FatalInvalidInput,
            SourceError::TableNotFound(_) | SourceError::ColumnNotFound { .. } => Code::FatalNotFound,
            SourceError::UnsupportedType { .. } | SourceError::UnsupportedKeyType { .. } => Code::FatalUnsupportedType,
            SourceError::SchemaChanged { .. } => Code::FatalSchemaChanged,
            SourceError::PermissionDenied { .. } => Code::FatalPermissionDenied,
            SourceError::Unavailable { .. } => Code::RetryableSourceUnavailable,
            SourceError::Server { .. } => Code::FatalSource,
            SourceError::Connect { not_found: true, .. } => Code::FatalNotFound,
            SourceError::Connect { not_found: false, .. } => Code::FatalPermissionDenied,
            SourceError::Timeout { .. } => Code::RetryableTimeout,
            SourceError::Sql { retryable: true, .. } => Code::RetryableSource,
            SourceError::Sql { retryable: false, .. } => Code::FatalSource,
        }
    }

    /// The stable name of [`Self::code`].
    pub fn name(&self) -> &'static str {
        self.code().name()
    }

    /// Classifies a driver error met while extracting `table`.
    pub fn from_pg(table: &TableRef, statement_timeout_secs: u64, e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            // No server error: the connection broke (closed, reset, timed out).
            return SourceError::Unavailable {
                detail: format!("{e} (while extracting {table})"),
                driver: Some(e),
            };
        };
        let code = db.code();
        let detail = format!("{} (SQLSTATE {})", db.message(), code.code());
        if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            SourceError::PermissionDenied {
                table: table.clone(),
                detail,
            }
        } else if *code == SqlState::QUERY_CANCELED {
            SourceError::Timeout {
                table: table.clone(),
                secs: statement_timeout_secs,
            }
        } else if *code == SqlState::UNDEFINED_TABLE {
            SourceError::TableNotFound(table.clone())
        } else {
            let retryable = crate::pgclient::transient(code);
            SourceError::Sql {
                table: table.clone(),
                detail,
                retryable,
                driver: Some(e),
            }
        }
    }
}

/// Opens sessions on the source.
pub trait SourceConnector: Send + Sync {
    /// A session whose connection runs on its own task.
    fn connect(&self) -> BoxFuture<'_, Result<Client, SourceError>>;

    /// A run's first session with the source (the planner's): as [`Self::connect`], but a server that refuses the
    /// connection is an error no retry mends, named at once ([`crate::pgclient::permanent_connect_error`]).
    fn connect_first(&self) -> BoxFuture<'_, Result<Client, SourceError>> {
        self.connect()
    }

    /// A session and the future that drives its connection, for a caller that polls both in one task with
    /// [`drive`]: the extractor reads its COPY stream and the socket on one thread, without a wake-up of another
    /// worker thread for every batch of messages. By default the connection runs on its own task.
    fn connect_driven(&self) -> BoxFuture<'_, Result<(Client, Connection), SourceError>> {
        Box::pin(async move {
            let client = self.connect().await?;
            let idle: Connection = Box::pin(futures_util::future::pending());
            Ok((client, idle))
        })
    }

    /// The same source at another host and port (the instance restored from a snapshot): the same user, password,
    /// database and TLS settings.
    fn at(&self, endpoint: &Endpoint) -> Result<Arc<dyn SourceConnector>, SourceError> {
        Err(SourceError::BadUrl(format!(
            "this source cannot be read at {}:{} (a restored snapshot's endpoint)",
            endpoint.host, endpoint.port
        )))
    }
}

/// The connector for a task or request: the configured one, or the same at the restored snapshot's endpoint.
pub fn connector_for(
    configured: &Arc<dyn SourceConnector>,
    endpoint: Option<&Endpoint>,
) -> Result<Arc<dyn SourceConnector>, SourceError> {
    match endpoint {
        None => Ok(configured.clone()),
        Some(e) => configured.at(e),
    }
}

/// The future that moves a session's messages between its socket and its client.
pub type Connection = BoxFuture<'static, ()>;

/// Runs `work` while polling `connection` in the same task; when the connection ends first (closed, broken), `work`
/// goes on alone and sees the error on its next request.
pub async fn drive<T>(connection: Connection, work: impl std::future::Future<Output = T>) -> T {
    futures_util::pin_mut!(work);
    match futures_util::future::select(work, connection).await {
        futures_util::future::Either::Left((out, _)) => out,
        futures_util::future::Either::Right(((), work)) => work.await,
    }
}

pub use crate::pgclient::chain;

/// Settings that make what a source session reads independent of the server's, the database's and the role's defaults:
/// - every value's wire and text form (encoding, dates, intervals, time zone, floats, bytea);
/// - `search_path = pg_catalog`: a user's function or operator (`public.to_json(int[])`, say) can never shadow a
///   built-in the generated SQL calls, whatever the role's path (every table pgshift reads is schema-qualified);
/// - `row_security = off`: a row-level security policy makes the read fail, naming the table, instead of hiding rows
///   (<https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-ROW-SECURITY>);
/// - no statement, lock or idle-in-transaction timeout of the role's: the extractor sets its own per task.
pub const SESSION_SETTINGS: &str = "SET search_path = pg_catalog; SET row_security = off; \
     SET client_encoding = 'UTF8'; SET standard_conforming_strings = on; \
     SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC'; \
     SET extra_float_digits = 3; SET bytea_output = 'hex'; SET statement_timeout = 0; SET lock_timeout = 0; \
     SET idle_in_transaction_session_timeout = 0";

/// A read's snapshot as the server reports it ([`horizon`]).
pub(crate) struct Snapshot {
    pub(crate) horizon: sieve::Horizon,
    /// `txid_current_snapshot()`'s text: on a primary, two snapshots with equal text see the same rows.
    pub(crate) text: String,
    /// The server is a standby, whose snapshot text leaves out the transactions in progress (it holds them as
    /// subtransactions'): equal texts there prove nothing.
    pub(crate) standby: bool,
}

/// The transaction ids of the current snapshot (a `REPEATABLE READ` transaction's, or the next statement's), with
/// their epochs, its text and whether the server is a standby ([`Snapshot`]); the lineage of the server, database
/// and table (by OID) where this role may read the system identifier, on PostgreSQL 10 or later, else none (0).
/// They bound which row versions may be new since a read ([`sieve`]).
pub(crate) async fn horizon(db: &impl GenericClient, table_oid: u32) -> Result<Snapshot, tokio_postgres::Error> {
    // txid_current_snapshot is on every server (pg_current_snapshot, its successor, from 13 on); functions newer
    // than that only in the second statement, on a server that has them (a name is resolved even in a branch not
    // taken, and an error would end the snapshot).
    let row = db
        .query_one(
            "SELECT pg_catalog.txid_snapshot_xmin(s), pg_catalog.txid_snapshot_xmax(s), \
             pg_catalog.current_setting('server_version_num')::pg_catalog.int4, (SELECT d.oid FROM \
             pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()), \
             s::pg_catalog.text, pg_catalog.pg_is_in_recovery() FROM pg_catalog.txid_current_snapshot() AS s",
            &[],
        )
        .await?;
    let id = |i| row.get::<_, i64>(i).max(0) as u64;
    let (version, database): (i32, u32) = (row.get(2), row.get(3));
    let mut horizon = sieve::Horizon {
        xmin: id(0),
        xmax: id(1),
        lineage: 0,
    };
    if version >= 100_000 {
        // The server's identity, its start time, and when its shared statistics were last reset, which a
        // crash-restart does (the postmaster, and its start time, stay): ids are ordered only along one running
        // server's history (the sieve's docs). NULL, and no lineage, where any of them cannot be read.
        let server = db
            .query_one(
                "SELECT CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') \
                 THEN (SELECT c.system_identifier::pg_catalog.text OPERATOR(pg_catalog.||) '/' \
                 OPERATOR(pg_catalog.||) pg_catalog.pg_postmaster_start_time()::pg_catalog.text \
                 OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) (SELECT b.stats_reset::pg_catalog.text FROM \
                 pg_catalog.pg_stat_bgwriter b) FROM pg_catalog.pg_control_system() c) END",
                &[],
            )
            .await?
            .get::<_, Option<String>>(0);
        horizon.lineage = server.map_or(0, |s| sieve::lineage(&s, database, table_oid));
    }
    Ok(Snapshot {
        horizon,
        text: row.get(4),
        standby: row.get(5),
    })
}

/// A column as the catalog describes it.
#[derive(Debug, Clone)]
pub struct CatalogColumn {
    pub name: String,
    pub not_null: bool,
    pub ty: CatalogType,
    pub can_select: bool,
}

/// The key columns of a table and their key types: each must exist and be of a type pgshift can range on.
pub fn key_columns<'a>(
    catalog: &'a CatalogTable,
    table: &TableRef,
    key: &[String],
) -> Result<Vec<(&'a CatalogColumn, KeyType)>, SourceError> {
    key.iter()
        .map(|k| {
            let c = catalog
                .columns
                .iter()
                .find(|c| &c.name == k)
                .ok_or_else(|| SourceError::ColumnNotFound {
                    table: table.clone(),
                    column: k.clone(),
                })?;
            let ty = KeyType::from_oid(c.ty.pg.oid).ok_or_else(|| SourceError::UnsupportedKeyType {
                table: table.clone(),
                column: k.clone(),
                ty: c.ty.pg.name.clone(),
            })?;
            Ok((c, ty))
        })
        .collect()
}

/// A table as the catalog describes it.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    pub table: TableRef,
    pub oid: u32,
    /// `pg_class.relkind`: r(table), p(artitioned), v(iew), m(aterialized view), f(oreign).
    pub kind: char,
    pub columns: Vec<CatalogColumn>,
    /// Primary key, else the narrowest unique, non-partial index over NOT NULL plain columns; empty when none.
    pub key: Vec<String>,
}

const COLUMNS_SQL: &str = "
WITH RECURSIVE t(attrelid, attnum, attname, attnotnull, decl_oid, oid, typmod, depth) AS (
    SELECT a.attrelid, a.attnum, a.attname::text, a.attnotnull, a.atttypid, a.atttypid, a.atttypmod, 0
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT t.attrelid, t.attnum, t.attname, t.attnotnull, t.decl_oid, ty.typbasetype,
           CASE WHEN t.typmod = -1 THEN ty.typtypmod ELSE t.typmod END, t.depth + 1
    FROM t JOIN pg_catalog.pg_type ty ON ty.oid = t.oid
    WHERE ty.typtype = 'd'
)
SELECT DISTINCT ON (t.attrelid, t.attnum)
       t.attrelid, t.attname, t.attnotnull, t.oid, t.typmod,
       pg_catalog.format_type(t.oid, t.typmod),
       ty.typtype::text, ty.typcategory::text, ty.typname::text,
       CASE WHEN t.decl_oid <> t.oid THEN pg_catalog.format_type(t.decl_oid, NULL) END,
       pg_catalog.has_column_privilege(t.attrelid, t.attnum, 'SELECT')
FROM t JOIN pg_catalog.pg_type ty ON ty.oid = t.oid
ORDER BY t.attrelid, t.attnum, t.depth DESC";

/// Per table: the primary key, else the narrowest valid, non-partial unique index over NOT NULL plain columns.
const KEY_SQL: &str = "
SELECT DISTINCT ON (indrelid) indrelid, cols FROM (
    SELECT i.indrelid, i.indexrelid, i.indisprimary, i.indnkeyatts,
           array_agg(a.attname::text ORDER BY k.ord) AS cols, bool_and(a.attnotnull) AS not_null, count(*) AS n
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = ANY($1) AND (i.indisprimary OR i.indisunique) AND i.indisvalid AND i.indpred IS NULL
      AND k.ord <= i.indnkeyatts
    GROUP BY i.indrelid, i.indexrelid, i.indisprimary, i.indnkeyatts
) x
WHERE not_null AND n = indnkeyatts
ORDER BY indrelid, indisprimary DESC, indnkeyatts, indexrelid";

/// Reads one table's columns and key from the catalog.
pub async fn describe_table(db: &impl GenericClient, table: &TableRef) -> Result<CatalogTable, SourceError> {
    let pg = |e| SourceError::from_pg(table, 0, e);
    let row = db
        .query_opt(
            "SELECT c.oid, c.relkind::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(pg)?
        .ok_or_else(|| SourceError::TableNotFound(table.clone()))?;
    let kind: String = row.get(1);
    let mut all = describe_tables(db, &[(row.get(0), table.clone(), kind.chars().next().unwrap_or('r'))])
        .await
        .map_err(pg)?;
    all.pop().ok_or_else(|| SourceError::TableNotFound(table.clone()))
}

/// Reads the columns and keys of many tables (oid, name, relkind) in two catalog queries, whatever their number.
pub(crate) async fn describe_tables(
    db: &impl GenericClient,
    tables: &[(u32, TableRef, char)],
) -> Result<Vec<CatalogTable>, tokio_postgres::Error> {
    let oids: Vec<u32> = tables.iter().map(|t| t.0).collect();
    let mut out: Vec<CatalogTable> = tables
        .iter()
        .map(|(oid, table, kind)| CatalogTable {
            table: table.clone(),
            oid: *oid,
            kind: *kind,
            columns: Vec::new(),
            key: Vec::new(),
        })
        .collect();
    let index: std::collections::HashMap<u32, usize> = oids.iter().enumerate().map(|(i, o)| (*o, i)).collect();
    for r in db.query(COLUMNS_SQL, &[&oids]).await? {
        let rel: u32 = r.get(0);
        let Some(&i) = index.get(&rel) else { continue };
        let typtype: String = r.get(6);
        let category: String = r.get(7);
        out[i].columns.push(CatalogColumn {
            name: r.get(1),
            not_null: r.get(2),
            ty: CatalogType {
                pg: PgType {
                    name: r.get(5),
                    oid: r.get(3),
                    typmod: r.get(4),
                    declared: r.get(9),
                },
                typtype: typtype.chars().next().unwrap_or('b'),
                category: category.chars().next().unwrap_or('X'),
                base_name: r.get(8),
            },
            can_select: r.get(10),
        });
    }
    for r in db.query(KEY_SQL, &[&oids]).await? {
        let rel: u32 = r.get(0);
        if let Some(&i) = index.get(&rel) {
            out[i].key = r.get(1);
        }
    }
    Ok(out)
}

/// The default column specs of a table: every column, in table order, through the type table, with per-column cast
/// overrides. An unmapped type without an override is an error naming the column.
pub fn column_specs(
    t: &CatalogTable,
    policies: &TypePolicies,
    casts: &[(String, Cast)],
) -> Result<Vec<ColumnSpec>, SourceError> {
    for (name, _) in casts {
        if !t.columns.iter().any(|c| &c.name == name) {
            return Err(SourceError::ColumnNotFound {
                table: t.table.clone(),
                column: name.clone(),
            });
        }
    }
    t.columns
        .iter()
        .map(|c| {
            let (cast, mapping) = match casts.iter().find(|(n, _)| n == &c.name) {
                Some((_, cast)) => (Some(*cast), mapping_for_cast(*cast)),
                None => default_mapping(&c.ty, policies).ok_or_else(|| SourceError::UnsupportedType {
                    table: t.table.clone(),
                    column: c.name.clone(),
                    ty: c.ty.pg.declared.clone().unwrap_or_else(|| c.ty.pg.name.clone()),
                })?,
            };
            Ok(ColumnSpec {
                name: c.name.clone(),
                pg_type: c.ty.pg.clone(),
                // `--infinity null` on a NOT NULL column: its infinities become NULL, so the column may hold NULL.
                nullable: !c.not_null || mapping.nulls_values(),
                cast,
                mapping,
            })
        })
        .collect()
}

/// Checks a task's columns against the catalog: each exists, is readable, and has the type the task was planned
/// with.
pub(crate) fn check_columns(t: &CatalogTable, columns: &[ColumnSpec]) -> Result<(), SourceError> {
    for spec in columns {
        let Some(c) = t.columns.iter().find(|c| c.name == spec.name) else {
            return Err(SourceError::ColumnNotFound {
                table: t.table.clone(),
                column: spec.name.clone(),
            });
        };
        if !c.can_select {
            return Err(SourceError::PermissionDenied {
                table: t.table.clone(),
                detail: format!("no SELECT privilege on column {:?}", c.name),
            });
        }
        if c.ty.pg.oid != spec.pg_type.oid || c.ty.pg.typmod != spec.pg_type.typmod {
            return Err(SourceError::SchemaChanged {
                table: t.table.clone(),
                column: spec.name.clone(),
                expected: spec.pg_type.name.clone(),
                actual: c.ty.pg.name.clone(),
            });
        }
    }
    Ok(())
}
