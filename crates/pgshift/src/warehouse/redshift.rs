//! Redshift through the Data API: provisioned clusters (cluster id with a database user or a secret) and Serverless
//! (workgroup). A transaction is one `BatchExecuteStatement` (its statements run as one transaction); waiting is
//! `DescribeStatement` polled with backoff on the async runtime until a deadline, then `CancelStatement`. A failed
//! COPY is explained from `STL_LOAD_ERRORS` on a provisioned cluster, else `SYS_LOAD_ERROR_DETAIL` (file, column,
//! error text).
//!
//! Warehouse URLs:
//! - `redshift://<cluster-id>/<database>?db_user=<user>&iam_role=<arn>` (or `secret_arn=<arn>` instead of `db_user`)
//! - `redshift-serverless://<workgroup>/<database>?iam_role=<arn>[&secret_arn=<arn>]`
//!
//! `iam_role` is the role Redshift assumes to read the stage in `COPY`.

use std::time::Duration;

use aws_sdk_redshiftdata::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString};
use aws_sdk_redshiftdata::Client;
use futures_util::future::BoxFuture;

use super::{
    reconcile_sql, Batch, Cell, CopyJob, Dialect, Step, Submission, Timing, TxStatus, Until, Warehouse, WarehouseError,
};

/// Statements per `BatchExecuteStatement`: the Data API's limit ([`Dialect::max_batch_statements`]).
const MAX_BATCH: usize = crate::contract::load::REDSHIFT_BATCH_STATEMENTS as usize;

/// Where the statements go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedshiftTarget {
    pub cluster_identifier: Option<String>,
    pub workgroup_name: Option<String>,
    pub database: String,
    pub db_user: Option<String>,
    pub secret_arn: Option<String>,
    /// The IAM role `COPY` assumes to read the stage.
    pub iam_role: String,
}

impl RedshiftTarget {
    /// Parses a `redshift://` or `redshift-serverless://` warehouse URL.
    pub fn parse(url: &str) -> Result<Self, WarehouseError> {
        let bad = |m: &str| WarehouseError::Invalid(format!("warehouse URL {url:?}: {m}"));
        let (serverless, rest) = if let Some(r) = url.strip_prefix("redshift-serverless://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("redshift://") {
            (false, r)
        } else {
            return Err(bad("expected redshift:// or redshift-serverless://"));
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, database) = path
            .split_once('/')
            .ok_or_else(|| bad("expected <cluster or workgroup>/<database>"))?;
        if host.is_empty() || database.is_empty() {
            return Err(bad("expected <cluster or workgroup>/<database>"));
        }
        let mut t = RedshiftTarget {
            cluster_identifier: (!serverless).then(|| host.to_string()),
            workgroup_name: serverless.then(|| host.to_string()),
            database: crate::contract::url::percent_decode(database),
            db_user: None,
            secret_arn: None,
            iam_role: String::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad("query parameters are key=value"))?;
            match k {
                "db_user" => t.db_user = Some(crate::contract::url::percent_decode(v)),
                "secret_arn" => t.secret_arn = Some(crate::contract::url::percent_decode(v)),
                "iam_role" => t.iam_role = crate::contract::url::percent_decode(v),
                other => return Err(bad(&format!("unknown parameter {other:?}"))),
            }
        }
        if t.iam_role.is_empty() {
            return Err(bad("iam_role (the role COPY assumes to read the stage) is required"));
        }
        if !serverless && t.db_user.is_none() && t.secret_arn.is_none() {
            return Err(bad("a provisioned cluster needs db_user or secret_arn"));
        }
        if serverless && t.db_user.is_some() {
            // The Data API derives a Serverless user from the caller's IAM identity, or takes a secret; DbUser is for
            // provisioned clusters only
            // (https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_ExecuteStatement.html).
            return Err(bad(
                "db_user is for provisioned clusters: a Serverless workgroup takes the loader's IAM identity or \
                 secret_arn=<ARN>; remove db_user",
            ));
        }
        Ok(t)
    }
}

