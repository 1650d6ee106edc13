//! The type table: how every Postgres type reaches Arrow/Parquet and which Redshift type loads it.
//!
//! One row per Postgres base type, in [`default_mapping`]. Every lossy choice is a named policy with a documented
//! default that Redshift `COPY ... FORMAT AS PARQUET` accepts (see `docs/types.md`). A type without a row is an error
//! at task start naming the column and the override (a per-column [`Cast`]); nothing is ever cast silently.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::contract::model::{ColumnSpec, PgType};

/// Well-known type oids (stable across PostgreSQL versions: `pg_type.dat`).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Redshift's widest VARCHAR, in bytes (<https://docs.aws.amazon.com/redshift/latest/dg/r_Character_types.html>).
pub const REDSHIFT_VARCHAR_MAX: u64 = 65_535;
/// Redshift's widest VARBYTE, in bytes: "The maximum number of bytes (n) can range from 1 – 16,777,216"
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_VARBYTE_type.html>; it was 1,024,000 when VARBYTE shipped).
pub const REDSHIFT_VARBYTE_MAX: u64 = 16_777_216;

/// A cast in the SELECT list. A closed set: the SQL for each is fixed text, never user input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cast {
    /// The value as Postgres prints it: the type's output function (`format('%s', col)`, with the session's ISO
    /// settings), not the `::text` cast, which differs for `inet`, `bool` and `bpchar`.
    Text,
    /// `pg_catalog.to_json(col)::text`: arrays and composites as JSON.
    Json,
    /// `col::numeric`: money as an exact decimal.
    Numeric,
}

impl Cast {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Cast::Text),
            "json" => Some(Cast::Json),
            "numeric" => Some(Cast::Numeric),
            _ => None,
        }
    }
}

/// What `-infinity`/`infinity` dates and timestamps become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum InfinityPolicy {
    /// Fail the task, naming table, column and key (default: nothing is changed silently).
    #[default]
    Error,
    /// Write NULL (the column is then nullable in Parquet and the target, whatever its NOT NULL).
    Null,
    /// Write the earliest/latest value the column can hold: dates 4713-01-01 BC / 294276-12-31; timestamps
    /// 4713-01-01 00:00:00 BC / 294247-01-10 04:00:54.775807 (Parquet's microseconds end there).
    Clamp,
}

/// The default decimal for `numeric` without precision (and with a precision or scale Redshift cannot hold):
/// pg2parquet's `decimal(38,18)`. A value that does not fit exactly is an error, never a rounding.
pub const UNCONSTRAINED_NUMERIC: (u8, i8) = (38, 18);

/// The largest scale of a Redshift DECIMAL.
pub const MAX_DECIMAL_SCALE: i32 = 37;

/// How the wire value of a column becomes an Arrow value. Serialized into the task as the chosen policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum Mapping {
    Bool,
    Int16,
    Int32,
    Int64,
    /// `oid` (unsigned 32-bit) widened to Int64, since Redshift has no unsigned types.
    Oid,
    Float32,
    Float64,
    /// Exact decimal; a value that needs more digits or a finer scale, NaN or ±Infinity is an error.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// UTF-8 text as the server sends it (text, varchar, bpchar with its padding, name, citext, enums, casts).
    Text,
    /// `json`: the document text as stored.
    Json,
    /// `jsonb`: the binary format's version byte checked and dropped, leaving the normalized JSON text.
    Jsonb,
    /// `uuid`: canonical lower-case 36-character text.
    Uuid,
    Binary,
    Date {
        #[serde(default)]
        infinity: InfinityPolicy,
    },
    /// `timestamp`: microseconds, no time zone.
    Timestamp {
        #[serde(default)]
        infinity: InfinityPolicy,
    },
    /// `timestamptz`: microseconds since the epoch in UTC (Parquet `isAdjustedToUTC = true`).
    TimestampTz {
        #[serde(default)]
        infinity: InfinityPolicy,
    },
}

/// Options that pick among the documented policies when building the default column specs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TypePolicies {
    pub infinity: InfinityPolicy,
    /// `(precision, scale)` for numerics Redshift cannot hold as declared; `None` means [`UNCONSTRAINED_NUMERIC`].
    pub unconstrained_numeric: Option<(u8, i8)>,
    /// Render unconstrained numerics as text instead of a decimal.
    pub unconstrained_numeric_as_text: bool,
}

/// What the catalog says of a column's type, domains already resolved to their base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogType {
    pub pg: PgType,
    /// `pg_type.typtype` of the base: b(ase), e(num), c(omposite), r(ange), m(ultirange), p(seudo).
    pub typtype: char,
    /// `pg_type.typcategory` of the base ('A' for arrays).
    pub category: char,
    /// The base type's name without modifiers (`citext` for the extension type).
    pub base_name: String,
}

