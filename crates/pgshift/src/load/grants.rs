//! The privileges a run needs of the warehouse's database user, checked by the pre-flight before anything is
//! extracted, in one read-only query (the Data API bills a round trip per statement), whose rows are what is missing.
//! A user that lacks any fails the run by name (`Pipeline.Fatal.PermissionDenied`) with the exact `GRANT` and
//! `ALTER TABLE … OWNER TO` statements to run for it (`docs/deploy.md`, "Grants the loader's database user needs").
//!
//! What the loader's SQL needs (`load::statements`, `load::setup`), each run:
//! - the database: CREATE. Every set-up runs `CREATE SCHEMA IF NOT EXISTS` (`pgshift` and each target's schema), and
//!   PostgreSQL checks the privilege before it looks whether the schema exists
//!   (<https://www.postgresql.org/docs/current/sql-createschema.html>: "the invoking user must have the CREATE
//!   privilege for the current database").
//! - every existing schema it writes (`pgshift`, each target's): USAGE and CREATE (the load log, the staging registry
//!   and the staging tables, which are made beside their targets, are created there).
//! - an existing target: SELECT and INSERT; DELETE where the swap deletes (`replace`, `merge`); on PostgreSQL, the
//!   target's `LOCK … IN EXCLUSIVE MODE` needs UPDATE, DELETE or TRUNCATE in `append` too
//!   ([`Dialect::lock_needs_write`]); its ownership where schema evolution may alter it (`--schema-evolution
//!   add-and-widen`: ALTER TABLE is the owner's). A `replace` by rename needs no more: the loader renames only a
//!   target it may act as the owner of, and replaces the rows of any other (`warehouse::rename`).
//! - `pgshift.load_log`: SELECT and INSERT; `pgshift.staging`: SELECT, INSERT and DELETE.
//!
//! The functions are PostgreSQL's and Redshift's alike: `has_database_privilege`, `has_schema_privilege`,
//! `has_table_privilege` (<https://docs.aws.amazon.com/redshift/latest/dg/r_HAS_DATABASE_PRIVILEGE.html>,
//! <https://docs.aws.amazon.com/redshift/latest/dg/r_HAS_SCHEMA_PRIVILEGE.html>,
//! <https://docs.aws.amazon.com/redshift/latest/dg/r_HAS_TABLE_PRIVILEGE.html>: leader-node functions, so the query
//! reads only the catalog); ownership is the dialect's ([`Dialect::owns`]).

use std::collections::{BTreeMap, BTreeSet};

use super::error::LoadError;
use super::statements::{ident, qualified, text_literal};
use crate::contract::load::{LoadMode, LoadOptions, SchemaEvolution};
use crate::contract::model::TableRef;
use crate::contract::plan::Plan;
use crate::warehouse::{Cell, Dialect, Warehouse};

/// One privilege the user lacks, as a row of [`check_sql`] names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Missing {
    Database(String),
    Schema { schema: String, privilege: String },
    Table { table: TableRef, privilege: String },
    Owner(TableRef),
}

/// What the check found: the user and database it ran as, and what the user lacks (empty: nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) user: String,
    pub(crate) database: String,
    pub(crate) missing: Vec<Missing>,
}

/// The pseudo-privilege of PostgreSQL's `LOCK … IN EXCLUSIVE MODE`: any of UPDATE, DELETE, TRUNCATE.
const LOCK: &str = "LOCK";

/// The privileges a run in `mode` needs of each existing target.
fn target_privileges(dialect: Dialect, mode: LoadMode) -> Vec<&'static str> {
    let mut out = vec!["SELECT", "INSERT"];
    match mode {
        LoadMode::Replace | LoadMode::Merge => out.push("DELETE"),
        LoadMode::Append if dialect.lock_needs_write() => out.push(LOCK),
        LoadMode::Append => {}
    }
    out
}

/// `SELECT 'a' AS c1, 'b' AS c2 UNION ALL SELECT …`: rows of checked literals (never empty: a row of NULLs filtered
/// out by `WHERE 1 = 0` stands for none).
fn rows_sql(names: &[&str], rows: &[Vec<String>]) -> Result<String, LoadError> {
    if rows.is_empty() {
        let cols: Vec<String> = names
            .iter()
            .map(|n| format!("CAST(NULL AS VARCHAR(256)) AS {n}"))
            .collect();
        return Ok(format!("SELECT {} WHERE 1 = 0", cols.join(", ")));
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let cols = row
            .iter()
            .zip(names)
            .map(|(v, n)| text_literal(v).map(|v| format!("{v} AS {n}")))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(format!("SELECT {}", cols.join(", ")));
    }
    Ok(out.join(" UNION ALL "))
}