/// How long to wait for a statement.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub first: Duration,
    pub max: Duration,
    pub deadline: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(250),
            max: Duration::from_secs(5),
            // Below the loader's 900 s timeout with room for its other work: the load transactions themselves are
            // never waited on here (the state machine's Wait states do), only set-up statements and counts.
            deadline: Duration::from_secs(300),
        }
    }
}

pub struct RedshiftWarehouse {
    client: Client,
    target: RedshiftTarget,
    polling: Polling,
}

fn sdk<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    what: &str,
    e: SdkError<E, R>,
) -> WarehouseError {
    let retryable = crate::awsclient::transient(
        &e,
        &[
            "ThrottlingException",
            "InternalServerException",
            "ActiveStatementsExceededException",
            // Too many sessions at once: another run's, or ours a moment ago. The Data API's errors:
            // https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_ExecuteStatement.html#API_ExecuteStatement_Errors
            "ActiveSessionsExceededException",
        ],
    );
    WarehouseError::Sql {
        detail: format!("{what}: {}", crate::awsclient::describe(&e)),
        retryable,
    }
}

impl RedshiftWarehouse {
    pub fn new(client: Client, target: RedshiftTarget, polling: Polling) -> Self {
        Self {
            client,
            target,
            polling,
        }
    }

    /// A warehouse for a `redshift://` or `redshift-serverless://` URL, with a Data API client from the standard AWS
    /// environment (region, credentials).
    pub async fn from_url(url: &str) -> Result<Self, WarehouseError> {
        let target = RedshiftTarget::parse(url)?;
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Self::new(Client::new(&conf), target, Polling::default()))
    }

    /// Submits statements (one: ExecuteStatement; several: BatchExecuteStatement, one transaction); returns the id.
    async fn send(&self, statements: &[String]) -> Result<String, WarehouseError> {
        let t = &self.target;
        // The same target on either request type (their builders are distinct SDK types).
        macro_rules! to_target {
            ($builder:expr) => {
                $builder
                    .database(&t.database)
                    .set_cluster_identifier(t.cluster_identifier.clone())
                    .set_workgroup_name(t.workgroup_name.clone())
                    .set_db_user(t.db_user.clone())
                    .set_secret_arn(t.secret_arn.clone())
                    .with_event(false)
            };
        }
        let id = if let [one] = statements {
            to_target!(self.client.execute_statement().sql(one))
                .send()
                .await
                .map_err(|e| sdk("ExecuteStatement", e))?
                .id()
                .map(str::to_string)
        } else {
            to_target!(self
                .client
                .batch_execute_statement()
                .set_sqls(Some(statements.to_vec())))
            .send()
            .await
            .map_err(|e| sdk("BatchExecuteStatement", e))?
            .id()
            .map(str::to_string)
        };
        id.ok_or_else(|| WarehouseError::Sql {
            detail: "the Data API returned no statement id".into(),
            retryable: true,
        })
    }

    /// Polls until the statement ends. A failure returns the Data API's error text and the Redshift query id.
    async fn wait(&self, id: &str) -> Result<Vec<Timing>, (WarehouseError, Option<i64>)> {
        let started = tokio::time::Instant::now();
        let mut delay = self.polling.first;
        loop {
            match self.status(id).await.map_err(|e| (e, None))? {
                TxStatus::Finished(timings) => return Ok(timings),
                TxStatus::Failed { detail, query_id, .. } => {
                    return Err((
                        WarehouseError::Sql {
                            detail,
                            retryable: false,
                        },
                        query_id,
                    ))
                }
                TxStatus::Running => {}
            }
            if started.elapsed() >= self.polling.deadline {
                let cancelled = self.client.cancel_statement().id(id).send().await.is_ok();
                return Err((
                    WarehouseError::Sql {
                        detail: format!(
                            "statement {id} still running after {:?}; cancel {}",
                            self.polling.deadline,
                            if cancelled { "requested" } else { "failed" }
                        ),
                        retryable: true,
                    },
                    None,
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.polling.max);
        }
    }

    /// Waits for a submitted statement to commit; a failed load is explained from its load errors.
    async fn committed(&self, id: &str) -> Result<Vec<Timing>, WarehouseError> {
        match self.wait(id).await {
            Ok(timings) => Ok(timings),
            Err((WarehouseError::Sql { detail, retryable }, Some(query_id))) => {
                let why = self.describe_load_errors(query_id).await;
                Err(WarehouseError::Sql {
                    detail: format!("{detail}; load errors: {why}"),
                    retryable,
                })
            }
            Err((e, _)) => Err(e),
        }
    }

    async fn rows(&self, query: &str) -> Result<Vec<Vec<Field>>, WarehouseError> {
        let id = self.send(&[query.to_string()]).await?;
        self.wait(&id).await.map_err(|(e, _)| e)?;
        let out = self
            .client
            .get_statement_result()
            .id(&id)
            .send()
            .await
            .map_err(|e| sdk("GetStatementResult", e))?;
        Ok(out.records().to_vec())
    }

    /// File, column and error text of a failed load. The Data API's `RedshiftQueryId` is the id "also available
    /// in the query column of the STL_QUERY system view"
    /// (<https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_DescribeStatement.html>), and STL's
    /// `query` is not the SYS views' `query_id` (<https://docs.aws.amazon.com/redshift/latest/dg/r_STL_QUERY.html>,
    /// "Important"). So a provisioned cluster's errors are read from `STL_LOAD_ERRORS` by `query` first, and from
    /// `SYS_LOAD_ERROR_DETAIL` by `query_id` when STL has none; Serverless has no STL views
    /// (<https://docs.aws.amazon.com/redshift/latest/dg/r_STL_LOAD_ERRORS.html>, "Note"): `SYS_LOAD_ERROR_DETAIL` only.
    async fn describe_load_errors(&self, query_id: i64) -> String {
        let mut said = Vec::new();
        if self.target.workgroup_name.is_none() {
            match self.load_errors(&stl_load_errors_sql(query_id)).await {
                Ok(Some(rows)) => return rows,
                Ok(None) => said.push("no rows in STL_LOAD_ERRORS".to_string()),
                Err(e) => said.push(format!("STL_LOAD_ERRORS unavailable: {e}")),
            }
        }
        match self.load_errors(&sys_load_errors_sql(query_id)).await {
            Ok(Some(rows)) => return rows,
            Ok(None) => said.push("no rows in SYS_LOAD_ERROR_DETAIL".into()),
            Err(e) => said.push(format!("SYS_LOAD_ERROR_DETAIL unavailable: {e}")),
        }
        said.join("; ")
    }

    /// `file column name: error` of each row of a load-errors query; `None` when it has no rows.
    async fn load_errors(&self, q: &str) -> Result<Option<String>, WarehouseError> {
        let rows = self.rows(q).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let lines: Vec<String> = rows
            .iter()
            .map(|r| {
                let f = |i: usize| match r.get(i) {
                    Some(Field::StringValue(s)) => s.trim().to_string(),
                    _ => String::new(),
                };
                format!("{} column {}: {}", f(0), f(1), f(2))
            })
            .collect();
        Ok(Some(lines.join("; ")))
    }
}

/// A failed COPY's rows in `STL_LOAD_ERRORS`, by the statement's query id (provisioned clusters).
pub fn stl_load_errors_sql(query_id: i64) -> String {
    format!(
        "SELECT filename, colname, err_reason FROM stl_load_errors WHERE query = {query_id} ORDER BY starttime \
         LIMIT 10"
    )
}

/// A failed COPY's rows in `SYS_LOAD_ERROR_DETAIL`, by the statement's query id.
pub fn sys_load_errors_sql(query_id: i64) -> String {
    format!(
        "SELECT file_name, column_name, error_message FROM sys_load_error_detail WHERE query_id = {query_id} \
         ORDER BY start_time LIMIT 10"
    )
}

/// When and how long each statement of a finished statement or batch ran: `DescribeStatement` gives each
/// sub-statement's `CreatedAt` and its `Duration` in nanoseconds
/// (<https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_SubStatementData.html>).
fn timings(d: &aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput) -> Vec<Timing> {
    let one = |created: Option<&aws_sdk_redshiftdata::primitives::DateTime>, nanos: i64| Timing {
        started_at: created.map(|t| t.as_secs_f64()).unwrap_or(0.0),
        seconds: nanos.max(0) as f64 / 1e9,
    };
    if d.sub_statements().is_empty() {
        return vec![one(d.created_at(), d.duration())];
    }
    d.sub_statements()
        .iter()
        .map(|s| one(s.created_at(), s.duration()))
        .collect()
}

/// A Data API field as a cell: integers stay integers, every other value is its text.
fn cell(f: &Field) -> Cell {
    match f {
        Field::LongValue(n) => Cell::Int(*n),
        Field::StringValue(s) => Cell::Text(s.clone()),
        Field::IsNull(true) => Cell::Null,
        Field::BooleanValue(b) => Cell::Text(b.to_string()),
        Field::DoubleValue(d) => Cell::Text(d.to_string()),
        Field::BlobValue(b) => Cell::Text(String::from_utf8_lossy(b.as_ref()).into_owned()),
        _ => Cell::Null,
    }
}

/// The COPY of a staging table from its manifest.
pub fn copy_sql(job: &CopyJob<'_>, iam_role: &str) -> Result<String, WarehouseError> {
    let (staging, cols) = job.target()?;
    let lit = |s: &str| -> Result<String, WarehouseError> {
        if s.contains(['\'', '\\', '\0']) {
            return Err(WarehouseError::Invalid(format!(
                "{s:?}: quotes and backslashes are not allowed here"
            )));
        }
        Ok(format!("'{s}'"))
    };
    // No REGION and no MAXERROR: Parquet COPY rejects both. No SERIALIZETOJSON: JSON arrives as text into VARCHAR
    // staging columns and the swap parses it (SERIALIZETOJSON would keep a string column a SUPER string).
    // STATUPDATE OFF: a COPY into an empty table analyzes it by default, and the staging table is read once by the
    // swap and dropped, so its statistics are work thrown away ("If you specify STATUPDATE OFF, no ANALYZE is
    // performed": https://docs.aws.amazon.com/redshift/latest/dg/t_Analyzing_tables.html). STATUPDATE is one of the
    // few parameters a Parquet COPY takes; COMPUPDATE is not, and a columnar COPY applies no compression encodings
    // anyway (https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html).
    Ok(format!(
        "COPY {staging} ({cols}) FROM {} IAM_ROLE {} FORMAT AS PARQUET MANIFEST STATUPDATE OFF",
        lit(job.manifest_url)?,
        lit(iam_role)?
    ))
}

impl Warehouse for RedshiftWarehouse {
    fn dialect(&self) -> Dialect {
        Dialect::Redshift
    }

    fn kind(&self) -> &'static str {
        match self.target.workgroup_name {
            Some(_) => "redshift-serverless",
            None => "redshift",
        }
    }

    /// A provisioned cluster's slices from `STV_SLICES` (<https://docs.aws.amazon.com/redshift/latest/dg/r_STV_SLICES.html>).
    /// Serverless has no STV tables and no fixed slices (its capacity is RPUs:
    /// <https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-monitoring.html>): none, and the plan says so. A
    /// Parquet file is split across slices by COPY itself, so the count tunes the parts rather than gates them
    /// (<https://docs.aws.amazon.com/redshift/latest/dg/c_best-practices-use-multiple-files.html>).
    fn slices(&self) -> BoxFuture<'_, Result<Option<(u32, String)>, WarehouseError>> {
        Box::pin(async move {
            if self.target.workgroup_name.is_some() {
                return Ok(None);
            }
            let n = super::count(self, "SELECT pg_catalog.count(*) FROM pg_catalog.stv_slices".into()).await?;
            Ok((n > 0).then(|| (n as u32, "stv_slices".to_string())))
        })
    }

    fn query(&self, sql: String) -> BoxFuture<'_, Result<Vec<Vec<Cell>>, WarehouseError>> {
        Box::pin(async move {
            let rows = self.rows(&sql).await?;
            Ok(rows.iter().map(|r| r.iter().map(cell).collect()).collect())
        })
    }

    /// The statements run remotely: `on_step` is never called; the timings come from `DescribeStatement`.
    fn submit<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<Submission, WarehouseError>> {
        Box::pin(async move {
            let mut sqls = Vec::with_capacity(batch.steps.len());
            for s in &batch.steps {
                sqls.push(match s {
                    Step::Copy(job) => copy_sql(job, &self.target.iam_role)?,
                    Step::Reconcile { staging, expected, .. } => reconcile_sql(staging, *expected)?,
                    Step::Sql(sql) | Step::Written { sql, .. } => sql.clone(),
                });
            }
            if sqls.len() > MAX_BATCH {
                return Err(WarehouseError::Invalid(format!(
                    "one load transaction needs {} statements, more than the Data API's {MAX_BATCH} per batch: load \
                     with atomic: table, or fewer tables per run",
                    sqls.len()
                )));
            }
            let id = self.send(&sqls).await?;
            match batch.until {
                Until::Submitted => Ok(Submission::Pending(id)),
                Until::Committed => self.committed(&id).await.map(Submission::Done),
            }
        })
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<TxStatus, WarehouseError>> {
        Box::pin(async move {
            let d = self
                .client
                .describe_statement()
                .id(id)
                .send()
                .await
                .map_err(|e| sdk("DescribeStatement", e))?;
            Ok(match d.status() {
                Some(StatusString::Finished) => TxStatus::Finished(timings(&d)),
                Some(StatusString::Failed) | Some(StatusString::Aborted) => {
                    // The statement that failed, not the first one the failure aborted after it; ABORTED only when
                    // nothing FAILED (the batch was cancelled).
                    let subs = d.sub_statements();
                    let is = |want: StatementStatusString| subs.iter().position(|s| s.status() == Some(&want));
                    let failed = is(StatementStatusString::Failed).or_else(|| is(StatementStatusString::Aborted));
                    let sub = failed.and_then(|i| d.sub_statements().get(i));
                    let detail = sub
                        .and_then(|s| s.error())
                        .or(d.error())
                        .unwrap_or("no error text")
                        .to_string();
                    // A guard of the load's (it divides by zero to abort): what it means, then Redshift's words.
                    let detail = match sub.and_then(|s| s.query_string()).and_then(super::guard_named) {
                        Some(why) => format!("{why} ({detail})"),
                        None => detail,
                    };
                    let query_id = sub
                        .map(|s| s.redshift_query_id())
                        .or(Some(d.redshift_query_id()))
                        .filter(|q| *q > 0);
                    // A single statement (no batch) fails as step 0.
                    let step = failed.or_else(|| d.sub_statements().is_empty().then_some(0));
                    TxStatus::Failed {
                        step,
                        detail: format!("statement {id}: {detail}"),
                        query_id,
                    }
                }
                _ => TxStatus::Running,
            })
        })
    }

    fn cancel<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), WarehouseError>> {
        Box::pin(async move {
            self.client
                .cancel_statement()
                .id(id)
                .send()
                .await
                .map_err(|e| sdk("CancelStatement", e))?;
            Ok(())
        })
    }

    fn explain(&self, query_id: i64) -> BoxFuture<'_, String> {
        Box::pin(async move { self.describe_load_errors(query_id).await })
    }
}
