//! A Redshift target's physical design, as the user sets it per table (`pgshift.toml`'s `[table."schema.name"]`, or
//! the plan request's overrides): distribution style and key, sort key, and column encodings. Left unset, a target
//! gets `DISTSTYLE AUTO`, a compound sort key on the table's key (none without one) and `ENCODE AUTO` (Redshift picks
//! and later changes the encodings). Checked against the table's columns when the table is planned, so a misspelt
//! column fails the plan, not the load. Rules from CREATE TABLE
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_TABLE_NEW.html>) and the compression encodings' table
//! (<https://docs.aws.amazon.com/redshift/latest/dg/c_Compression_encodings.html>). PostgreSQL warehouses have none of
//! this: there the design is ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::ColumnSpec;
use super::sql;
use super::types::Mapping;

/// How rows are spread over the slices (any case: `key`, `KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum DistStyle {
    Auto,
    Even,
    All,
    Key,
}

impl TryFrom<String> for DistStyle {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DistStyle::Auto),
            "even" => Ok(DistStyle::Even),
            "all" => Ok(DistStyle::All),
            "key" => Ok(DistStyle::Key),
            _ => Err(format!("diststyle {s:?}: one of auto, even, all, key")),
        }
    }
}

impl DistStyle {
    fn word(self) -> &'static str {
        match self {
            DistStyle::Auto => "auto",
            DistStyle::Even => "even",
            DistStyle::All => "all",
            DistStyle::Key => "key",
        }
    }
}

/// The sort key: `auto`, or a compound key of columns in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SortKeyRepr", into = "SortKeyRepr")]
pub enum SortKey {
    Auto,
    Compound(Vec<String>),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SortKeyRepr {
    Word(String),
    Columns(Vec<String>),
}

impl TryFrom<SortKeyRepr> for SortKey {
    type Error = String;
    fn try_from(r: SortKeyRepr) -> Result<Self, String> {
        match r {
            SortKeyRepr::Word(w) if w.eq_ignore_ascii_case("auto") => Ok(SortKey::Auto),
            SortKeyRepr::Word(w) => Ok(SortKey::Compound(vec![w])),
            SortKeyRepr::Columns(c) => Ok(SortKey::Compound(c)),
        }
    }
}

impl From<SortKey> for SortKeyRepr {
    fn from(s: SortKey) -> Self {
        match s {
            SortKey::Auto => SortKeyRepr::Word("auto".into()),
            SortKey::Compound(c) => SortKeyRepr::Columns(c),
        }
    }
}

/// A table's design as the user set it; every field unset is the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableDesign {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diststyle: Option<DistStyle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distkey: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sortkey: Option<SortKey>,
    /// Column → encoding (`zstd`, `az64`, `bytedict`, …), lower case.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub encode: BTreeMap<String, String>,
}

/// The Redshift types an encoding applies to, by the families of [`family`].
#[derive(Clone, Copy)]
enum Applies {
    All,
    AllBut(&'static [&'static str]),
    Only(&'static [&'static str]),
}

impl Applies {
    fn to(self, family: &str) -> bool {
        match self {
            Applies::All => true,
            Applies::AllBut(not) => !not.contains(&family),
            Applies::Only(only) => only.contains(&family),
        }
    }
}

/// Redshift's column encodings and the types each applies to, from the compression encodings' table
/// (<https://docs.aws.amazon.com/redshift/latest/dg/c_Compression_encodings.html>). A column takes no `ENCODE AUTO`:
/// that is a table attribute.
const ENCODINGS: [(&str, Applies); 13] = [
    ("raw", Applies::All),
    (
        "az64",
        Applies::Only(&["int2", "int4", "int8", "decimal", "date", "timestamp", "timestamptz"]),
    ),
    ("bytedict", Applies::AllBut(&["bool", "binary"])),
    (
        "delta",
        Applies::Only(&["int2", "int4", "int8", "date", "timestamp", "decimal"]),
    ),
    (
        "delta32k",
        Applies::Only(&["int4", "int8", "date", "timestamp", "decimal"]),
    ),
    ("lzo", Applies::AllBut(&["bool", "float"])),
    ("mostly8", Applies::Only(&["int2", "int4", "int8", "decimal"])),
    ("mostly16", Applies::Only(&["int4", "int8", "decimal"])),
    ("mostly32", Applies::Only(&["int8", "decimal"])),
    ("runlength", Applies::AllBut(&["binary"])),
    ("text255", Applies::Only(&["varchar"])),
    ("text32k", Applies::Only(&["varchar"])),
    ("zstd", Applies::AllBut(&["binary"])),
];

