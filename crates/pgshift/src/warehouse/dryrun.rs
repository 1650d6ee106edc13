//! A warehouse that runs nothing: every transaction the loader submits is rendered as the configured warehouse would
//! receive it (Redshift: the COPY from the manifest, the reconcile guard, the swap; PostgreSQL: the same, its COPY
//! shown as the client-side stream it is) and recorded, and every read answers "absent" (one row holding 0: a count of
//! nothing, a list naming nothing), except the columns of the targets a dry run is told to assume. Redshift's limit
//! on statements a transaction holds (the Data API's batch) is enforced, as the real adapter enforces it. What `pgshift load --dry-run` prints, and what the dialect tests parse.

use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{
    columns_sql, reconcile_sql, Batch, Cell, Dialect, Step, Submission, Timing, Warehouse, WarehouseColumn,
    WarehouseError,
};
use crate::contract::model::TableRef;

/// One transaction as submitted: its statements, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub statements: Vec<String>,
}

pub struct DryRunWarehouse {
    dialect: Dialect,
    kind: &'static str,
    /// The COPY's IAM role (Redshift).
    iam_role: String,
    /// The catalog query of each table it knows (assumed, or created by a recorded statement), and its rows.
    assumed: Mutex<Vec<(String, Vec<Vec<Cell>>)>>,
    recorded: Mutex<Vec<Transaction>>,
    /// Every read the loader asked, in order (the catalog queries a real load would send).
    reads: Mutex<Vec<String>>,
}

impl DryRunWarehouse {
    /// A dry run of the warehouse a URL names (nothing is contacted; a Redshift URL's IAM role is what the COPY
    /// names), with `assumed` targets' columns as they would be read.
    pub fn of(url: &str, assumed: &[(TableRef, Vec<WarehouseColumn>)]) -> Result<Self, WarehouseError> {
        let (dialect, kind, iam_role) = match super::Kind::of(url)? {
            super::Kind::Postgres => (Dialect::Postgres, "postgres", String::new()),
            super::Kind::Redshift => {
                let t = super::redshift::RedshiftTarget::parse(url)?;
                let kind = if t.workgroup_name.is_some() {
                    "redshift-serverless"
                } else {
                    "redshift"
                };
                (Dialect::Redshift, kind, t.iam_role)
            }
        };
        let mut answers = Vec::new();
        for (table, cols) in assumed {
            let rows = cols
                .iter()
                .map(|c| {
                    let int = |v: Option<i64>| v.map_or(Cell::Null, Cell::Int);
                    // What information_schema gives a type's precision when the file leaves it out.
                    let (p, sc) = match c.data_type.as_str() {
                        "smallint" => (Some(16), Some(0)),
                        "integer" => (Some(32), Some(0)),
                        "bigint" => (Some(64), Some(0)),
                        "real" => (Some(24), None),
                        "double precision" => (Some(53), None),
                        _ => (None, None),
                    };
                    vec![
                        // As the warehouse's catalog lists it: Redshift folds names to lower case.
                        Cell::Text(dialect.fold(&c.name)),
                        Cell::Text(c.data_type.clone()),
                        int(c.char_length),
                        int(c.precision.or(p)),
                        int(c.scale.or(sc)),
                    ]
                })
                .collect();
            answers.push((columns_sql(table, dialect)?, rows));
        }
        Ok(Self {
            dialect,
            kind,
            iam_role,
            assumed: Mutex::new(answers),
            recorded: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
        })
    }

    /// Every read asked so far, in order.
    pub fn reads(&self) -> Vec<String> {
        self.reads.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Every transaction submitted so far, in order.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn render(&self, step: &Step<'_>) -> Result<String, WarehouseError> {
        Ok(match step {
            Step::Copy(job) if self.dialect == Dialect::Redshift => super::redshift::copy_sql(job, &self.iam_role)?,
            Step::Copy(job) => {
                let (staging, cols) = job.target()?;
                format!(
                    "COPY {staging} ({cols}) FROM STDIN (FORMAT binary) -- the {} parts of {}, decoded and streamed by \
                     the loader",
                    job.files.len(),
                    job.manifest_url
                )
            }
            Step::Reconcile { staging, expected, .. } => reconcile_sql(staging, *expected)?,
            Step::Sql(sql) | Step::Written { sql, .. } => sql.clone(),
        })
    }
}

impl DryRunWarehouse {
    /// A `CREATE TABLE` the dry run "ran": the table's columns, as `information_schema.columns` would show them, answer
    /// its catalog reads from then on (`IF NOT EXISTS` leaves a known table as it is).
    fn learn(&self, statement: &str) {
        let Some((table, if_not_exists, cols)) = created(statement) else {
            return;
        };
        let Ok(query) = columns_sql(&table, self.dialect) else {
            return;
        };
        let rows: Vec<Vec<Cell>> = cols
            .iter()
            .map(|c| {
                let mut row = catalog_row(c);
                if let Some(Cell::Text(name)) = row.first_mut() {
                    *name = self.dialect.fold(name);
                }
                row
            })
            .collect();
        if let Ok(mut a) = self.assumed.lock() {
            match a.iter().position(|(q, _)| *q == query) {
                Some(_) if if_not_exists => {}
                Some(i) => a[i].1 = rows,
                None => a.push((query, rows)),
            }
        }
    }
}

/// The table, `IF NOT EXISTS`, and the column definitions (`"name" TYPE …`) of a `CREATE TABLE` the loader wrote.
fn created(statement: &str) -> Option<(TableRef, bool, Vec<String>)> {
    let rest = statement.strip_prefix("CREATE TABLE ")?;
    let (if_not_exists, rest) = match rest.strip_prefix("IF NOT EXISTS ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (schema, rest) = quoted(rest)?;
    let (name, rest) = quoted(rest.strip_prefix('.')?)?;
    let body = rest.trim_start().strip_prefix('(')?;
    let (mut depth, mut cols, mut cur) = (0i32, Vec::new(), String::new());
    for ch in body.chars() {
        match ch {
            '(' => depth += 1,
            ')' if depth == 0 => break,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                cols.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    cols.push(cur);
    let cols = cols
        .into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with('"'))
        .collect();
    Some((TableRef::new(&schema, &name), if_not_exists, cols))
}

/// A double-quoted identifier at the start of `s` (`""` is a quote), and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if chars.peek().is_some_and(|(_, n)| *n == '"') {
                chars.next();
                out.push('"');
                continue;
            }
            return Some((out, &body[i + 1..]));
        }
        out.push(c);
    }
    None
}

