//! Source schema drift against an existing target, checked before the load transaction: the run's columns (as the
//! staging table made from them has them) against the target's. Nothing is ever cast silently: a type that would
//! lose values, a column the target has but the source no longer does, or one the source has and the target lacks,
//! is an error naming the column, unless the schema-evolution setting allows the change (added columns and widening
//! types only), which is then made by explicit `ALTER TABLE` statements before the load.

use crate::contract::load::SchemaEvolution;
use crate::contract::model::TableRef;
use crate::warehouse::WarehouseColumn;

/// The changes a load makes to the target first, when the policy allows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// The column (by name) is new: add it with the run's type.
    Add(String),
    /// The column's type widens to the run's.
    Widen(String),
}

/// One column of the run, as the staging table has it, with the longest value the extractors saw.
pub(super) struct RunColumn<'a> {
    pub column: &'a WarehouseColumn,
    pub observed_bytes: Option<u64>,
}

/// Compares the run's columns with the target's: the changes to make, or the problems that fail the load.
pub(super) fn compare(
    table: &TableRef,
    target: &[WarehouseColumn],
    run: &[RunColumn<'_>],
    policy: SchemaEvolution,
) -> Result<Vec<Change>, Vec<String>> {
    let evolve = policy == SchemaEvolution::AddAndWiden;
    let mut changes = Vec::new();
    let mut problems = Vec::new();
    for t in target {
        if !run.iter().any(|r| r.column.name == t.name) {
            problems.push(format!(
                "{table}.{}: the target has this column but the source no longer does; loading would leave it NULL \
                 in every row: drop it from the target or recreate the target",
                t.name
            ));
        }
    }
    for r in run {
        let c = r.column;
        let Some(t) = target.iter().find(|t| t.name == c.name) else {
            if evolve {
                changes.push(Change::Add(c.name.clone()));
            } else {
                problems.push(format!(
                    "{table}.{}: new in the source ({}) and missing from the target; pass --schema-evolution \
                     add-and-widen to add it",
                    c.name,
                    c.render()
                ));
            }
            continue;
        };
        match fit(t, c, r.observed_bytes) {
            Fit::Same => {}
            // A VARCHAR sized from an earlier run's data: widened whatever the policy (never truncated, never failed).
            Fit::Longer => changes.push(Change::Widen(c.name.clone())),
            Fit::Widens if evolve => changes.push(Change::Widen(c.name.clone())),
            Fit::Widens => problems.push(format!(
                "{table}.{}: the source has {}, the target {}; loading would cast every value into the narrower \
                 type; pass --schema-evolution add-and-widen to widen the target",
                c.name,
                c.render(),
                t.render()
            )),
            Fit::Loses => problems.push(format!(
                "{table}.{}: the source has {}, the target {}, which cannot hold every value; {}",
                c.name,
                c.render(),
                t.render(),
                loses_hint(table, t)
            )),
        }
    }
    if problems.is_empty() {
        Ok(changes)
    } else {
        Err(problems)
    }
}

/// What to do about a target column that cannot hold the source's values: `--cast` only where it yields the
/// target's kind (text, json or numeric: it never turns text into a number); else change or recreate the target.
fn loses_hint(table: &TableRef, t: &WarehouseColumn) -> String {
    let cast = match t.data_type.as_str() {
        "text" | "character varying" => Some("text"),
        "json" | "jsonb" | "super" => Some("json"),
        "numeric" => Some("numeric"),
        _ => None,
    };
    match cast {
        Some(to) => format!(
            "cast the source column to {to} (--cast {table}.{}={to}), or drop the target so that the load creates it",
            t.name
        ),
        None => format!(
            "alter the target column to a type that holds the source's values, or drop the target {table} so that the \
             load creates it anew"
        ),
    }
}

enum Fit {
    Same,
    /// The target's VARCHAR is narrower than this run's longest value.
    Longer,
    Widens,
    Loses,
}

/// Decimal digits left of the point: what a type needs to hold every value of it (`need`), and how many it holds
/// whatever they are (`safe`: int4's 2,147,483,647 needs 10 digits but holds every 9-digit number, not every 10-digit
/// one). `None` for an unconstrained numeric (it holds anything).
fn digits(c: &WarehouseColumn) -> Option<(Option<i64>, Option<i64>, i64)> {
    let (need, safe) = match c.data_type.as_str() {
        "smallint" => (5, 4),
        "integer" => (10, 9),
        "bigint" => (19, 18),
        "numeric" => match c.precision {
            Some(p) => {
                let d = p - c.scale.unwrap_or(0);
                (d, d)
            }
            None => return Some((None, None, i64::MAX)),
        },
        _ => return None,
    };
    let scale = if c.data_type == "numeric" {
        c.scale.unwrap_or(0)
    } else {
        0
    };
    Some((Some(need), Some(safe), scale))
}

fn is_text(t: &str) -> bool {
    matches!(t, "character varying" | "text" | "character")
}

/// Whether every value of type `b` fits type `a` exactly.
fn holds(a: &WarehouseColumn, b: &WarehouseColumn) -> bool {
    if a.data_type == b.data_type && a.precision == b.precision && a.scale == b.scale {
        return true;
    }
    match (digits(a), digits(b)) {
        (Some((_, a_safe, a_scale)), Some((b_need, _, b_scale))) => {
            let int_ok = match (a_safe, b_need) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => a >= b,
            };
            int_ok && (a_scale == i64::MAX || a_scale >= b_scale)
        }
        _ => a.data_type == "double precision" && b.data_type == "real",
    }
}

