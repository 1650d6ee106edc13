//! What a `replace` by rename would lose of a Redshift target, read from its catalog in one query of tagged rows
//! (`blocker`, `owner`, `grant`, `staging`). Redshift runs `DROP TABLE` and `ALTER TABLE … RENAME TO` of a regular
//! table inside a transaction block: only the external-table forms, `ALTER TABLE APPEND` and `ALTER COLUMN … TYPE`
//! may not (<https://docs.aws.amazon.com/redshift/latest/dg/r_SVL_MULTI_STATEMENT_VIOLATIONS.html>,
//! <https://docs.aws.amazon.com/redshift/latest/dg/r_ALTER_TABLE.html>). What a rename would break, so the loader
//! replaces rows instead and says why:
//! - a schema-bound view: `DROP TABLE` fails while one depends on it (found by the DROP TABLE page's own dependency
//!   query, `pg_depend` rows of deptype `i` linking the table's and a view's `relfilenode`:
//!   <https://docs.aws.amazon.com/redshift/latest/dg/r_DROP_TABLE.html>). A late-binding view (`WITH NO SCHEMA
//!   BINDING`) has no such row and survives: it binds to the name at query time
//!   (<https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_VIEW.html>);
//! - a constraint on or referencing it (informational on Redshift, but the new table would not have it);
//! - a comment; a loading user that is not a superuser: it might not be able to drop the table or give the new one
//!   its owner, and `SVV_RELATION_PRIVILEGES` shows others only "identities they have access to or own", so some
//!   grants could go unseen and be lost;
//! - distribution or sort keys other than the run's, unless the user set the design (then the rename is how the new
//!   design is applied); columns in another order.
//!
//! Grants are carried: `SVV_RELATION_PRIVILEGES` lists them by user, role, group or public (it is also queryable on
//! Serverless: <https://docs.aws.amazon.com/redshift/latest/dg/r_SVV_RELATION_PRIVILEGES.html>), and the new table
//! gets them again (`WITH GRANT OPTION` only for a user, the only grantee that can have it:
//! <https://docs.aws.amazon.com/redshift/latest/dg/r_GRANT.html>); a grantee of a kind pgshift does not know makes it
//! replace rows. The catalog tables and that view are read by two queries, never joined: a query that touches only
//! catalog tables runs on the leader node, one with an SVV view is sent to the compute nodes, where leader-node
//! tables and functions are not supported
//! (<https://docs.aws.amazon.com/redshift/latest/dg/c_SQL_functions_leader_node_only.html>). Owners are read by
//! joining `pg_user` (Redshift documents no `pg_get_userbyid`), and nothing uses `IS DISTINCT FROM`.
//!
//! Not settled by the docs, so not relied on: whether a materialized view on the target shows in `pg_depend` (if it
//! does, it blocks; if not, a rename leaves it queryable but not refreshable until recreated, as STL_MV_STATE's
//! "Table was renamed" says).

use super::rename::{Grant, RenameFacts};
use super::{Cell, Warehouse, WarehouseError};
use crate::contract::model::TableRef;
use crate::contract::sql;

/// Privileges Redshift grants on a table (<https://docs.aws.amazon.com/redshift/latest/dg/r_GRANT.html>).
const PRIVILEGES: [&str; 8] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "REFERENCES",
    "DROP",
    "ALTER",
    "TRUNCATE",
];

/// The facts of a Redshift target (`keys_set`: the user set its design, so different keys are the point).
pub(crate) async fn facts(
    wh: &dyn Warehouse,
    target: &TableRef,
    staging: &TableRef,
    keys_set: bool,
) -> Result<RenameFacts, WarehouseError> {
    let mut rows = wh.query(facts_sql(target, staging)?).await?;
    let owner = rows.iter().find_map(|r| match r.as_slice() {
        [tag, name, ..] if tag.text() == Some("owner") => name.text().map(str::to_string),
        _ => None,
    });
    rows.extend(wh.query(grants_sql(target, staging, owner.as_deref())?).await?);
    read(target, &rows, keys_set)
}