/// The one read-only query: a row per missing privilege (user, database, kind, schema, table, privilege), none when
/// the user has every one a run loading `targets` with `options` needs. Names as the warehouse stores them
/// ([`Dialect::fold`]), as quoted literals.
pub fn check_sql(dialect: Dialect, targets: &[TableRef], options: &LoadOptions) -> Result<String, LoadError> {
    let targets: Vec<Vec<String>> = targets
        .iter()
        .map(|t| vec![dialect.fold(&t.schema), dialect.fold(&t.name)])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let schemas: BTreeSet<String> = targets
        .iter()
        .map(|t| t[0].clone())
        .chain(["pgshift".to_string()])
        .collect();
    let schemas = schemas
        .iter()
        .map(|s| text_literal(s))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let privileges: Vec<Vec<String>> = target_privileges(dialect, options.mode)
        .into_iter()
        .map(|p| vec![p.to_string()])
        .collect();
    let own: Vec<Vec<String>> = [("load_log", "SELECT"), ("load_log", "INSERT")]
        .into_iter()
        .chain([("staging", "SELECT"), ("staging", "INSERT"), ("staging", "DELETE")])
        .map(|(t, p)| vec!["pgshift".to_string(), t.to_string(), p.to_string()])
        .collect();
    let name = "pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)";
    let has = |p: &str| format!("pg_catalog.has_table_privilege({name}, {p})");
    let has_wanted = match dialect.lock_needs_write() {
        true => format!(
            "CASE WHEN w.privilege = '{LOCK}' THEN {} OR {} OR {} ELSE {} END",
            has("'UPDATE'"),
            has("'DELETE'"),
            has("'TRUNCATE'"),
            has("w.privilege")
        ),
        false => has("w.privilege"),
    };
    let on = "JOIN pg_catalog.pg_namespace n ON n.nspname = {w}.schema_name JOIN pg_catalog.pg_class c ON \
              c.relnamespace = n.oid AND c.relname = {w}.table_name";
    let owner = match options.schema_evolution {
        SchemaEvolution::AddAndWiden => format!(
            " UNION ALL SELECT 'owner', n.nspname, c.relname, 'OWNER' FROM targets t {} WHERE NOT {}",
            on.replace("{w}", "t"),
            dialect.owns("c.relowner")
        ),
        SchemaEvolution::Refuse => String::new(),
    };
    Ok(format!(
        "WITH targets AS ({}), privileges AS ({}), wanted AS (SELECT t.schema_name, t.table_name, p.privilege FROM \
         targets t CROSS JOIN privileges p UNION ALL {}), missing AS (\
         SELECT 'database' AS kind, '' AS schema_name, '' AS table_name, 'CREATE' AS privilege \
         WHERE NOT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') \
         UNION ALL SELECT 'schema', n.nspname, '', p.privilege FROM pg_catalog.pg_namespace n CROSS JOIN (SELECT \
         'USAGE' AS privilege UNION ALL SELECT 'CREATE') p WHERE n.nspname IN ({schemas}) AND NOT \
         pg_catalog.has_schema_privilege(n.nspname, p.privilege) \
         UNION ALL SELECT 'table', n.nspname, c.relname, w.privilege FROM wanted w {} WHERE NOT ({has_wanted}){owner}) \
         SELECT CAST(current_user AS VARCHAR(256)), CAST(pg_catalog.current_database() AS VARCHAR(256)), CAST(kind \
         AS VARCHAR(16)), CAST(schema_name AS VARCHAR(256)), CAST(table_name AS VARCHAR(256)), CAST(privilege AS \
         VARCHAR(16)) FROM missing ORDER BY 3, 4, 5, 6",
        rows_sql(&["schema_name", "table_name"], &targets)?,
        rows_sql(&["privilege"], &privileges)?,
        rows_sql(&["schema_name", "table_name", "privilege"], &own)?,
        on.replace("{w}", "w"),
    ))
}

