//! The type policies every command takes the same way (`--cast`, `--numeric-as-text`, `--infinity`), and how they
//! become the request's policies and per-table casts (docs/types.md).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Args;
use pgshift::contract::plan::TableOverride;
use pgshift::contract::types::{Cast, InfinityPolicy, TypePolicies};

#[derive(Args, Clone, Default, Debug)]
#[command(next_help_heading = "Extraction")]
pub(crate) struct TypeArgs {
    /// A cast for a column whose type has no default mapping: --cast sales.orders.location=text (text, json or
    /// numeric); a bare table.column means public.table. Repeat it for more columns.
    #[arg(long, value_parser = parse_cast)]
    pub(crate) cast: Vec<ColumnCast>,
    /// Numerics without a Redshift-sized precision as text instead of decimal(38,18).
    #[arg(long)]
    pub(crate) numeric_as_text: bool,
    /// What ±infinity dates and timestamps become (default error: nothing is changed silently).
    #[arg(long, value_enum)]
    pub(crate) infinity: Option<InfinityPolicy>,
}

/// One `--cast`: `[schema.]table.column=cast`, or for `pgshift extract` (one table) just `column=cast`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnCast {
    pub(crate) table: Option<String>,
    pub(crate) column: String,
    pub(crate) cast: Cast,
}

pub(crate) fn parse_cast(s: &str) -> Result<ColumnCast, String> {
    let (target, cast) = s
        .split_once('=')
        .ok_or("expected [schema.]table.column=cast, e.g. sales.orders.location=text")?;
    let cast = Cast::parse(cast.trim()).ok_or_else(|| format!("unknown cast {cast:?}: use text, json or numeric"))?;
    let (table, column) = match target.rsplit_once('.') {
        Some((t, c)) if t.contains('.') => (Some(t.to_string()), c),
        Some((t, c)) => (Some(format!("public.{t}")), c),
        None => (None, target),
    };
    if column.is_empty() || table.as_deref().is_some_and(|t| t.split('.').any(str::is_empty)) {
        return Err(format!("{target:?}: expected [schema.]table.column=cast"));
    }
    Ok(ColumnCast {
        table,
        column: column.to_string(),
        cast,
    })
}

impl TypeArgs {
    /// The policies these flags set over `base` (the config file's, or the defaults).
    pub(crate) fn policies(&self, base: TypePolicies) -> TypePolicies {
        TypePolicies {
            infinity: self.infinity.unwrap_or(base.infinity),
            unconstrained_numeric_as_text: self.numeric_as_text || base.unconstrained_numeric_as_text,
            ..base
        }
    }

    /// The policies the flags give, and only those, as a request's `policies` fields.
    pub(crate) fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(i) = self.infinity {
            m.insert("infinity".into(), serde_json::to_value(i).unwrap_or_default());
        }
        if self.numeric_as_text {
            m.insert("unconstrained_numeric_as_text".into(), serde_json::Value::Bool(true));
        }
        m
    }

    /// The casts as per-table overrides merged into `overrides` (a flag wins over the config file's cast of the same
    /// column). A cast without a table is refused: run and plan move many tables.
    pub(crate) fn merge_into(&self, overrides: &mut BTreeMap<String, TableOverride>) -> Result<()> {
        for c in &self.cast {
            let Some(table) = &c.table else {
                bail!(
                    "--cast {}=…: name the table too, as --cast schema.table.{}=text (a run moves many tables)",
                    c.column,
                    c.column
                );
            };
            overrides
                .entry(table.clone())
                .or_default()
                .casts
                .insert(c.column.clone(), c.cast);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_name_schema_table_and_column() {
        let c = parse_cast("sales.orders.location=text").expect("cast");
        assert_eq!(
            (c.table.as_deref(), c.column.as_str(), c.cast),
            (Some("sales.orders"), "location", Cast::Text)
        );
        assert_eq!(
            parse_cast("orders.at=json").expect("cast").table.as_deref(),
            Some("public.orders")
        );
        assert_eq!(parse_cast("location=text").expect("cast").table, None);
        for bad in ["location", "x=float", "sales..c=text", ".c=text", "t.=text"] {
            assert!(parse_cast(bad).is_err(), "{bad}");
        }
        let mut o = BTreeMap::new();
        let args = TypeArgs {
            cast: vec![parse_cast("sales.orders.location=text").expect("cast")],
            ..TypeArgs::default()
        };
        args.merge_into(&mut o).expect("merged");
        assert_eq!(o["sales.orders"].casts["location"], Cast::Text);
        let bare = TypeArgs {
            cast: vec![parse_cast("location=text").expect("cast")],
            ..TypeArgs::default()
        };
        let e = bare.merge_into(&mut o).expect_err("a run needs the table");
        assert!(e.to_string().contains("--cast schema.table.location=text"), "{e}");
    }
}
