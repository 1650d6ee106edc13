//! A `diff` table's ranges digested on the source (docs/incremental.md, step 1): per range a count, an
//! order-independent digest and the snapshot it was read in; on a plain table read run after run on the same server,
//! also the tuple ids of the rows written since the last run's digest, which the changed ranges' extractors read
//! first instead of scanning their ranges again ([`RecentRows`]).

use bytes::Bytes;
use tokio_postgres::Client;

use super::PlanError;
use crate::contract::incremental::{self, DigestHow, RangeDigest, ReadMark, RecentRows, SyncState};
use crate::contract::model::{Bounds, ExtractTask};
use crate::contract::plan::TablePlan;
use crate::source::SourceError;
use crate::stage::Stage;

/// Sessions the range digests of a table are read on at once.
const DIGEST_SESSIONS: usize = 4;

/// The longest window of ids a digest lists the rows of: `age()` is a 32-bit signed distance (as the extractor's
/// windowed pass, [`crate::source::sieve`]).
const LIST_WINDOW: u64 = 1 << 30;

/// The bytes of tuple ids one digest session gathers for a table (four sessions: 64 MiB, against the planner's 512
/// MB): past it, its next ranges list nothing and their extractors find their rows themselves.
const LIST_BUDGET: usize = 16 << 20;

/// What the planner knows of a plain table's last digests: its OID (none: a table whose digest is not of row
/// versions, nothing is marked or listed) and each of the state's ranges' [`ReadMark`].
#[derive(Default)]
pub(super) struct Marks {
    oid: Option<u32>,
    state: Vec<Option<ReadMark>>,
}

impl Marks {
    /// For a plain table of PostgreSQL 14 or later (whose digest is of row versions): its OID, and the marks of
    /// the state's ranges.
    pub(super) async fn of(
        client: &Client,
        t: &TablePlan,
        state: Option<&SyncState>,
        server_version_num: i32,
    ) -> Result<Marks, PlanError> {
        if t.kind != "table" || server_version_num < 140_000 {
            return Ok(Marks::default());
        }
        let name = crate::contract::sql::table(&t.table).map_err(PlanError::InvalidRequest)?;
        let oid: u32 = client
            .query_one(
                "SELECT $1::pg_catalog.text::pg_catalog.regclass::pg_catalog.oid",
                &[&name],
            )
            .await
            .map_err(|e| PlanError::from(SourceError::from_pg(&t.table, 0, e)))?
            .get(0);
        Ok(Marks {
            oid: Some(oid),
            state: state.map_or_else(Vec::new, |s| s.ranges.iter().map(|r| r.read).collect()),
        })
    }
}

/// Where a digest session reads: its server's lineage (0: unknown), the next id, and whether the server is a
/// standby, whose digests list nothing ([`crate::source::Snapshot::standby`]).
struct Here {
    lineage: u64,
    xmax: u64,
    standby: bool,
}

impl Here {
    /// The id range `i`'s recent rows are listed from: the state's mark of it, made on this server, close enough,
    /// while the session's lists (`listed` bytes so far) are within [`LIST_BUDGET`].
    fn since(&self, marks: &Marks, i: usize, listed: usize) -> Option<u32> {
        let m = marks.state.get(i).copied().flatten()?;
        let usable = !self.standby && self.lineage != 0 && m.lineage == self.lineage && listed < LIST_BUDGET;
        (usable && self.xmax.saturating_sub(m.xmin) < LIST_WINDOW).then_some(m.xmin as u32)
    }
}

/// A range's recent rows as its digest listed them: the range's rows, the snapshot, the tuple ids (`tidsend`'s), and
/// the lineage of the server they were read on.
pub(super) struct Listed {
    rows: u64,
    snapshot: String,
    tids: Vec<u8>,
    lineage: u64,
}

/// How a table's ranges are digested.
struct Digest<'a> {
    t: &'a TablePlan,
    key: &'a [String],
    how: DigestHow,
    sum: Option<&'a str>,
    marks: &'a Marks,
}

