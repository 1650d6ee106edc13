//! Layer 3, the warehouse port and its adapters: what the loader may do to a warehouse (submit a transaction of SQL,
//! COPY, reconcile and swap; poll and cancel it; explain a failed COPY; read a query's rows), and the PostgreSQL and
//! Redshift (Data API) warehouses behind it.

pub mod dryrun;
mod guards;
pub mod postgres;
pub mod redshift;
mod rename;
pub mod rename_redshift;
pub(crate) use guards::guard_named;

pub(crate) use rename::{rename_facts, RenameFacts};

use crate::contract::code::Code;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::contract::design::TableDesign;
use crate::contract::model::{ColumnSpec, StagedFile, TableRef};
use crate::contract::sql;
use crate::stage::{Stage, StageError};

/// What a warehouse reports: a statement that failed (retryable when the warehouse may answer differently next
/// time), a request it cannot take, the reconcile guard of a load transaction, or the stage its COPY read.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("warehouse: {detail}")]
    Sql { detail: String, retryable: bool },
    /// A connection no retry mends, named as the source's are: not let in (authentication, a certificate), or no
    /// such host, port or database. `context` says when it happened (the pre-flight: before anything was extracted).
    #[error("{context}connecting to the warehouse at {at}: {cause}; {hint}")]
    Connect {
        context: String,
        at: String,
        cause: String,
        hint: String,
        not_found: bool,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{table}: {counted} {staged} rows but the parts hold {expected}; rolled back")]
    Reconcile {
        table: TableRef,
        staged: i64,
        expected: u64,
        /// What was counted: [`COUNTED_STAGING`], [`COUNTED_TARGET`] or [`COUNTED_WRITTEN`].
        counted: &'static str,
    },
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl WarehouseError {
    /// The stable name the state machine's Retry and Catch lists match.
    pub fn code(&self) -> Code {
        match self {
            WarehouseError::Sql { retryable: true, .. } => Code::RetryableWarehouse,
            WarehouseError::Sql { retryable: false, .. } => Code::FatalWarehouse,
            WarehouseError::Connect { not_found: true, .. } => Code::FatalNotFound,
            WarehouseError::Connect { not_found: false, .. } => Code::FatalPermissionDenied,
            WarehouseError::Invalid(_) => Code::FatalInvalidInput,
            WarehouseError::Reconcile { .. } => Code::FatalReconcile,
            WarehouseError::Stage(e) => e.code(),
        }
    }

    /// The stable name of [`Self::code`].
    pub fn name(&self) -> &'static str {
        self.code().name()
    }
}

fn ident(s: &str) -> Result<String, WarehouseError> {
    sql::ident(s).map_err(WarehouseError::Invalid)
}

fn qualified(t: &TableRef) -> Result<String, WarehouseError> {
    sql::table(t).map_err(WarehouseError::Invalid)
}

fn text_literal(s: &str) -> Result<String, WarehouseError> {
    sql::text_literal(s).map_err(WarehouseError::Invalid)
}

/// SQL dialect of a warehouse: it owns what differs between warehouses (column types, table clauses, locks, the
/// longest text, what a load may ask of it), so the loader asks it and never branches on which warehouse it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Redshift,
    Postgres,
}

impl Dialect {
    /// The warehouse column type of a mapping; Redshift VARCHAR widths are bytes. `json_as_super`: json and jsonb
    /// load into SUPER where the warehouse has it.
    pub fn column_type(self, c: &ColumnSpec, varchar_bytes: u32, json_as_super: bool) -> String {
        match self {
            Dialect::Redshift if json_as_super && is_json(c) => "SUPER".into(),
            Dialect::Redshift => c.mapping.redshift_type(varchar_bytes),
            Dialect::Postgres => c.mapping.postgres_type(),
        }
    }

    /// Whether a table may have rules or triggers that change what an INSERT, UPDATE or DELETE writes. Redshift has
    /// neither (no CREATE RULE, no CREATE TRIGGER), so nothing there can change a load behind its counts.
    pub fn has_rules_and_triggers(self) -> bool {
        self == Dialect::Postgres
    }

    /// Whether [`Self::lock_target`] needs a privilege that writes the table: PostgreSQL's `LOCK … IN EXCLUSIVE MODE`
    /// needs UPDATE, DELETE or TRUNCATE; INSERT allows only ROW EXCLUSIVE
    /// (<https://www.postgresql.org/docs/current/sql-lock.html>). Redshift's LOCK page names no privilege
    /// (<https://docs.aws.amazon.com/redshift/latest/dg/r_LOCK.html>).
    pub fn lock_needs_write(self) -> bool {
        self == Dialect::Postgres
    }