/// The tagged rows read into facts. A row whose tag is not text (a dry run's "absent") says nothing.
pub(super) fn read(target: &TableRef, rows: &[Vec<Cell>], keys_set: bool) -> Result<RenameFacts, WarehouseError> {
    let mut f = RenameFacts {
        keys_differ: false,
        blocker: None,
        owner: None,
        primary_key: None,
        grants: Vec::new(),
        staging_grantees: Vec::new(),
    };
    let mut blockers = Vec::new();
    for row in rows {
        let (tag, a, b, c, flag) = match row.as_slice() {
            [tag, a, b, c, flag] => (tag, a, b, c, flag),
            [tag, a, b] => (tag, a, b, &Cell::Null, &Cell::Null),
            _ => continue,
        };
        let text = |x: &Cell| x.text().unwrap_or("").to_string();
        match tag.text() {
            Some("blocker") => blockers.push(text(a)),
            Some("owner") if b.int() == Some(1) => {}
            Some("keys") => {
                f.keys_differ = true;
                if !keys_set {
                    blockers.push(text(a));
                }
            }
            Some("owner") => f.owner = Some(text(a)),
            Some(kind @ ("grant" | "staging")) => {
                let Some(prefix) = grantee_prefix(&text(a)) else {
                    blockers.push(format!("it is granted to a {} (not carried by pgshift)", text(a)));
                    continue;
                };
                let grantee = match prefix {
                    "PUBLIC" => String::new(),
                    _ => text(b),
                };
                if kind == "staging" {
                    f.staging_grantees
                        .push(format!("{prefix}{}", quoted_grantee(&grantee)?));
                    continue;
                }
                let privilege = text(c).to_uppercase();
                if !PRIVILEGES.contains(&privilege.as_str()) {
                    return Err(WarehouseError::Invalid(format!(
                        "{target}: unknown privilege {privilege:?}"
                    )));
                }
                f.grants.push(Grant {
                    grantee: format!("{prefix}{}", quoted_grantee(&grantee)?),
                    privilege,
                    grantable: prefix.is_empty() && flag.int() == Some(1),
                });
            }
            _ => {}
        }
    }
    f.staging_grantees.sort();
    f.staging_grantees.dedup();
    blockers.sort();
    blockers.dedup();
    f.blocker = (!blockers.is_empty()).then(|| blockers.join("; "));
    Ok(f)
}

/// How a grantee of `SVV_RELATION_PRIVILEGES`' `identity_type` is named in a GRANT: `None` for a kind not known.
fn grantee_prefix(identity_type: &str) -> Option<&'static str> {
    match identity_type.to_ascii_lowercase().as_str() {
        "user" => Some(""),
        "role" => Some("ROLE "),
        "group" => Some("GROUP "),
        "public" => Some("PUBLIC"),
        _ => None,
    }
}

/// A grantee's name quoted (PUBLIC's is empty).
fn quoted_grantee(name: &str) -> Result<String, WarehouseError> {
    match name.is_empty() {
        true => Ok(String::new()),
        false => sql::ident(name).map_err(WarehouseError::Invalid),
    }
}

/// The two reads a Redshift replace sends to decide a rename, in order (the catalog's facts; the grants, given the
/// target's owner as the first read names it): what the tests expect the adapter to be sent.
pub fn reads(target: &TableRef, staging: &TableRef, owner: Option<&str>) -> Result<[String; 2], WarehouseError> {
    Ok([facts_sql(target, staging)?, grants_sql(target, staging, owner)?])
}