/// Each range's count and digest, read with the extraction's own predicate, on up to [`DIGEST_SESSIONS`] sessions at
/// once (each with pgshift's pinned settings), in range order; with each, its recent rows where `marks` allow.
pub(super) async fn digest_ranges(
    source: &dyn crate::source::SourceConnector,
    t: &TablePlan,
    (bounds, marks): (&[Bounds], &Marks),
    server_version_num: i32,
) -> Result<(Vec<RangeDigest>, Vec<Option<Listed>>), PlanError> {
    // hash_record_extended is PostgreSQL 14's; row versions are a table's (a view's rows have none).
    let how = match (server_version_num >= 140_000, t.kind.as_str()) {
        (true, "table" | "partitioned table" | "materialized view") => DigestHow::Versions,
        (true, _) => DigestHow::Hash,
        (false, _) => DigestHow::Text,
    };
    let key: &[String] = if bounds.iter().all(|b| *b == Bounds::ALL) {
        &[]
    } else {
        &t.key
    };
    let sum = incremental::key_sum_column(&t.key, &t.columns).filter(|_| !key.is_empty());
    let d = Digest {
        t,
        key,
        how,
        sum,
        marks,
    };
    let sessions = DIGEST_SESSIONS.min(bounds.len()).max(1);
    let chunks: Vec<Vec<(usize, &Bounds)>> = (0..sessions)
        .map(|s| bounds.iter().enumerate().filter(|(i, _)| i % sessions == s).collect())
        .collect();
    let read =
        futures_util::future::try_join_all(chunks.into_iter().map(|chunk| digest_chunk(source, &d, chunk))).await?;
    let mut rows: Vec<(usize, tokio_postgres::Row, u64)> = read.into_iter().flatten().collect();
    rows.sort_by_key(|(i, _, _)| *i);
    Ok(rows
        .into_iter()
        .map(|(i, row, lineage)| range_of(i, &row, (&bounds[i], how), (sum.is_some(), lineage)))
        .unzip())
}

/// One range's digest row: its [`RangeDigest`], and its recent rows when they were listed.
fn range_of(
    i: usize,
    row: &tokio_postgres::Row,
    (bounds, how): (&Bounds, DigestHow),
    (summed, lineage): (bool, u64),
) -> (RangeDigest, Option<Listed>) {
    let rows = row.get::<_, i64>(0).max(0) as u64;
    let snapshot: String = row.get(3);
    let read = (lineage != 0).then(|| ReadMark {
        xmin: row.get::<_, i64>(4).max(0) as u64,
        lineage,
    });
    let listed = row.get::<_, Option<Vec<u8>>>(5).map(|tids| Listed {
        rows,
        snapshot,
        tids,
        lineage,
    });
    let range = RangeDigest {
        range_index: i as u32,
        bounds: bounds.clone(),
        rows,
        // Marked by how it was made: a digest of the other kind never compares equal.
        digest: format!(
            "{}:{}",
            match how {
                DigestHow::Versions => "x",
                DigestHow::Hash => "h",
                DigestHow::Text => "t",
            },
            row.get::<_, Option<String>>(1).unwrap_or_default()
        ),
        keys: None,
        key_sum: summed.then(|| row.get::<_, Option<String>>(2).unwrap_or_else(|| "0".into())),
        read,
    };
    (range, listed)
}