    /// A condition that holds when the current user may act as the owner `relowner` (a `pg_class.relowner`), as
    /// ALTER TABLE requires: PostgreSQL through role membership (`pg_has_role(…, 'USAGE')`, superusers included);
    /// Redshift, which has no `pg_has_role`, by the user's own id or superuser flag in `pg_user` ("Only the owner has
    /// the permission to modify or destroy an object", <https://docs.aws.amazon.com/redshift/latest/dg/r_Privileges.html>;
    /// a user given the RBAC system permission ALTER TABLE may too,
    /// <https://docs.aws.amazon.com/redshift/latest/dg/r_roles-system-privileges.html>, which this does not see).
    pub fn owns(self, relowner: &str) -> String {
        match self {
            Dialect::Postgres => format!("pg_catalog.pg_has_role({relowner}, 'USAGE')"),
            Dialect::Redshift => format!(
                "EXISTS (SELECT 1 FROM pg_catalog.pg_user u WHERE u.usename = current_user AND (u.usesysid = \
                 {relowner} OR u.usesuper))"
            ),
        }
    }

    /// Whether json and jsonb may load into SUPER (through VARCHAR staging and `JSON_PARSE` in the swap).
    pub fn has_super(self) -> bool {
        self == Dialect::Redshift
    }

    /// The longest text value in bytes a column holds, when the warehouse has a limit (Redshift's VARCHAR(65535)).
    pub fn max_text_bytes(self) -> Option<u64> {
        (self == Dialect::Redshift).then_some(crate::contract::types::REDSHIFT_VARCHAR_MAX)
    }

    /// The longest binary value in bytes a column holds, when the warehouse has a limit (Redshift's VARBYTE).
    pub fn max_binary_bytes(self) -> Option<u64> {
        (self == Dialect::Redshift).then_some(crate::contract::types::REDSHIFT_VARBYTE_MAX)
    }

    /// The dialect whose value limits a load applies: the warehouse's own, or Redshift's on a warehouse that stands in
    /// for it (`--warehouse-dialect redshift` on a local PostgreSQL rehearsal).
    pub fn checked_as(self, rehearse: Option<crate::contract::load::WarehouseDialect>) -> Self {
        match rehearse {
            Some(crate::contract::load::WarehouseDialect::Redshift) => Dialect::Redshift,
            _ => self,
        }
    }

    /// Whether a load may cut text longer than the limit. Redshift's Parquet COPY and TRUNCATECOLUMNS are not
    /// verified together: refused rather than failing inside the COPY.
    pub fn truncates_long_text(self) -> bool {
        self == Dialect::Postgres
    }

    /// What follows the column list of a target's definition: its primary key where the warehouse enforces one.
    pub fn key_constraint(self, key: &str) -> String {
        match self {
            Dialect::Postgres if !key.is_empty() => format!(", PRIMARY KEY ({key})"),
            _ => String::new(),
        }
    }

    /// What follows a table's definition: distribution and sort keys where the warehouse has them (the user's
    /// design, else `DISTSTYLE AUTO` and the key as sort key); PostgreSQL has neither.
    pub fn table_clause(self, design: &TableDesign, key: &[String], columns: &[ColumnSpec]) -> Result<String, String> {
        match self {
            Dialect::Redshift => design.clause(key, columns),
            Dialect::Postgres => Ok(String::new()),
        }
    }

    /// A column's `ENCODE` clause where the user set one (Redshift only).
    pub fn encode_clause(self, design: &TableDesign, column: &str) -> String {
        match (self, design.encoding_of(column)) {
            (Dialect::Redshift, Some(e)) => format!(" ENCODE {}", e.to_uppercase()),
            _ => String::new(),
        }
    }

    /// The statement that makes concurrent set-up DDL take turns, where the warehouse needs and has one: PostgreSQL's
    /// concurrent `CREATE … IF NOT EXISTS` of one name fails with a duplicate key in `pg_type`.
    pub fn setup_lock(self) -> Option<String> {
        match self {
            Dialect::Postgres => Some(format!("SELECT pg_advisory_xact_lock({SETUP_LOCK})")),
            Dialect::Redshift => None,
        }
    }