/// The type table. Returns the cast and mapping for a column's type, or `None` when pgshift has no policy for it.
pub fn default_mapping(t: &CatalogType, policies: &TypePolicies) -> Option<(Option<Cast>, Mapping)> {
    let infinity = policies.infinity;
    let plain = |m| Some((None, m));
    match t.pg.oid {
        oid::BOOL => plain(Mapping::Bool),
        oid::INT2 => plain(Mapping::Int16),
        oid::INT4 => plain(Mapping::Int32),
        oid::INT8 => plain(Mapping::Int64),
        oid::OID => plain(Mapping::Oid),
        oid::FLOAT4 => plain(Mapping::Float32),
        oid::FLOAT8 => plain(Mapping::Float64),
        // Redshift's DECIMAL: precision at most 38, scale at most 37
        // (<https://docs.aws.amazon.com/redshift/latest/dg/r_Numeric_types201.html>): numeric(38,38) takes the policy.
        oid::NUMERIC => match numeric_typmod(t.pg.typmod) {
            Some((p, s)) if (1..=38).contains(&p) && (0..=p.min(MAX_DECIMAL_SCALE)).contains(&s) => {
                plain(Mapping::Decimal {
                    precision: p as u8,
                    scale: s as i8,
                })
            }
            _ if policies.unconstrained_numeric_as_text => Some((Some(Cast::Text), Mapping::Text)),
            _ => {
                let (precision, scale) = policies.unconstrained_numeric.unwrap_or(UNCONSTRAINED_NUMERIC);
                plain(Mapping::Decimal { precision, scale })
            }
        },
        // money: int64 of the currency's minor unit; as numeric it is exact (scale 2 in every common locale; another
        // scale fails loudly in the decimal decoder).
        oid::MONEY => Some((
            Some(Cast::Numeric),
            Mapping::Decimal {
                precision: 19,
                scale: 2,
            },
        )),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => plain(Mapping::Text),
        oid::JSON => plain(Mapping::Json),
        oid::JSONB => plain(Mapping::Jsonb),
        oid::UUID => plain(Mapping::Uuid),
        oid::BYTEA => plain(Mapping::Binary),
        oid::DATE => plain(Mapping::Date { infinity }),
        oid::TIMESTAMP => plain(Mapping::Timestamp { infinity }),
        oid::TIMESTAMPTZ => plain(Mapping::TimestampTz { infinity }),
        // Redshift's TIME/TIMETZ and INTERVAL types do not load from Parquet; ISO text loads into VARCHAR and casts
        // back in SQL. Network, xml types: text is their only faithful form.
        oid::TIME | oid::TIMETZ | oid::INTERVAL | oid::INET | oid::CIDR | oid::MACADDR | oid::MACADDR8 | oid::XML => {
            Some((Some(Cast::Text), Mapping::Text))
        }
        _ if t.category == 'A' => Some((Some(Cast::Json), Mapping::Text)),
        _ if t.typtype == 'e' => plain(Mapping::Text),
        _ if t.base_name == "citext" => plain(Mapping::Text),
        _ => None,
    }
}

/// The mapping that goes with an explicit per-column cast override.
pub fn mapping_for_cast(cast: Cast) -> Mapping {
    match cast {
        Cast::Text | Cast::Json => Mapping::Text,
        Cast::Numeric => {
            let (precision, scale) = UNCONSTRAINED_NUMERIC;
            Mapping::Decimal { precision, scale }
        }
    }
}

/// `(precision, scale)` from a numeric typmod; `None` when unconstrained. Scale may be negative or larger than the
/// precision since PostgreSQL 15.
pub fn numeric_typmod(typmod: i32) -> Option<(i32, i32)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    Some((precision, scale))
}

/// `character varying(n)`/`character(n)` length in characters from the typmod.
pub fn char_length(typmod: i32) -> Option<u32> {
    (typmod >= 4).then(|| (typmod - 4) as u32)
}

impl Mapping {
    pub fn arrow_type(&self) -> DataType {
        match *self {
            Mapping::Bool => DataType::Boolean,
            Mapping::Int16 => DataType::Int16,
            Mapping::Int32 => DataType::Int32,
            Mapping::Int64 | Mapping::Oid => DataType::Int64,
            Mapping::Float32 => DataType::Float32,
            Mapping::Float64 => DataType::Float64,
            Mapping::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            Mapping::Text | Mapping::Json | Mapping::Jsonb | Mapping::Uuid => DataType::Utf8,
            Mapping::Binary => DataType::Binary,
            Mapping::Date { .. } => DataType::Date32,
            Mapping::Timestamp { .. } => DataType::Timestamp(TimeUnit::Microsecond, None),
            Mapping::TimestampTz { .. } => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
        }
    }

    /// Whether the column's max value length is tracked (text and binary columns).
    pub fn is_variable_length(&self) -> bool {
        matches!(
            self,
            Mapping::Text | Mapping::Json | Mapping::Jsonb | Mapping::Uuid | Mapping::Binary
        )
    }

