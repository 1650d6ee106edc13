//! One PostgreSQL warehouse whose load transactions a test can change: a real warehouse underneath, so a fault a test
//! injects is a real failure and rollback in PostgreSQL.

use futures_util::future::BoxFuture;
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::WarehouseError;
use pgshift::warehouse::{Batch, Cell, Dialect, Step, Submission, Until, Warehouse};

/// Rewrites the steps of a load transaction before it runs (to inject a failure, or a pause).
pub(crate) type Edit = Box<dyn for<'a> Fn(&mut Vec<Step<'a>>) + Send + Sync>;

pub(crate) struct Hooked {
    pub(crate) inner: PgWarehouse,
    pub(crate) edit: Edit,
    /// When set, that many load transactions are held until they can all start together.
    pub(crate) together: Option<tokio::sync::Barrier>,
}

impl Hooked {
    pub(crate) fn new(inner: PgWarehouse, edit: Edit) -> Self {
        Self {
            inner,
            edit,
            together: None,
        }
    }
}

/// Whether a step is an SQL statement that starts with `prefix` and contains `part`.
pub(crate) fn is_sql(step: &Step<'_>, prefix: &str, part: &str) -> bool {
    matches!(step, Step::Sql(q) if q.starts_with(prefix) && q.contains(part))
}

impl Warehouse for Hooked {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn reach(&self) -> BoxFuture<'_, Result<(), WarehouseError>> {
        self.inner.reach()
    }
    fn query(&self, sql: String) -> BoxFuture<'_, Result<Vec<Vec<Cell>>, WarehouseError>> {
        self.inner.query(sql)
    }
    /// Only load transactions (those the loader submits for polling) are edited and held; set-up runs as is.
    fn submit<'a>(&'a self, mut batch: Batch<'a>) -> BoxFuture<'a, Result<Submission, WarehouseError>> {
        if batch.until == Until::Committed {
            return self.inner.submit(batch);
        }
        (self.edit)(&mut batch.steps);
        Box::pin(async move {
            if let Some(b) = &self.together {
                // A test that holds transactions to start them together proves nothing if they never met: the
                // transaction fails instead, and so does the test.
                if tokio::time::timeout(std::time::Duration::from_secs(30), b.wait())
                    .await
                    .is_err()
                {
                    return Err(WarehouseError::Sql {
                        detail: "test barrier: the held load transactions never ran together".into(),
                        retryable: false,
                    });
                }
            }
            self.inner.submit(batch).await
        })
    }
}