    /// What the planner checks a run against: a Redshift transaction is one `BatchExecuteStatement`, of at most 40
    /// SQL statements (<https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_BatchExecuteStatement.html>),
    /// and Redshift folds identifiers to lower case.
    pub fn limits(self) -> crate::contract::load::WarehouseLimits {
        match self {
            Dialect::Redshift => crate::contract::load::WarehouseLimits::redshift(),
            Dialect::Postgres => crate::contract::load::WarehouseLimits::default(),
        }
    }

    /// A name as the warehouse stores it in its catalog. Redshift folds the ASCII letters of every identifier, quoted
    /// or not, to lower case ("ASCII letters in standard and delimited identifiers are case-insensitive and are
    /// folded to lowercase in the database", <https://docs.aws.amazon.com/redshift/latest/dg/r_names.html>; pgshift
    /// does not set `enable_case_sensitive_identifier`); PostgreSQL keeps a quoted name as it is.
    pub fn fold(self, name: &str) -> String {
        match self {
            Dialect::Redshift => name.to_ascii_lowercase(),
            Dialect::Postgres => name.to_string(),
        }
    }

    /// The current time in a statement that writes a table. Redshift's CURRENT_TIMESTAMP is a deprecated leader-node
    /// function that fails in a statement on a user table
    /// (<https://docs.aws.amazon.com/redshift/latest/dg/c_SQL_functions_leader_node_only.html>); GETDATE() runs on the
    /// compute nodes.
    pub fn now(self) -> &'static str {
        match self {
            Dialect::Postgres => "CURRENT_TIMESTAMP",
            Dialect::Redshift => "GETDATE()",
        }
    }

    /// The statement that locks a target inside its load transaction, so two loads of it serialize. PostgreSQL's
    /// EXCLUSIVE mode still lets readers read; Redshift's LOCK is ACCESS EXCLUSIVE
    /// (<https://docs.aws.amazon.com/redshift/latest/dg/r_LOCK.html>), so the loader takes it after the COPY.
    ///
    /// On Redshift the same statement first locks the tables every load transaction shares, the load log and the
    /// staging registry, always in this order: under Redshift's serializable isolation, two load transactions of
    /// different targets that both read and write them could otherwise be cancelled with "ERROR:1023 Serializable
    /// isolation violation", and the docs' remedy is to "force serialization by having each session lock all tables"
    /// (<https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation-serializable-isolation-troubleshooting.html>).
    /// The transaction touches nothing shared before it (its COPY and reconcile read and write only the run's own
    /// staging table), and a fixed order means no two of them wait on each other. PostgreSQL loads under READ
    /// COMMITTED, where row locks suffice.
    pub fn lock_target(self, target: &str) -> String {
        match self {
            Dialect::Postgres => format!("LOCK TABLE {target} IN EXCLUSIVE MODE"),
            Dialect::Redshift => format!("LOCK \"pgshift\".\"load_log\", \"pgshift\".\"staging\", {target}"),
        }
    }
}

/// The advisory lock key of warehouse set-up ("pgsh").
const SETUP_LOCK: i64 = 0x7067_7368;

/// json and jsonb columns (not arrays cast to JSON text: those load as text).
pub(crate) fn is_json(c: &ColumnSpec) -> bool {
    matches!(
        c.mapping,
        crate::contract::types::Mapping::Json | crate::contract::types::Mapping::Jsonb
    )
}

/// One staging table to fill.
pub struct CopyJob<'a> {
    pub staging: &'a TableRef,
    pub columns: &'a [ColumnSpec],
    pub manifest_url: &'a str,
    pub files: &'a [StagedFile],
    pub stage: &'a dyn Stage,
    pub truncate_long_text: bool,
}

impl CopyJob<'_> {
    /// The staging table and its column list, quoted, as a COPY names them.
    pub fn target(&self) -> Result<(String, String), WarehouseError> {
        let cols = self
            .columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Result<Vec<_>, _>>()?
            .join(", ");
        Ok((qualified(self.staging)?, cols))
    }
}