/// The check's rows: who ran it, where, and what is missing.
pub(crate) fn found(rows: &[Vec<Cell>]) -> Result<Option<Found>, LoadError> {
    let mut out: Option<Found> = None;
    for row in rows {
        let text: Vec<&str> = row.iter().map(|c| c.text().unwrap_or("")).collect();
        let [user, database, kind, schema, table, privilege] = text.as_slice() else {
            return Err(LoadError::InvalidRequest(format!(
                "grants check: a row of {} columns",
                row.len()
            )));
        };
        let missing = match *kind {
            "database" => Missing::Database(privilege.to_string()),
            "schema" => Missing::Schema {
                schema: schema.to_string(),
                privilege: privilege.to_string(),
            },
            "table" => Missing::Table {
                table: TableRef::new(*schema, *table),
                privilege: privilege.to_string(),
            },
            "owner" => Missing::Owner(TableRef::new(*schema, *table)),
            other => {
                return Err(LoadError::InvalidRequest(format!(
                    "grants check: a row of kind {other:?}"
                )))
            }
        };
        out.get_or_insert_with(|| Found {
            user: user.to_string(),
            database: database.to_string(),
            missing: Vec::new(),
        })
        .missing
        .push(missing);
    }
    Ok(out)
}

/// What is missing, one phrase each.
pub(crate) fn describe(f: &Found) -> Result<Vec<String>, LoadError> {
    f.missing
        .iter()
        .map(|m| {
            Ok(match m {
                Missing::Database(p) => format!("{p} on database {}", ident(&f.database)?),
                Missing::Schema { schema, privilege } => format!("{privilege} on schema {}", ident(schema)?),
                Missing::Table { table, privilege } if privilege == LOCK => format!(
                    "UPDATE, DELETE or TRUNCATE on table {} (to lock it while a load appends)",
                    qualified(table)?
                ),
                Missing::Table { table, privilege } => format!("{privilege} on table {}", qualified(table)?),
                Missing::Owner(t) => format!("ownership of {} (schema evolution alters it)", qualified(t)?),
            })
        })
        .collect()
}

/// The statements that give the user what is missing, for an administrator (or the objects' owner) to run: one
/// GRANT per object with every privilege it lacks there; `ALTER TABLE … OWNER TO` instead of grants where the run
/// must own the table (the owner holds every privilege on it).
pub(crate) fn statements(f: &Found) -> Result<Vec<String>, LoadError> {
    let user = ident(&f.user)?;
    let owned: BTreeSet<&TableRef> = f
        .missing
        .iter()
        .filter_map(|m| if let Missing::Owner(t) = m { Some(t) } else { None })
        .collect();
    let order = |p: &str| {
        ["USAGE", "CREATE", "SELECT", "INSERT", LOCK, "DELETE"]
            .iter()
            .position(|x| *x == p)
    };
    let (mut schemas, mut tables) = (
        BTreeMap::<&str, Vec<&str>>::new(),
        BTreeMap::<&TableRef, Vec<&str>>::new(),
    );
    let mut out = Vec::new();
    for m in &f.missing {
        match m {
            Missing::Database(p) => out.push(format!("GRANT {p} ON DATABASE {} TO {user};", ident(&f.database)?)),
            Missing::Schema { schema, privilege } => schemas.entry(schema).or_default().push(privilege),
            Missing::Table { table, privilege } if !owned.contains(table) => tables
                .entry(table)
                .or_default()
                .push(if privilege == LOCK { "UPDATE" } else { privilege }),
            Missing::Table { .. } | Missing::Owner(_) => {}
        }
    }
    for (schema, mut p) in schemas {
        p.sort_by_key(|p| order(p));
        out.push(format!(
            "GRANT {} ON SCHEMA {} TO {user};",
            p.join(", "),
            ident(schema)?
        ));
    }
    for (table, mut p) in tables {
        p.sort_by_key(|p| order(p));
        out.push(format!(
            "GRANT {} ON TABLE {} TO {user};",
            p.join(", "),
            qualified(table)?
        ));
    }
    for t in owned {
        out.push(format!("ALTER TABLE {} OWNER TO {user};", qualified(t)?));
    }
    Ok(out)
}