/// Encodings a VARCHAR column cannot be widened under (ALTER COLUMN … TYPE refuses them:
/// <https://docs.aws.amazon.com/redshift/latest/dg/r_ALTER_TABLE.html>): such a column is sized at its maximum.
pub const NOT_WIDENABLE: [&str; 4] = ["bytedict", "runlength", "text255", "text32k"];

/// The family an encoding's rule speaks of, for a column's mapping (its Redshift type).
fn family(m: &Mapping) -> &'static str {
    match m {
        Mapping::Bool => "bool",
        Mapping::Int16 => "int2",
        Mapping::Int32 => "int4",
        Mapping::Int64 | Mapping::Oid => "int8",
        Mapping::Float32 | Mapping::Float64 => "float",
        Mapping::Decimal { .. } => "decimal",
        Mapping::Uuid => "char",
        Mapping::Text | Mapping::Json | Mapping::Jsonb => "varchar",
        Mapping::Binary => "binary",
        Mapping::Date { .. } => "date",
        Mapping::Timestamp { .. } => "timestamp",
        Mapping::TimestampTz { .. } => "timestamptz",
    }
}

/// Whether a column is VARBYTE, which can be neither a sort key nor a distribution key
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_VARBYTE_type.html>).
fn is_varbyte(columns: &[ColumnSpec], name: &str) -> bool {
    columns.iter().any(|c| c.name == name && c.mapping == Mapping::Binary)
}

impl TableDesign {
    pub fn is_default(&self) -> bool {
        *self == TableDesign::default()
    }

    /// Whether the user set the distribution or sort key (a target whose keys differ is then made anew).
    pub fn sets_keys(&self) -> bool {
        self.diststyle.is_some() || self.distkey.is_some() || self.sortkey.is_some()
    }