/// A warehouse: the loader's only effects on it. Four verbs (submit a transaction, ask its status, cancel it,
/// explain a failed load) and one read (a query's rows); what differs between warehouses is in its [`Dialect`].
pub trait Warehouse: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// Runs the batch's steps as one transaction, all or nothing. [`Until::Committed`] returns when it has committed
    /// (or failed, a failed COPY explained); with [`Until::Submitted`], a warehouse that can be polled returns at once
    /// with [`Submission::Pending`] and others run to the end.
    fn submit<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<Submission, WarehouseError>>;
    /// The state of a pending transaction.
    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<TxStatus, WarehouseError>> {
        Box::pin(async move {
            Err(WarehouseError::Invalid(format!(
                "statement {id}: this warehouse runs loads to the end and has nothing pending"
            )))
        })
    }
    /// Cancels a pending transaction.
    fn cancel<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), WarehouseError>> {
        let _ = id;
        Box::pin(async { Ok(()) })
    }
    /// Why a load query failed, file by file, when the warehouse keeps such a log.
    fn explain(&self, query_id: i64) -> BoxFuture<'_, String> {
        let _ = query_id;
        Box::pin(async { String::new() })
    }
    /// The rows of one read-only query, each cell an integer, a text or NULL.
    fn query(&self, sql: String) -> BoxFuture<'_, Result<Vec<Vec<Cell>>, WarehouseError>>;
    /// A run's first contact with the warehouse (the pre-flight's): a connection opened and closed, where a server
    /// that refuses it, an unknown host, a missing password or a failed authentication is an error no retry mends,
    /// named at once. A warehouse reached through an API has nothing to open: `Ok`.
    fn reach(&self) -> BoxFuture<'_, Result<(), WarehouseError>> {
        Box::pin(async { Ok(()) })
    }
    /// The warehouse's slice count and where it was read, where it has slices and says how many.
    fn slices(&self) -> BoxFuture<'_, Result<Option<(u32, String)>, WarehouseError>> {
        Box::pin(async { Ok(None) })
    }
    /// What bills the load (the ledger's `warehouse`): `postgres`, `redshift` (a provisioned cluster) or
    /// `redshift-serverless`.
    fn kind(&self) -> &'static str {
        match self.dialect() {
            Dialect::Postgres => "postgres",
            Dialect::Redshift => "redshift",
        }
    }
}

/// One transaction for [`Warehouse::submit`]: its steps, how long to wait, and who to tell as each step starts (a
/// warehouse that runs the steps itself calls it with the step's index; one that runs them remotely does not).
pub struct Batch<'a> {
    pub steps: Vec<Step<'a>>,
    pub until: Until,
    pub on_step: Option<&'a (dyn Fn(usize) + Send + Sync)>,
}

impl<'a> Batch<'a> {
    pub fn new(steps: Vec<Step<'a>>, until: Until) -> Self {
        Self {
            steps,
            until,
            on_step: None,
        }
    }
}

/// When and how long one step of a transaction ran (seconds since the Unix epoch, and seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub started_at: f64,
    pub seconds: f64,
}

/// How long [`Warehouse::submit`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until the transaction has committed or failed.
    Committed,
    /// Until the warehouse has taken it (a load the state machine then polls).
    Submitted,
}

/// One value of a query's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl Cell {
    fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// Runs SQL statements in order as one transaction, to its commit.
pub async fn execute(wh: &dyn Warehouse, statements: Vec<String>) -> Result<(), WarehouseError> {
    let steps = statements.into_iter().map(Step::Sql).collect();
    wh.submit(Batch::new(steps, Until::Committed)).await.map(|_| ())
}

/// The one integer a query returns (a count, a maximum; NULL reads as 0).
pub async fn count(wh: &dyn Warehouse, sql: String) -> Result<i64, WarehouseError> {
    let rows = wh.query(sql.clone()).await?;
    match rows.first().and_then(|r| r.first()) {
        Some(Cell::Int(n)) => Ok(*n),
        Some(Cell::Null) => Ok(0),
        other => Err(WarehouseError::Sql {
            detail: format!("{sql}: expected one integer, got {other:?}"),
            retryable: false,
        }),
    }
}

/// The columns of a table, in order; empty when there is no such table.
pub async fn columns(wh: &dyn Warehouse, table: &TableRef) -> Result<Vec<WarehouseColumn>, WarehouseError> {
    let rows = wh.query(columns_sql(table, wh.dialect())?).await?;
    Ok(rows
        .iter()
        // A row without a name is not a column (the result is not of this query).
        .filter_map(|r| {
            let at = |i: usize| r.get(i).unwrap_or(&Cell::Null);
            Some(WarehouseColumn {
                name: at(0).text()?.to_string(),
                data_type: at(1).text().unwrap_or_default().to_string(),
                char_length: at(2).int(),
                precision: at(3).int(),
                scale: at(4).int(),
            })
        })
        .collect())
}