/// Some ranges' digests, one after another on a session of their own, each with the lineage of the server it was
/// read on (0: none, or not a table's row versions): a session's lineage marks only what that session read.
async fn digest_chunk(
    source: &dyn crate::source::SourceConnector,
    d: &Digest<'_>,
    chunk: Vec<(usize, &Bounds)>,
) -> Result<Vec<(usize, tokio_postgres::Row, u64)>, PlanError> {
    let err = |e| PlanError::from(SourceError::from_pg(&d.t.table, 0, e));
    let client = source.connect().await?;
    client
        .batch_execute(crate::source::SESSION_SETTINGS)
        .await
        .map_err(err)?;
    let here = match d.marks.oid {
        Some(oid) => {
            let now = crate::source::horizon(&client, oid).await.map_err(err)?;
            Here {
                lineage: now.horizon.lineage,
                xmax: now.horizon.xmax,
                standby: now.standby,
            }
        }
        None => Here {
            lineage: 0,
            xmax: 0,
            standby: false,
        },
    };
    let (mut out, mut listed) = (Vec::with_capacity(chunk.len()), 0);
    for (i, b) in chunk {
        let since = here.since(d.marks, i, listed);
        let only = (d.t.kind == "table", d.how);
        let q = incremental::digest_sql(&d.t.table, &d.t.columns, (d.key, b), only, (d.sum, since))
            .map_err(PlanError::InvalidRequest)?;
        let row = client.query_one(q.as_str(), &[]).await.map_err(err)?;
        listed += row.get::<_, Option<&[u8]>>(5).map_or(0, <[u8]>::len);
        out.push((i, row, here.lineage));
    }
    Ok(out)
}

/// The tasks that compare a range with its last key file get their range's list of recent rows, written to the
/// stage ([`incremental::recent_key`]); the others are as they were.
pub(super) async fn hand_over(
    stage: &dyn Stage,
    (t, run_id): (&TablePlan, &str),
    mut tasks: Vec<ExtractTask>,
    mut listed: Vec<Option<Listed>>,
) -> Result<Vec<ExtractTask>, PlanError> {
    let mut puts = Vec::new();
    for x in &mut tasks {
        let Some(diff) = x.diff.as_mut().filter(|d| d.previous.is_some()) else {
            continue;
        };
        let Some(l) = listed.get_mut(x.range_index as usize).and_then(Option::take) else {
            continue;
        };
        let key = incremental::recent_key(&t.table, run_id, x.range_index);
        diff.recent = Some(RecentRows {
            tids: key.clone(),
            rows: l.rows,
            snapshot: l.snapshot,
            lineage: l.lineage,
        });
        puts.push(async move { crate::stage::put(stage, &key, Bytes::from(l.tids)).await });
    }
    futures_util::future::try_join_all(puts).await?;
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_listed_from_its_mark_only_on_its_server_within_the_window_and_the_budget() {
        let mark = |xmin, lineage| Some(ReadMark { xmin, lineage });
        let marks = Marks {
            oid: Some(1),
            state: vec![mark(100, 7), mark(100, 8), None, mark((1 << 32) + 5, 7)],
        };
        let here = Here {
            lineage: 7,
            xmax: 1000,
            standby: false,
        };
        assert_eq!(here.since(&marks, 0, 0), Some(100));
        assert_eq!(here.since(&marks, 1, 0), None, "another server's mark");
        assert_eq!(here.since(&marks, 2, 0), None, "no mark");
        assert_eq!(here.since(&marks, 4, 0), None, "no such range");
        assert_eq!(
            here.since(&marks, 0, LIST_BUDGET),
            None,
            "the session's lists are spent"
        );
        let later = Here {
            xmax: (1 << 32) + 5 + (1 << 30) - 1,
            ..here
        };
        assert_eq!(later.since(&marks, 3, 0), Some(5), "the low 32 bits of the mark");
        let too_late = Here {
            xmax: (1 << 32) + 5 + (1 << 30),
            ..here
        };
        assert_eq!(too_late.since(&marks, 3, 0), None, "2^30 ids or more since the mark");
        let standby = Here { standby: true, ..here };
        assert_eq!(standby.since(&marks, 0, 0), None, "a standby lists nothing");
        let unknown = Here { lineage: 0, ..here };
        assert_eq!(
            unknown.since(
                &Marks {
                    state: vec![mark(100, 0)],
                    ..marks
                },
                0,
                0
            ),
            None
        );
    }
}
