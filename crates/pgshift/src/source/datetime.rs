//! Dates and timestamps off the wire: PostgreSQL's epoch (2000-01-01) moved to the Unix epoch, and ±infinity made
//! what the column's policy says (NULL, Redshift's range's end, or an error).

use arrow_array::builder::{Date32Builder, TimestampMicrosecondBuilder};

use crate::contract::pgtext::{self, days_from_civil, PG_EPOCH_DAYS, PG_EPOCH_MICROS};
use crate::contract::types::InfinityPolicy;

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("expected {N} bytes on the wire, got {}", b.len()))
}

/// 4713-01-01 BC and 294276-12-31, Redshift's date range, as days since 1970-01-01 (the `clamp` policy).
fn clamp_days() -> (i32, i32) {
    (
        days_from_civil(-4712, 1, 1) as i32,
        days_from_civil(294_276, 12, 31) as i32,
    )
}

/// The timestamp clamp range as microseconds since 1970-01-01: Redshift's earliest (4713-01-01 BC) and the latest a
/// Parquet INT64 microsecond value holds (294247-01-10 04:00:54.775807; Postgres and Redshift go on to 294276 AD).
fn clamp_micros() -> (i64, i64) {
    (clamp_days().0 as i64 * 86_400_000_000, i64::MAX)
}

fn infinity_message(positive: bool) -> String {
    let v = if positive { "infinity" } else { "-infinity" };
    format!("{v} is not a date Redshift can hold; set the infinity policy to null or clamp to load it")
}

/// A date: days since 2000-01-01 to days since 1970; ±infinity by the policy.
#[inline]
pub(super) fn append_date(b: &mut Date32Builder, inf: InfinityPolicy, v: &[u8]) -> Result<(), String> {
    let value = match i32::from_be_bytes(fixed(v)?) {
        i32::MAX => infinity(true, inf, clamp_days())?,
        i32::MIN => infinity(false, inf, clamp_days())?,
        d => Some(d + PG_EPOCH_DAYS),
    };
    b.append_option(value);
    Ok(())
}

/// A timestamp: microseconds since 2000 to microseconds since 1970; ±infinity by the policy.
#[inline]
pub(super) fn append_timestamp(
    b: &mut TimestampMicrosecondBuilder,
    inf: InfinityPolicy,
    v: &[u8],
) -> Result<(), String> {
    let value = match i64::from_be_bytes(fixed(v)?) {
        i64::MAX => infinity(true, inf, clamp_micros())?,
        i64::MIN => infinity(false, inf, clamp_micros())?,
        // Postgres' last 29 millennia (after 294247-01-10) do not fit INT64 microseconds since 1970.
        t => Some(t.checked_add(PG_EPOCH_MICROS).ok_or_else(|| {
            format!(
                "{} is after 294247-01-10 04:00:54.775807, the latest timestamp Parquet holds",
                pgtext::timestamp(t, false)
            )
        })?),
    };
    b.append_option(value);
    Ok(())
}

/// What ±infinity becomes by the policy: NULL (`None`), the clamp's low or high end, or an error.
fn infinity<T>(positive: bool, inf: InfinityPolicy, (lo, hi): (T, T)) -> Result<Option<T>, String> {
    match inf {
        InfinityPolicy::Null => Ok(None),
        InfinityPolicy::Clamp => Ok(Some(if positive { hi } else { lo })),
        InfinityPolicy::Error => Err(infinity_message(positive)),
    }
}