/// What on `table` changes what an INSERT, UPDATE or DELETE writes: its rules on those events and its enabled user
/// triggers on them, each as `rule <name>` or `trigger <name>`; empty where the dialect has neither, or for no such
/// table.
pub async fn target_hooks(wh: &dyn Warehouse, table: &TableRef) -> Result<Vec<String>, WarehouseError> {
    if !wh.dialect().has_rules_and_triggers() {
        return Ok(Vec::new());
    }
    let rows = wh.query(target_hooks_sql(table)?).await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.first().and_then(Cell::text).map(str::to_string))
        .collect())
}

/// The query behind [`target_hooks`] (PostgreSQL's catalog): `pg_rewrite.ev_type` 2, 3, 4 are UPDATE, INSERT,
/// DELETE; `pg_trigger.tgtype` bits 4, 8, 16 are INSERT, DELETE, UPDATE; `tgenabled` 'D' is disabled.
fn target_hooks_sql(table: &TableRef) -> Result<String, WarehouseError> {
    let (schema, name) = (text_literal(&table.schema)?, text_literal(&table.name)?);
    let of = |rel: &str| {
        format!(
            "JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) {rel} JOIN pg_catalog.pg_namespace n ON n.oid \
         OPERATOR(pg_catalog.=) c.relnamespace WHERE n.nspname OPERATOR(pg_catalog.=) {schema} AND c.relname \
         OPERATOR(pg_catalog.=) {name}"
        )
    };
    Ok(format!(
        "SELECT ('rule ' OPERATOR(pg_catalog.||) r.rulename)::pg_catalog.text FROM pg_catalog.pg_rewrite r {} \
         AND r.ev_type OPERATOR(pg_catalog.=) ANY (ARRAY['2', '3', '4']::pg_catalog.\"char\"[]) \
         UNION ALL SELECT ('trigger ' OPERATOR(pg_catalog.||) t.tgname)::pg_catalog.text \
         FROM pg_catalog.pg_trigger t {} AND NOT t.tgisinternal AND t.tgenabled OPERATOR(pg_catalog.<>) 'D' \
         AND (t.tgtype::pg_catalog.int4 OPERATOR(pg_catalog.&) 28) OPERATOR(pg_catalog.<>) 0 ORDER BY 1",
        of("r.ev_class"),
        of("t.tgrelid"),
    ))
}

/// The query behind [`columns`]: `information_schema.columns` has the same shape in PostgreSQL and
/// Redshift (<https://docs.aws.amazon.com/redshift/latest/dg/c_SQLreference.html>; Redshift's `information_schema`
/// follows PostgreSQL's). Columns: name, data_type, character_maximum_length, numeric_precision, numeric_scale.
/// The catalog is read under the names the warehouse stores ([`Dialect::fold`]): a mixed-case target on Redshift is
/// found, not taken for a new one whose drift check never runs.
pub(crate) fn columns_sql(table: &TableRef, dialect: Dialect) -> Result<String, WarehouseError> {
    Ok(format!(
        "SELECT column_name::text, data_type::text, character_maximum_length::int8, numeric_precision::int8, \
         numeric_scale::int8 FROM information_schema.columns WHERE table_schema = {} AND table_name = {} \
         ORDER BY ordinal_position",
        text_literal(&dialect.fold(&table.schema))?,
        text_literal(&dialect.fold(&table.name))?
    ))
}

/// The kinds of warehouse a URL can name, by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Postgres,
    Redshift,
}

impl Kind {
    /// `postgres://…` (or `postgresql://`), `redshift://…` or `redshift-serverless://…`.
    pub(crate) fn of(url: &str) -> Result<Self, WarehouseError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Kind::Postgres)
        } else if url.starts_with("redshift://") || url.starts_with("redshift-serverless://") {
            Ok(Kind::Redshift)
        } else {
            Err(WarehouseError::Invalid(format!(
                "warehouse {url:?}: use postgres://… or redshift://<cluster>/<db>?db_user=…&iam_role=… or \
                 redshift-serverless://<workgroup>/<db>?iam_role=…"
            )))
        }
    }
}

/// The warehouse a URL names.
pub async fn warehouse(url: &str) -> Result<Arc<dyn Warehouse>, WarehouseError> {
    Ok(match Kind::of(url)? {
        Kind::Postgres => Arc::new(postgres::PgWarehouse::new(url)?),
        Kind::Redshift => Arc::new(redshift::RedshiftWarehouse::from_url(url).await?),
    })
}