/// The catalog query (leader-node catalog tables only, no aggregate: LISTAGG runs on compute nodes only): tagged rows
/// of what blocks a rename, the target's owner (tagged `owner`, the target's always, `is_me` 1 when it is the loading
/// user) and whether its keys differ from the staging table's. Names are literals, checked.
fn facts_sql(target: &TableRef, staging: &TableRef) -> Result<String, WarehouseError> {
    let lit = |s: &str| sql::text_literal(s).map_err(WarehouseError::Invalid);
    let rel = |t: &TableRef| -> Result<String, WarehouseError> {
        Ok(format!(
            "SELECT c.oid, c.relkind, c.relowner, c.relfilenode FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {}",
            lit(&t.schema)?,
            lit(&t.name)?
        ))
    };
    let cols = |of: &str| {
        format!(
            "SELECT a.attname, a.attnum, a.attisdistkey, a.attsortkeyord FROM pg_catalog.pg_attribute a \
             JOIN {of} ON a.attrelid = {of}.oid WHERE a.attnum > 0 AND NOT a.attisdropped"
        )
    };
    Ok(format!(
        "WITH t AS ({t}), s AS ({s}), tc AS ({tc}), sc AS ({sc}) \
         SELECT 'blocker'::varchar, 'it is not a plain table'::varchar, 0 FROM t WHERE t.relkind <> 'r' \
         UNION ALL SELECT 'blocker', 'the loading user is not a superuser: it may not see every grant the new table \
         must carry, nor drop the old one', 0 FROM pg_catalog.pg_user u WHERE u.usename = current_user \
         AND NOT u.usesuper \
         UNION ALL SELECT 'owner', u.usename::varchar, CASE WHEN u.usename = current_user THEN 1 ELSE 0 END \
         FROM t JOIN pg_catalog.pg_user u ON u.usesysid = t.relowner \
         UNION ALL SELECT 'blocker', 'the view ' || v.relname || ' depends on it (a late-binding view would not)', 0 \
         FROM t JOIN pg_catalog.pg_depend dp ON dp.refobjid = t.relfilenode \
         JOIN pg_catalog.pg_depend dc ON dc.objid = dp.objid JOIN pg_catalog.pg_class v \
         ON v.relfilenode = dc.refobjid WHERE dc.deptype = 'i' AND v.relkind = 'v' AND v.oid <> t.oid \
         UNION ALL SELECT 'blocker', 'the constraint ' || k.conname || ' is on it or references it', 0 \
         FROM t JOIN pg_catalog.pg_constraint k ON k.conrelid = t.oid OR k.confrelid = t.oid \
         UNION ALL SELECT 'blocker', 'it or its columns have comments', 0 FROM t \
         JOIN pg_catalog.pg_description x ON x.objoid = t.oid \
         UNION ALL SELECT 'blocker', 'its columns are in another order than the run''s', 0 FROM tc \
         JOIN sc ON sc.attname = tc.attname WHERE sc.attnum <> tc.attnum \
         UNION ALL SELECT 'keys', 'its distribution or sort keys differ from the run''s (set diststyle, distkey and \
         sortkey for it in pgshift.toml to make the new table so)', 0 FROM t, s, pg_catalog.pg_class_info ti, \
         pg_catalog.pg_class_info si WHERE ti.reloid = t.oid AND si.reloid = s.oid \
         AND (ti.reldiststyle <> si.reldiststyle OR EXISTS (SELECT 1 FROM tc WHERE NOT EXISTS (SELECT 1 FROM sc \
         WHERE sc.attname = tc.attname AND sc.attisdistkey = tc.attisdistkey \
         AND sc.attsortkeyord = tc.attsortkeyord)))",
        t = rel(target)?,
        s = rel(staging)?,
        tc = cols("t"),
        sc = cols("s"),
    ))
}

