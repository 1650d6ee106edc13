//! A key range's digest on the source (`--incremental diff`, docs/incremental.md): a count and an order-independent
//! sum of a hash per row, read in SQL with the extraction's own range predicate, so no row leaves the server.

use crate::contract::model::{Bounds, ColumnSpec, TableRef};

/// How a range's rows are digested on the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestHow {
    /// A hash of each row version's identity: its place (`ctid`) seeded by the transaction that wrote it (`xmin`)
    /// and its table ([`VERSION_SEED`]). A row version never changes, so a range whose versions are the same holds
    /// the same rows; any insert, update or delete makes a new version or removes one. No column is read, so it costs
    /// little more than a scan of the tuple headers. A table rewritten (`VACUUM FULL`, `CLUSTER`, a dump and restore)
    /// has new versions of the same rows: its ranges then read as changed, and the row-by-row comparison finds no
    /// change in them.
    Versions,
    /// `hash_record_extended` (PostgreSQL 14+) over the row's values: no value is rendered as text, which is what a
    /// digest's time goes to. A column whose type's equality is not the identity of its values (a float's -0 and 0,
    /// an interval's '1 day' and '24 hours', an unconstrained numeric's 1.0 and 1.00, and every type not known to be
    /// exact) is hashed as its text.
    Hash,
    /// MD5 of the row's text form, 60 bits of it (any server).
    Text,
}

/// The seed of a row version's hash: the 32 bits of its `xmin` (the raw transaction id, which freezing keeps) below
/// its table's OID. An `xid` has no cast to a number, and its text costs as much as the rest of the digest, so the
/// number is read through `age`: `age(xmin)` is the transaction's distance back from the reference the whole
/// statement shares (the next transaction id, fixed per transaction), `age('3')` the distance back to transaction 3,
/// so `age('3') + 3 - age(xmin)` is `xmin` modulo 2^32. Two and a half times cheaper than `hash_record_extended`
/// of the row of the three (docs/bench-incremental-2026-12-06.txt). A special xmin (frozen by a server before 9.4,
/// or bootstrap) has an age of 2^31 - 1 whatever its value: such rows' seeds move with the reference, so a range
/// holding one reads as changed every run and is compared row by row, never wrongly skipped.
pub(crate) const VERSION_SEED: &str =
    "(((SELECT pg_catalog.age('3'::pg_catalog.xid)::pg_catalog.int8 OPERATOR(pg_catalog.+) 3) \
     OPERATOR(pg_catalog.-) pg_catalog.age(pgshift_row.xmin)::pg_catalog.int8) OPERATOR(pg_catalog.&) 4294967295) \
     OPERATOR(pg_catalog.|) (pgshift_row.tableoid::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32)";

/// The tuple ids of the rows written since `since` ([`crate::contract::sql::written_since`]), 6 bytes each
/// (`tidsend`: block and item, big-endian), when they are at most a quarter of the range (more, and its extraction
/// reads the range whole anyway); else NULL. The server gathers them while it digests: about 6 to 12 bytes of memory
/// a row written since, whatever the range's size.
fn recent_tids(since: u32) -> String {
    let recent = crate::contract::sql::written_since("pgshift_row.xmin", since);
    format!(
        "CASE WHEN pg_catalog.count(*) FILTER (WHERE {recent}) OPERATOR(pg_catalog.*) 4 OPERATOR(pg_catalog.<=) \
         pg_catalog.count(*) THEN COALESCE(pg_catalog.string_agg(pg_catalog.tidsend(pgshift_row.ctid), \
         ''::pg_catalog.bytea) FILTER (WHERE {recent}), ''::pg_catalog.bytea) END"
    )
}

/// Whether a column's values hash exactly as they are: equal hashes of its type mean equal values, written alike.
fn hashes_exactly(c: &ColumnSpec) -> bool {
    use crate::contract::types::oid;
    c.cast.is_none()
        && match c.pg_type.oid {
            oid::INT2 | oid::INT4 | oid::INT8 | oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::BOOL | oid::DATE => true,
            oid::TIMESTAMP | oid::TIMESTAMPTZ | oid::UUID | oid::BYTEA | oid::JSONB | oid::OID => true,
            oid::NUMERIC => c.pg_type.typmod >= 0,
            _ => false,
        }
}

/// The query of a range's count, digest and (for a single integer key) key sum, with the extraction's own range
/// predicate (no function on the key). The digest is order-independent: the sum of a 64-bit hash of each row (an
/// `int8` sum, which PostgreSQL accumulates in 128 bits and returns as `numeric`, so it never overflows; a cast of
/// each hash to `numeric` would give the same sum three times slower, docs/bench-incremental-2026-12-06.txt) ([`DigestHow::Hash`]) or of the first 60 bits of the MD5 of its text form
/// ([`DigestHow::Text`]). Text forms are pinned by the session settings the source connection sets (`DateStyle`,
/// `IntervalStyle`, `TimeZone`, `extra_float_digits`, `bytea_output`, …). Built-ins are qualified. After those three:
/// the statement's snapshot (its text, its `xmin`) and, with `since`, the rows written since ([`recent_tids`]).
pub fn digest_sql(
    table: &TableRef,
    columns: &[ColumnSpec],
    (key, bounds): (&[String], &Bounds),
    (only, how): (bool, DigestHow),
    (key_sum, since): (Option<&str>, Option<u32>),
) -> Result<String, String> {
    let key_sum = match key_sum {
        Some(k) => format!("pg_catalog.sum({})::pg_catalog.text", crate::contract::sql::ident(k)?),
        None => "NULL::pg_catalog.text".into(),
    };
    let exprs = columns
        .iter()
        .map(|c| {
            let e = crate::contract::sql::select_expr(c)?;
            Ok(match how == DigestHow::Hash && !hashes_exactly(c) {
                true => format!("({e})::pg_catalog.text"),
                false => e,
            })
        })
        .collect::<Result<Vec<_>, String>>()?
        .join(", ");
    let digest = match how {
        DigestHow::Versions => {
            format!("pg_catalog.sum(pg_catalog.hashtidextended(pgshift_row.ctid, {VERSION_SEED}))::pg_catalog.text")
        }
        DigestHow::Hash => format!("pg_catalog.sum(pg_catalog.hash_record_extended(ROW({exprs}), 0))::pg_catalog.text"),
        DigestHow::Text => format!(
            "pg_catalog.sum(('x' OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.md5(ROW({exprs})::pg_catalog.\
             text), 1, 15))::pg_catalog.bit(60)::pg_catalog.int8)::pg_catalog.text"
        ),
    };
    let only = if only { "ONLY " } else { "" };
    let recent = match since {
        Some(since) => recent_tids(since),
        None => "NULL::pg_catalog.bytea".into(),
    };
    crate::contract::sql::select_range(
        &format!(
            "pg_catalog.count(*), {digest}, {key_sum}, pg_catalog.txid_current_snapshot()::pg_catalog.text, \
             pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot()), {recent}"
        ),
        &format!("{only}{} AS pgshift_row", crate::contract::sql::table(table)?),
        (key, bounds),
        Vec::new(),
    )
}