/// A column definition as `information_schema.columns` shows it: name, data_type, length, precision, scale.
fn catalog_row(def: &str) -> Vec<Cell> {
    let Some((name, rest)) = quoted(def) else {
        return Vec::new();
    };
    // The type alone: a column's ENCODE clause and NOT NULL are not part of it.
    let ty = rest.trim().trim_end_matches("NOT NULL").trim().to_uppercase();
    let ty = match ty.split_once(" ENCODE ") {
        Some((t, _)) => t.trim().to_string(),
        None => ty,
    };
    let (base, args) = match ty.split_once('(') {
        Some((b, a)) => (b.trim().to_string(), a.trim_end_matches(')').to_string()),
        None => (ty.clone(), String::new()),
    };
    let nums: Vec<i64> = args.split(',').filter_map(|n| n.trim().parse().ok()).collect();
    let int = |v: Option<i64>| v.map_or(Cell::Null, Cell::Int);
    let (data_type, len, precision, scale) = match base.as_str() {
        "VARCHAR" => ("character varying", nums.first().copied(), None, None),
        "CHAR" => ("character", nums.first().copied(), None, None),
        "VARBYTE" => ("binary varying", nums.first().copied(), None, None),
        "DECIMAL" | "NUMERIC" => ("numeric", None, nums.first().copied(), nums.get(1).copied()),
        "SMALLINT" => ("smallint", None, Some(16), Some(0)),
        "INTEGER" => ("integer", None, Some(32), Some(0)),
        "BIGINT" => ("bigint", None, Some(64), Some(0)),
        "REAL" => ("real", None, Some(24), None),
        "DOUBLE PRECISION" => ("double precision", None, Some(53), None),
        "BOOLEAN" => ("boolean", None, None, None),
        "DATE" => ("date", None, None, None),
        "TIMESTAMP" => ("timestamp without time zone", None, None, None),
        "TIMESTAMPTZ" => ("timestamp with time zone", None, None, None),
        "SUPER" => ("super", None, None, None),
        "TEXT" => ("text", None, None, None),
        "BYTEA" => ("bytea", None, None, None),
        _ => ("unknown", None, None, None),
    };
    vec![
        Cell::Text(name),
        Cell::Text(data_type.into()),
        int(len),
        int(precision),
        int(scale),
    ]
}

impl Warehouse for DryRunWarehouse {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn query(&self, sql: String) -> BoxFuture<'_, Result<Vec<Vec<Cell>>, WarehouseError>> {
        Box::pin(async move {
            if let Ok(mut r) = self.reads.lock() {
                r.push(sql.clone());
            }
            let known = self.assumed.lock().map(|a| a.clone()).unwrap_or_default();
            Ok(known
                .iter()
                .find(|(q, _)| *q == sql)
                .map(|(_, rows)| rows.clone())
                // Absent: a count is 0, a list has no row that names anything.
                .unwrap_or_else(|| vec![vec![Cell::Int(0)]]))
        })
    }

    fn submit<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<Submission, WarehouseError>> {
        Box::pin(async move {
            let statements = batch
                .steps
                .iter()
                .map(|s| self.render(s))
                .collect::<Result<Vec<_>, _>>()?;
            for st in &statements {
                self.learn(st);
            }
            let n = statements.len();
            let limit = crate::contract::load::REDSHIFT_BATCH_STATEMENTS as usize;
            if self.dialect == Dialect::Redshift && n > limit {
                return Err(WarehouseError::Invalid(format!(
                    "one load transaction needs {n} statements, more than the Data API's {limit} per batch: load \
                     with atomic: table, or fewer tables per run"
                )));
            }
            if let Ok(mut r) = self.recorded.lock() {
                r.push(Transaction { statements });
            }
            let now = crate::contract::clock::unix_now();
            Ok(Submission::Done(vec![
                Timing {
                    started_at: now,
                    seconds: 0.0
                };
                n
            ]))
        })
    }
}