/// The check, in one query: the run fails by name, with the statements to run, when the user lacks anything.
pub(crate) async fn check(wh: &dyn Warehouse, plan: &Plan) -> Result<(), LoadError> {
    let options = plan.load.clone().unwrap_or_default();
    let targets: Vec<TableRef> = plan.tables.iter().map(|t| t.table.clone()).collect();
    let rows = wh.query(check_sql(wh.dialect(), &targets, &options)?).await?;
    let Some(f) = found(&rows)? else {
        return Ok(());
    };
    let (missing, statements) = (describe(&f)?, statements(&f)?);
    tracing::error!(user = %f.user, missing = missing.len(), "pre-flight: the warehouse user lacks grants the run needs");
    Err(LoadError::Grants {
        user: f.user,
        missing,
        statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found_of(missing: Vec<Missing>) -> Found {
        Found {
            user: "IAMR:pgshift-LoaderRole-XYZ".into(),
            database: "dev".into(),
            missing,
        }
    }

    #[test]
    fn statements_grant_each_object_once_for_the_actual_user_and_give_owned_tables_away() {
        let orders = TableRef::new("sales", "orders");
        let items = TableRef::new("sales", "it\"ems");
        let f = found_of(vec![
            Missing::Database("CREATE".into()),
            Missing::Schema {
                schema: "sales".into(),
                privilege: "CREATE".into(),
            },
            Missing::Schema {
                schema: "sales".into(),
                privilege: "USAGE".into(),
            },
            Missing::Table {
                table: orders.clone(),
                privilege: "DELETE".into(),
            },
            Missing::Table {
                table: orders.clone(),
                privilege: "INSERT".into(),
            },
            Missing::Table {
                table: items.clone(),
                privilege: "SELECT".into(),
            },
            Missing::Owner(items.clone()),
            Missing::Table {
                table: TableRef::new("s", "a"),
                privilege: LOCK.into(),
            },
        ]);
        let u = "\"IAMR:pgshift-LoaderRole-XYZ\"";
        assert_eq!(
            statements(&f).unwrap(),
            [
                format!("GRANT CREATE ON DATABASE \"dev\" TO {u};"),
                format!("GRANT USAGE, CREATE ON SCHEMA \"sales\" TO {u};"),
                format!("GRANT UPDATE ON TABLE \"s\".\"a\" TO {u};"),
                format!("GRANT INSERT, DELETE ON TABLE \"sales\".\"orders\" TO {u};"),
                format!("ALTER TABLE \"sales\".\"it\"\"ems\" OWNER TO {u};"),
            ]
        );
        let d = describe(&f).unwrap();
        assert_eq!(d[0], "CREATE on database \"dev\"");
        assert!(d[6].starts_with("ownership of \"sales\".\"it\"\"ems\""), "{d:?}");
        assert!(
            d[7].starts_with("UPDATE, DELETE or TRUNCATE on table \"s\".\"a\""),
            "{d:?}"
        );
    }

    #[test]
    fn rows_become_what_is_missing_and_no_rows_nothing() {
        let t = |s: &str| Cell::Text(s.into());
        let rows = vec![
            vec![t("etl"), t("wh"), t("database"), t(""), t(""), t("CREATE")],
            vec![t("etl"), t("wh"), t("owner"), t("s"), t("t"), t("OWNER")],
        ];
        let f = found(&rows).unwrap().unwrap();
        assert_eq!((f.user.as_str(), f.database.as_str()), ("etl", "wh"));
        assert_eq!(
            f.missing,
            [
                Missing::Database("CREATE".into()),
                Missing::Owner(TableRef::new("s", "t"))
            ]
        );
        assert_eq!(found(&[]).unwrap(), None);
        assert!(found(&[vec![t("x")]]).is_err());
    }

    #[test]
    fn the_query_names_every_target_by_quoted_literal_and_what_the_mode_needs() {
        let plan = [TableRef::new("Sales", "o'rders")];
        let replace = LoadOptions::default();
        let pg = check_sql(Dialect::Postgres, &plan, &replace).unwrap();
        assert!(
            pg.contains("SELECT 'Sales' AS schema_name, 'o''rders' AS table_name"),
            "{pg}"
        );
        assert!(pg.contains("IN ('Sales', 'pgshift')"), "{pg}");
        assert!(
            pg.contains("UNION ALL SELECT 'DELETE' AS privilege), wanted AS"),
            "{pg}"
        );
        assert!(!pg.contains("'owner'"), "no ownership without schema evolution: {pg}");
        let evolve = LoadOptions {
            mode: LoadMode::Append,
            schema_evolution: SchemaEvolution::AddAndWiden,
            ..LoadOptions::default()
        };
        let pg = check_sql(Dialect::Postgres, &plan, &evolve).unwrap();
        assert!(
            pg.contains("pg_catalog.pg_has_role(c.relowner, 'USAGE')") && pg.contains("'LOCK'"),
            "{pg}"
        );
        let rs = check_sql(Dialect::Redshift, &plan, &evolve).unwrap();
        assert!(
            rs.contains("'sales' AS schema_name") && rs.contains("pg_catalog.pg_user u"),
            "{rs}"
        );
        assert!(!rs.contains("'LOCK'") && !rs.contains("pg_has_role"), "{rs}");
    }
}