/// The grants of the target (tagged `grant`) and of the staging table (`staging`, from default privileges), from
/// SVV_RELATION_PRIVILEGES alone; the owner's and the loading user's own are not grants to carry.
fn grants_sql(target: &TableRef, staging: &TableRef, owner: Option<&str>) -> Result<String, WarehouseError> {
    let lit = |s: &str| sql::text_literal(s).map_err(WarehouseError::Invalid);
    let not_owner = match owner {
        Some(o) => format!(" AND NOT (p.identity_type = 'user' AND p.identity_name = {})", lit(o)?),
        None => String::new(),
    };
    Ok(format!(
        "SELECT CASE WHEN p.relation_name = {tn} AND p.namespace_name = {ts} THEN 'grant' ELSE 'staging' END, \
         p.identity_type, p.identity_name, p.privilege_type, CASE WHEN p.admin_option THEN 1 ELSE 0 END \
         FROM svv_relation_privileges p WHERE ((p.namespace_name = {ts} AND p.relation_name = {tn}) \
         OR (p.namespace_name = {ss} AND p.relation_name = {sn})) \
         AND NOT (p.identity_type = 'user' AND p.identity_name = current_user){not_owner}",
        ts = lit(&target.schema)?,
        tn = lit(&target.name)?,
        ss = lit(&staging.schema)?,
        sn = lit(&staging.name)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: [&str; 4], flag: i64) -> Vec<Cell> {
        let mut r: Vec<Cell> = cells.iter().map(|c| Cell::Text(c.to_string())).collect();
        r.push(Cell::Int(flag));
        r
    }

    #[test]
    fn the_tagged_rows_become_blockers_an_owner_and_grants_to_carry() {
        let t = TableRef::new("sales", "orders");
        let f = read(
            &t,
            &[
                vec![
                    Cell::Text("keys".into()),
                    Cell::Text("its distribution or sort keys differ".into()),
                    Cell::Int(0),
                ],
                vec![Cell::Text("owner".into()), Cell::Text("etl_owner".into()), Cell::Int(0)],
                row(["grant", "user", "Analyst", "select"], 1),
                row(["grant", "group", "bi", "SELECT"], 1),
                row(["grant", "role", "reader", "SELECT"], 0),
                row(["grant", "public", "", "SELECT"], 0),
                row(["staging", "group", "bi", "SELECT"], 0),
            ],
            true,
        )
        .unwrap();
        // The user set the design: different keys are what the rename is for.
        assert_eq!((f.blocker.as_deref(), f.keys_differ), (None, true));
        assert_eq!(f.owner.as_deref(), Some("etl_owner"));
        let grants: Vec<(&str, &str, bool)> = f
            .grants
            .iter()
            .map(|g| (g.grantee.as_str(), g.privilege.as_str(), g.grantable))
            .collect();
        assert_eq!(
            grants,
            [
                ("\"Analyst\"", "SELECT", true),
                // A group has no grant option, whatever the row says.
                ("GROUP \"bi\"", "SELECT", false),
                ("ROLE \"reader\"", "SELECT", false),
                ("PUBLIC", "SELECT", false),
            ]
        );
        assert_eq!(f.staging_grantees, ["GROUP \"bi\""]);
        // A dry run's "absent" answer says nothing: nothing blocks, nothing to carry.
        let absent = read(&t, &[vec![Cell::Int(0)]], false).unwrap();
        assert_eq!((absent.blocker, absent.grants.len()), (None, 0));
        let blocked = read(
            &t,
            &[
                vec![
                    Cell::Text("blocker".into()),
                    Cell::Text("the view v depends on it".into()),
                    Cell::Int(0),
                ],
                row(["grant", "datashare", "x", "SELECT"], 0),
                vec![
                    Cell::Text("keys".into()),
                    Cell::Text("its keys differ".into()),
                    Cell::Int(0),
                ],
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            blocked.blocker.as_deref(),
            Some("it is granted to a datashare (not carried by pgshift); its keys differ; the view v depends on it")
        );
        assert!(read(&t, &[row(["grant", "user", "a", "USAGE"], 0)], false).is_err());
        // The owner who is the loading user is nobody to give the table to.
        let mine = read(
            &t,
            &[vec![Cell::Text("owner".into()), Cell::Text("me".into()), Cell::Int(1)]],
            false,
        )
        .unwrap();
        assert_eq!(mine.owner, None);
        let staging = TableRef::new("sales", "orders__pgshift_x");
        let (facts, grants) = (
            facts_sql(&t, &staging).unwrap(),
            grants_sql(&t, &staging, Some("etl_owner")).unwrap(),
        );
        // Leader-node catalogs and the SVV view never in one query; no function Redshift does not document.
        assert!(facts.contains("reldiststyle") && !facts.contains("svv_"), "{facts}");
        assert!(
            grants.contains("svv_relation_privileges") && !grants.contains("pg_catalog."),
            "{grants}"
        );
        for sql in [&facts, &grants] {
            assert!(
                !sql.contains("pg_get_userbyid") && !sql.contains("IS DISTINCT FROM"),
                "{sql}"
            );
        }
    }
}