/// What a reconcile counted: the staging table, the target after its swap, or the rows a swap's INSERT reported.
pub const COUNTED_STAGING: &str = "staging holds";
pub const COUNTED_TARGET: &str = "the target after its swap holds";
pub const COUNTED_WRITTEN: &str = "the swap's INSERT wrote";

/// One step of a load transaction.
pub enum Step<'a> {
    /// Fill a staging table from the parts of its manifest.
    Copy(CopyJob<'a>),
    /// The staging table must hold exactly `expected` rows, or the whole transaction fails.
    Reconcile {
        table: TableRef,
        staging: TableRef,
        expected: u64,
    },
    Sql(String),
    /// A statement that writes the target: where the warehouse reports the rows a statement wrote (PostgreSQL, after
    /// the target's rules and triggers), it must be `expected`, or the whole transaction fails. Redshift, which has
    /// neither rules nor triggers, runs it as it is.
    Written {
        table: TableRef,
        sql: String,
        expected: u64,
    },
}

/// The statement that fails a transaction unless `staging` holds `expected` rows (a division by zero otherwise): the
/// same text in Redshift and PostgreSQL, so a batch that cannot be watched still never swaps in a short load.
pub fn reconcile_sql(staging: &TableRef, expected: u64) -> Result<String, WarehouseError> {
    Ok(format!(
        "SELECT 1 / CASE WHEN count(*) = {expected} THEN 1 ELSE 0 END FROM {}",
        qualified(staging)?
    ))
}

/// How a warehouse took a load transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Submission {
    /// It ran to its end (committed); when and how long each step ran, where the warehouse says.
    Done(Vec<Timing>),
    /// It runs on; poll [`Warehouse::status`] with this id.
    Pending(String),
}

/// The state of a submitted transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum TxStatus {
    Running,
    /// Committed; when and how long each step ran, where the warehouse says.
    Finished(Vec<Timing>),
    /// Rolled back. `step` is the index of the failing step when the warehouse says which.
    Failed {
        step: Option<usize>,
        detail: String,
        query_id: Option<i64>,
    },
}

/// A column as `information_schema.columns` describes it (the same view in PostgreSQL and Redshift).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseColumn {
    pub name: String,
    pub data_type: String,
    pub char_length: Option<i64>,
    pub precision: Option<i64>,
    pub scale: Option<i64>,
}

impl WarehouseColumn {
    /// The type as SQL writes it: `character varying(64)`, `numeric(20,3)`.
    pub fn render(&self) -> String {
        match (self.char_length, self.precision, self.scale) {
            (Some(n), _, _) => format!("{}({n})", self.data_type),
            (None, Some(p), Some(s)) if self.data_type == "numeric" => format!("numeric({p},{s})"),
            _ => self.data_type.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_owns_its_clauses_locks_and_limits() {
        let (pg, rs) = (Dialect::Postgres, Dialect::Redshift);
        assert_eq!(pg.key_constraint("\"id\""), ", PRIMARY KEY (\"id\")");
        assert_eq!(rs.key_constraint("\"id\""), "");
        let (d, id) = (TableDesign::default(), ["id".to_string()]);
        assert_eq!(
            rs.table_clause(&d, &id, &[]).unwrap(),
            " DISTSTYLE AUTO SORTKEY (\"id\")"
        );
        assert_eq!(rs.table_clause(&d, &[], &[]).unwrap(), " DISTSTYLE AUTO");
        assert_eq!(pg.table_clause(&d, &id, &[]).unwrap(), "");
        assert!(pg.setup_lock().is_some_and(|s| s.contains("pg_advisory_xact_lock")));
        assert_eq!(rs.setup_lock(), None);
        assert_eq!(
            pg.lock_target("\"s\".\"t\""),
            "LOCK TABLE \"s\".\"t\" IN EXCLUSIVE MODE"
        );
        assert_eq!(
            rs.lock_target("\"s\".\"t\""),
            "LOCK \"pgshift\".\"load_log\", \"pgshift\".\"staging\", \"s\".\"t\""
        );
        assert_eq!((pg.max_text_bytes(), rs.max_text_bytes()), (None, Some(65_535)));
        assert_eq!((pg.max_binary_bytes(), rs.max_binary_bytes()), (None, Some(16_777_216)));
        assert!(rs.has_super() && !pg.has_super());
        assert!(pg.truncates_long_text() && !rs.truncates_long_text());
    }
}