    /// The PostgreSQL column type of a warehouse table (the local stand-in for Redshift): text is unbounded there.
    pub fn postgres_type(&self) -> String {
        match *self {
            Mapping::Bool => "BOOLEAN".into(),
            Mapping::Int16 => "SMALLINT".into(),
            Mapping::Int32 => "INTEGER".into(),
            Mapping::Int64 | Mapping::Oid => "BIGINT".into(),
            Mapping::Float32 => "REAL".into(),
            Mapping::Float64 => "DOUBLE PRECISION".into(),
            Mapping::Decimal { precision, scale } => format!("NUMERIC({precision},{scale})"),
            Mapping::Text | Mapping::Json | Mapping::Jsonb | Mapping::Uuid => "TEXT".into(),
            Mapping::Binary => "BYTEA".into(),
            Mapping::Date { .. } => "DATE".into(),
            Mapping::Timestamp { .. } => "TIMESTAMP".into(),
            Mapping::TimestampTz { .. } => "TIMESTAMPTZ".into(),
        }
    }

    /// Whether the policy may turn a value into NULL (±infinity under `infinity: null`): such a column is nullable in
    /// Parquet and in the target whatever the source's NOT NULL says.
    pub fn nulls_values(&self) -> bool {
        matches!(
            *self,
            Mapping::Date { infinity } | Mapping::Timestamp { infinity } | Mapping::TimestampTz { infinity }
                if infinity == InfinityPolicy::Null
        )
    }

    /// The Redshift column type that loads this Parquet column (the loader refines VARCHAR widths from observed
    /// byte lengths). `varchar_bytes` is the width to use for text.
    pub fn redshift_type(&self, varchar_bytes: u32) -> String {
        match *self {
            Mapping::Bool => "BOOLEAN".into(),
            Mapping::Int16 => "SMALLINT".into(),
            Mapping::Int32 => "INTEGER".into(),
            Mapping::Int64 | Mapping::Oid => "BIGINT".into(),
            Mapping::Float32 => "REAL".into(),
            Mapping::Float64 => "DOUBLE PRECISION".into(),
            Mapping::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            Mapping::Uuid => "CHAR(36)".into(),
            Mapping::Text | Mapping::Json | Mapping::Jsonb => {
                format!("VARCHAR({})", u64::from(varchar_bytes).clamp(1, REDSHIFT_VARCHAR_MAX))
            }
            Mapping::Binary => format!("VARBYTE({})", u64::from(varchar_bytes).clamp(1, REDSHIFT_VARBYTE_MAX)),
            Mapping::Date { .. } => "DATE".into(),
            Mapping::Timestamp { .. } => "TIMESTAMP".into(),
            Mapping::TimestampTz { .. } => "TIMESTAMPTZ".into(),
        }
    }
}

/// The Arrow schema of a task's output, in column order. Nullability follows the source's NOT NULL.
pub fn arrow_schema(columns: &[ColumnSpec]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| Field::new(c.name.clone(), c.mapping.arrow_type(), c.nullable))
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(oid: u32, typmod: i32) -> CatalogType {
        CatalogType {
            pg: PgType {
                name: String::new(),
                oid,
                typmod,
                declared: None,
            },
            typtype: 'b',
            category: 'N',
            base_name: String::new(),
        }
    }

    #[test]
    fn numeric_typmods_decode_like_postgres() {
        // numeric(12,2): typmod = ((12 << 16) | 2) + 4
        assert_eq!(numeric_typmod((12 << 16 | 2) + 4), Some((12, 2)));
        assert_eq!(numeric_typmod(-1), None);
        // numeric(3,-2) (PostgreSQL 15): scale stored as 11-bit two's complement
        assert_eq!(numeric_typmod((3 << 16 | (0x7ff & -2i32)) + 4), Some((3, -2)));
    }

    #[test]
    fn numeric_policy_depends_on_redshift_limits() {
        let p = TypePolicies::default();
        let m = |typmod| default_mapping(&cat(oid::NUMERIC, typmod), &p).map(|x| x.1);
        assert_eq!(
            m((12 << 16 | 2) + 4),
            Some(Mapping::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            m(-1),
            Some(Mapping::Decimal {
                precision: 38,
                scale: 18
            })
        );
        // numeric(38,38) and (37,37): Redshift's scale stops at 37.
        assert_eq!(
            m((38 << 16 | 38) + 4),
            Some(Mapping::Decimal {
                precision: 38,
                scale: 18
            })
        );
        assert_eq!(
            m((37 << 16 | 37) + 4),
            Some(Mapping::Decimal {
                precision: 37,
                scale: 37
            })
        );
        assert_eq!(
            m((60 << 16 | 2) + 4),
            Some(Mapping::Decimal {
                precision: 38,
                scale: 18
            })
        );
        let text = TypePolicies {
            unconstrained_numeric_as_text: true,
            ..Default::default()
        };
        assert_eq!(
            default_mapping(&cat(oid::NUMERIC, -1), &text),
            Some((Some(Cast::Text), Mapping::Text))
        );
    }

    #[test]
    fn unknown_types_have_no_row() {
        let mut point = cat(600, -1);
        point.base_name = "point".into();
        assert_eq!(default_mapping(&point, &TypePolicies::default()), None);
    }
}