    /// The design checked against the table's columns: every problem, in words that name the setting.
    pub fn check(&self, table: &str, columns: &[ColumnSpec]) -> Result<(), String> {
        let mut problems = Vec::new();
        let has = |c: &str| columns.iter().any(|s| s.name == c);
        let setting = format!("[table.\"{table}\"]");
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let not_a_column = |what: String| {
            format!(
                "{what} is not a column of the table (its columns: {})",
                names.join(", ")
            )
        };
        match (self.diststyle, &self.distkey) {
            (Some(DistStyle::Key), None) => problems.push("diststyle = \"key\" needs a distkey".to_string()),
            (Some(s), Some(_)) if s != DistStyle::Key => problems.push(format!(
                "a distkey needs diststyle = \"key\" (or none), not {:?}",
                s.word()
            )),
            _ => {}
        }
        if let Some(k) = self.distkey.as_ref().filter(|k| !has(k)) {
            problems.push(not_a_column(format!("distkey {k:?}")));
        }
        if let Some(k) = self.distkey.as_ref().filter(|k| is_varbyte(columns, k)) {
            problems.push(format!("distkey {k:?} is VARBYTE, which cannot be a distribution key"));
        }
        if let Some(SortKey::Compound(cols)) = &self.sortkey {
            if cols.is_empty() || cols.len() > 400 {
                problems.push("a sortkey names 1 to 400 columns, or is \"auto\"".into());
            }
            for c in cols.iter().filter(|c| !has(c)) {
                problems.push(not_a_column(format!("sortkey column {c:?}")));
            }
            for (i, c) in cols.iter().enumerate() {
                if cols[..i].contains(c) {
                    problems.push(format!("sortkey names {c:?} twice"));
                }
            }
            for c in cols.iter().filter(|c| is_varbyte(columns, c)) {
                problems.push(format!("sortkey column {c:?} is VARBYTE, which cannot be a sort key"));
            }
        }
        for (col, enc) in &self.encode {
            let Some(spec) = columns.iter().find(|s| &s.name == col) else {
                problems.push(not_a_column(format!("encode: {col:?}")));
                continue;
            };
            let fam = family(&spec.mapping);
            match ENCODINGS.iter().find(|(e, _)| e.eq_ignore_ascii_case(enc)) {
                None => problems.push(format!(
                    "encode: {enc:?} for {col:?} is not a Redshift column encoding (one of {})",
                    ENCODINGS.map(|(e, _)| e).join(", ")
                )),
                Some((e, applies)) if !applies.to(fam) => problems.push(format!(
                    "encode: {e} does not apply to {col:?} ({})",
                    spec.mapping.redshift_type(256).split('(').next().unwrap_or_default()
                )),
                _ => {}
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(format!("{setting}: {}", problems.join("; "))),
        }
    }

    /// The encoding set for a column, lower case.
    pub fn encoding_of(&self, column: &str) -> Option<String> {
        self.encode.get(column).map(|e| e.to_ascii_lowercase())
    }

    /// What follows the column list of a Redshift CREATE TABLE: distribution and sort keys (defaults: `DISTSTYLE
    /// AUTO`, the table's key as a compound sort key unless it has a VARBYTE column). No `ENCODE AUTO` beside
    /// encodings the user set: under it Redshift may later change them (CREATE TABLE), and an encoding set is meant to
    /// stay (a width's sizing depends on it). A table with any encoding set is no longer ENCODE AUTO; its other columns
    /// get Redshift's defaults for an encoded table.
    pub fn clause(&self, key: &[String], columns: &[ColumnSpec]) -> Result<String, String> {
        let mut out = match (self.diststyle, &self.distkey) {
            (_, Some(k)) => format!(" DISTSTYLE KEY DISTKEY ({})", sql::ident(k)?),
            (Some(s), None) => format!(" DISTSTYLE {}", s.word().to_uppercase()),
            (None, None) => " DISTSTYLE AUTO".to_string(),
        };
        let sort: Option<Vec<String>> = match &self.sortkey {
            Some(SortKey::Auto) => {
                out.push_str(" SORTKEY AUTO");
                None
            }
            Some(SortKey::Compound(cols)) => Some(cols.clone()),
            None if key.is_empty() || key.iter().any(|k| is_varbyte(columns, k)) => None,
            None => Some(key.to_vec()),
        };
        if let Some(cols) = sort {
            let cols = cols.iter().map(|c| sql::ident(c)).collect::<Result<Vec<_>, _>>()?;
            out.push_str(&format!(" SORTKEY ({})", cols.join(", ")));
        }
        Ok(out)
    }

    /// The design in words, for `plan --explain`.
    pub fn describe(&self, key: &[String]) -> String {
        let dist = match (self.diststyle, &self.distkey) {
            (_, Some(k)) => format!("distributed by key {k}"),
            (Some(s), None) => format!("diststyle {}", s.word()),
            (None, None) => "diststyle auto".into(),
        };
        let sort = match &self.sortkey {
            Some(SortKey::Auto) => "sortkey auto".to_string(),
            Some(SortKey::Compound(c)) => format!("sortkey ({})", c.join(", ")),
            None if key.is_empty() => "no sortkey".into(),
            None => format!("sortkey ({}) (the key)", key.join(", ")),
        };
        let enc = match self.encode.is_empty() {
            true => "encode auto".to_string(),
            false => {
                let list: Vec<String> = self.encode.iter().map(|(c, e)| format!("{c} {e}")).collect();
                format!("encode {} (the others Redshift's defaults)", list.join(", "))
            }
        };
        format!("{dist}, {sort}, {enc}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::model::PgType;

    fn col(name: &str, mapping: Mapping) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            pg_type: PgType {
                oid: 25,
                typmod: -1,
                name: "text".into(),
                declared: None,
            },
            nullable: true,
            mapping,
            cast: None,
        }
    }

    #[test]
    fn a_design_renders_as_redshift_writes_it_and_is_checked_against_the_columns() {
        let cols = [col("id", Mapping::Int64), col("note", Mapping::Text)];
        let key = ["id".to_string()];
        let d = TableDesign::default();
        assert_eq!(d.clause(&key, &cols).unwrap(), r#" DISTSTYLE AUTO SORTKEY ("id")"#);
        assert_eq!(d.clause(&[], &cols).unwrap(), " DISTSTYLE AUTO");
        // A bytea key: VARBYTE is no sort key, so there is none by default.
        let bin = [col("id", Mapping::Binary)];
        assert_eq!(d.clause(&key, &bin).unwrap(), " DISTSTYLE AUTO");
        let d: TableDesign =
            toml::from_str("distkey = \"id\"\nsortkey = [\"note\", \"id\"]\nencode = { note = \"zstd\" }").unwrap();
        assert_eq!(
            d.clause(&key, &cols).unwrap(),
            r#" DISTSTYLE KEY DISTKEY ("id") SORTKEY ("note", "id")"#
        );
        assert!(d.check("s.t", &cols).is_ok());
        assert_eq!(d.encoding_of("note").as_deref(), Some("zstd"));
        let d: TableDesign = toml::from_str("diststyle = \"all\"\nsortkey = \"auto\"").unwrap();
        assert_eq!(d.clause(&key, &cols).unwrap(), " DISTSTYLE ALL SORTKEY AUTO");
        assert_eq!(d.describe(&key), "diststyle all, sortkey auto, encode auto");
        let bad: TableDesign =
            toml::from_str("diststyle = \"key\"\nsortkey = [\"nope\"]\nencode = { id = \"text255\", note = \"auto\" }")
                .unwrap();
        let err = bad.check("s.t", &cols).unwrap_err();
        for says in [
            "[table.\"s.t\"]",
            "needs a distkey",
            "\"nope\" is not a column of the table (its columns: id, note)",
            "text255 does not apply to \"id\"",
            "\"auto\" for \"note\" is not a Redshift column encoding",
        ] {
            assert!(err.contains(says), "{says:?} in {err}");
        }
        assert!(toml::from_str::<TableDesign>("diststyle = \"round\"").is_err());
        let upper: TableDesign = toml::from_str("diststyle = \"EVEN\"").unwrap();
        assert_eq!(upper.clause(&[], &cols).unwrap(), " DISTSTYLE EVEN");
        let twice: TableDesign = toml::from_str("sortkey = [\"id\", \"id\"]").unwrap();
        assert!(twice
            .check("s.t", &cols)
            .unwrap_err()
            .contains("sortkey names \"id\" twice"));
        let even: TableDesign = toml::from_str("diststyle = \"even\"\ndistkey = \"id\"").unwrap();
        assert!(even.check("s.t", &cols).unwrap_err().contains("not \"even\""));
        // Per type, as the encodings' table has it: MOSTLY32 is for 64-bit integers, TEXT255 for VARCHAR only.
        let typed = [
            col("small", Mapping::Int32),
            col("u", Mapping::Uuid),
            col("b", Mapping::Binary),
        ];
        let d: TableDesign =
            toml::from_str("encode = { small = \"mostly32\", u = \"text255\", b = \"zstd\" }\nsortkey = [\"b\"]")
                .unwrap();
        let err = d.check("s.t", &typed).unwrap_err();
        for says in [
            "mostly32 does not apply",
            "text255 does not apply",
            "zstd does not apply",
            "\"b\" is VARBYTE",
        ] {
            assert!(err.contains(says), "{says:?} in {err}");
        }
    }
}