/// Whether the run's column `run` fits the target's column `target` as it is.
fn fit(target: &WarehouseColumn, run: &WarehouseColumn, observed_bytes: Option<u64>) -> Fit {
    if is_text(&target.data_type) && is_text(&run.data_type) {
        // Redshift sizes VARCHAR from the data (bytes): what matters is whether this run's values fit.
        return match (target.char_length, observed_bytes) {
            (Some(n), Some(seen)) if seen as i64 > n && target.data_type == "character varying" => Fit::Longer,
            (Some(n), Some(seen)) if seen as i64 > n => Fit::Widens,
            _ if target.data_type == "character" && run.data_type != "character" => Fit::Loses,
            _ => Fit::Same,
        };
    }
    if holds(target, run) {
        Fit::Same
    } else if holds(run, target) {
        Fit::Widens
    } else {
        Fit::Loses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, p: Option<i64>, s: Option<i64>, len: Option<i64>) -> WarehouseColumn {
        WarehouseColumn {
            name: name.into(),
            data_type: ty.into(),
            char_length: len,
            precision: p,
            scale: s,
        }
    }

    fn check(
        target: Vec<WarehouseColumn>,
        run: Vec<WarehouseColumn>,
        policy: SchemaEvolution,
    ) -> Result<Vec<Change>, Vec<String>> {
        let run: Vec<RunColumn<'_>> = run
            .iter()
            .map(|c| RunColumn {
                column: c,
                observed_bytes: Some(10),
            })
            .collect();
        compare(&TableRef::new("s", "t"), &target, &run, policy)
    }

    #[test]
    fn drift_is_refused_by_name_and_widening_follows_the_policy() {
        let int = col("amount", "integer", Some(32), Some(0), None);
        let num = col("amount", "numeric", Some(20), Some(3), None);
        let id = col("id", "bigint", Some(64), Some(0), None);
        // integer → numeric(20,3): 1.235 would be stored as 1.
        let e = check(
            vec![id.clone(), int.clone()],
            vec![id.clone(), num.clone()],
            SchemaEvolution::Refuse,
        )
        .expect_err("drift");
        assert!(e[0].contains("s.t.amount") && e[0].contains("numeric(20,3)"), "{e:?}");
        assert_eq!(
            check(
                vec![id.clone(), int.clone()],
                vec![id.clone(), num.clone()],
                SchemaEvolution::AddAndWiden
            ),
            Ok(vec![Change::Widen("amount".into())])
        );
        // integer into numeric(20,3) fits; bigint and numeric(5,2) hold each other's values neither way.
        assert_eq!(
            check(vec![num.clone()], vec![int.clone()], SchemaEvolution::Refuse),
            Ok(vec![])
        );
        let n52 = col("amount", "numeric", Some(5), Some(2), None);
        let big = col("amount", "bigint", Some(64), Some(0), None);
        let e = check(vec![n52], vec![big.clone()], SchemaEvolution::AddAndWiden).expect_err("lossy");
        assert!(e[0].contains("cannot hold"), "{e:?}");
        // --cast is advised only where it yields the target's kind: it never turns text into a number.
        assert!(e[0].contains("--cast s.t.amount=numeric"), "{e:?}");
        let int_target = col("amount", "integer", Some(32), Some(0), None);
        let text = col("amount", "text", None, None, None);
        let e = check(vec![int_target], vec![text], SchemaEvolution::Refuse).expect_err("text into integer");
        assert!(
            !e[0].contains("--cast") && e[0].contains("alter the target column"),
            "{e:?}"
        );
        // A column dropped in the source is refused whatever the policy; an added one only by default.
        let e = check(
            vec![id.clone(), int.clone()],
            vec![id.clone()],
            SchemaEvolution::AddAndWiden,
        )
        .expect_err("dropped");
        assert!(e[0].contains("no longer"), "{e:?}");
        let e = check(vec![id.clone()], vec![id.clone(), int.clone()], SchemaEvolution::Refuse).expect_err("added");
        assert!(e[0].contains("--schema-evolution"), "{e:?}");
        assert_eq!(
            check(
                vec![id.clone()],
                vec![id.clone(), int.clone()],
                SchemaEvolution::AddAndWiden
            ),
            Ok(vec![Change::Add("amount".into())])
        );
        // Narrower integers and unchanged columns fit as they are.
        let small = col("amount", "smallint", Some(16), Some(0), None);
        assert_eq!(
            check(vec![int.clone()], vec![small], SchemaEvolution::Refuse),
            Ok(vec![])
        );
        assert_eq!(
            check(vec![num.clone()], vec![num.clone()], SchemaEvolution::Refuse),
            Ok(vec![])
        );
        // Text: only values longer than the target's width need widening, and a VARCHAR is widened whatever the
        // policy (its width came from an earlier run's data); a CHAR is not (it pads: its width is its meaning).
        let v4 = col("note", "character varying", None, None, Some(4));
        let v64 = col("note", "character varying", None, None, Some(64));
        assert_eq!(
            check(vec![v4], vec![v64.clone()], SchemaEvolution::Refuse),
            Ok(vec![Change::Widen("note".into())])
        );
        let c4 = col("note", "character", None, None, Some(4));
        assert!(check(vec![c4], vec![v64.clone()], SchemaEvolution::Refuse).is_err());
        assert_eq!(check(vec![v64.clone()], vec![v64], SchemaEvolution::Refuse), Ok(vec![]));
        let ts = col("amount", "timestamp without time zone", None, None, None);
        assert!(check(vec![ts], vec![int], SchemaEvolution::AddAndWiden).is_err());
    }
}
