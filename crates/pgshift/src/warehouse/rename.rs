//! What a `replace` by rename would lose of a PostgreSQL target, read from its catalog: the staging table (filled by
//! COPY) becomes the target by `DROP TABLE` + `ALTER TABLE … RENAME`, which is as fast as the COPY itself, but only
//! when nothing hangs on the old table that the new one would not carry. The owner, the grants and the primary key
//! are carried over; anything else (a view, a foreign key, an index, a trigger, a policy, a comment, a default,
//! storage options, columns that differ from the run's in order, type, nullability or collation) makes the loader
//! fall back to `DELETE` + `INSERT … SELECT`, which keeps the table itself, and say why.

use super::{Cell, Dialect, Warehouse, WarehouseError};
use crate::contract::model::TableRef;
use crate::contract::sql;

/// A target's facts that decide and shape a swap by rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenameFacts {
    /// Whether the target's distribution or sort keys differ from the run's (Redshift).
    pub(crate) keys_differ: bool,
    /// Why a rename would lose something of the target (`None`: nothing would be lost).
    pub(crate) blocker: Option<String>,
    /// The target's owner when it is not the loading user (the staging table is given to it).
    pub(crate) owner: Option<String>,
    /// The target's primary key: its constraint name and columns, in key order.
    pub(crate) primary_key: Option<(String, Vec<String>)>,
    /// The target's grants to others than its owner, to give the staging table.
    pub(crate) grants: Vec<Grant>,
    /// Roles the staging table was granted to at its creation (default privileges), to take back first, as a GRANT
    /// names them.
    pub(crate) staging_grantees: Vec<String>,
}

/// One privilege of a grantee on a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    /// As a GRANT names it: `PUBLIC`, a quoted role, or (Redshift) `GROUP "g"` / `ROLE "r"`.
    pub(crate) grantee: String,
    pub(crate) privilege: String,
    pub(crate) grantable: bool,
}

/// Table privileges PostgreSQL's `aclexplode` names; any other text is refused, never written into a GRANT.
const PRIVILEGES: [&str; 8] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "MAINTAIN",
];

/// The target's facts that decide a swap by rename (`keys_set`: the user set the table's design, Redshift).
pub(crate) async fn rename_facts(
    wh: &dyn Warehouse,
    target: &TableRef,
    staging: &TableRef,
    keys_set: bool,
) -> Result<Option<RenameFacts>, WarehouseError> {
    if wh.dialect() == Dialect::Redshift {
        return super::rename_redshift::facts(wh, target, staging, keys_set)
            .await
            .map(Some);
    }
    let (t, s) = (regclass(target)?, regclass(staging)?);
    let row = wh.query(facts_sql(&t, &s)).await?;
    let [blocker, owner, pk_name] = match row.first().map(Vec::as_slice) {
        Some([b, o, p]) => [b.text(), o.text(), p.text()].map(|c| c.map(str::to_string)),
        _ => {
            return Err(WarehouseError::Invalid(format!(
                "{target}: the catalog query returned no row"
            )))
        }
    };
    let pk_columns = texts(wh.query(primary_key_sql(&t)).await?);
    let mut grants = Vec::new();
    let mut staging_grantees = Vec::new();
    for row in wh.query(acl_sql(&t, &s)).await? {
        if let [of, grantee, privilege, grantable] = row.as_slice() {
            let grantee = match grantee.text().unwrap_or("") {
                "" => "PUBLIC".to_string(),
                name => sql::ident(name).map_err(WarehouseError::Invalid)?,
            };
            let privilege = privilege.text().unwrap_or("");
            if of.text() == Some("staging") {
                staging_grantees.push(grantee);
            } else if PRIVILEGES.contains(&privilege) {
                let grantable = grantable.int() == Some(1);
                grants.push(Grant {
                    grantee,
                    privilege: privilege.to_string(),
                    grantable,
                });
            } else {
                return Err(WarehouseError::Invalid(format!(
                    "{target}: unknown privilege {privilege:?}"
                )));
            }
        }
    }
    staging_grantees.dedup();
    Ok(Some(RenameFacts {
        keys_differ: false,
        blocker,
        owner,
        primary_key: pk_name.map(|n| (n, pk_columns)),
        grants,
        staging_grantees,
    }))
}

fn texts(rows: Vec<Vec<Cell>>) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.first().and_then(Cell::text).map(str::to_string))
        .collect()
}

/// `to_regclass('"schema"."name"')`: the quoted name as a checked literal.
fn regclass(t: &TableRef) -> Result<String, WarehouseError> {
    let name = sql::table(t).map_err(WarehouseError::Invalid)?;
    Ok(format!(
        "to_regclass({})",
        sql::text_literal(&name).map_err(WarehouseError::Invalid)?
    ))
}

/// One row: what a rename would lose (or NULL), the owner when it is not the loading user, the primary key's name.
fn facts_sql(target: &str, staging: &str) -> String {
    format!(
        "WITH t AS (SELECT * FROM pg_class WHERE oid = {target}), \
         cols AS (SELECT (SELECT array_agg(format('%s %s %s %s %s %s %s %s', a.attname, format_type(a.atttypid, a.atttypmod), \
                 a.attnotnull, a.attcollation, a.attstorage, a.attcompression, a.atthasdef OR a.attidentity <> '' \
                 OR a.attgenerated <> '', a.attacl IS NOT NULL OR a.attoptions IS NOT NULL) ORDER BY a.attnum) \
                 FROM pg_attribute a WHERE a.attrelid = r AND a.attnum > 0 AND NOT a.attisdropped) AS sig \
                 FROM (VALUES ({target}, 't'), ({staging}, 's')) v(r, k) ORDER BY k), \
         deps AS (SELECT string_agg(DISTINCT pg_describe_object(d.classid, d.objid, 0), ', ') AS list \
                 FROM pg_depend d, t WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid \
                 AND NOT (d.classid = 'pg_type'::regclass AND d.deptype = 'i') \
                 AND NOT (d.classid = 'pg_class'::regclass AND d.objid = t.reltoastrelid) \
                 AND NOT (d.classid = 'pg_constraint'::regclass AND EXISTS (SELECT 1 FROM pg_constraint p \
                          WHERE p.oid = d.objid AND p.contype IN ('p', 'n')))) \
         SELECT CASE \
           WHEN t.relkind <> 'r' THEN 'it is not a plain table' \
           WHEN t.relpersistence <> 'p' THEN 'it is unlogged or temporary' \
           WHEN NOT pg_has_role(t.relowner, 'MEMBER') THEN 'the loading user may not act as its owner' \
           WHEN (SELECT list FROM deps) IS NOT NULL THEN (SELECT list FROM deps) || ' depend on it' \
           WHEN t.reloptions IS NOT NULL OR t.reltablespace <> 0 THEN 'it has storage options or its own tablespace' \
           WHEN t.relrowsecurity OR t.relforcerowsecurity THEN 'it has row-level security' \
           WHEN t.relreplident <> 'd' THEN 'its replica identity is set' \
           WHEN EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = t.oid OR i.inhparent = t.oid) \
             THEN 'it is in an inheritance tree' \
           WHEN EXISTS (SELECT 1 FROM pg_description d WHERE d.objoid = t.oid AND d.classoid = 'pg_class'::regclass) \
             THEN 'it or its columns have comments' \
           WHEN (SELECT sig FROM cols LIMIT 1) IS DISTINCT FROM (SELECT sig FROM cols OFFSET 1) \
             THEN 'its columns differ from the run''s (order, type, nullability, collation, storage, defaults or grants)' \
           END::text, \
           CASE WHEN pg_get_userbyid(t.relowner) <> current_user THEN pg_get_userbyid(t.relowner)::text END, \
           (SELECT conname::text FROM pg_constraint WHERE conrelid = t.oid AND contype = 'p') \
         FROM t"
    )
}

fn primary_key_sql(target: &str) -> String {
    format!(
        "SELECT a.attname::text FROM pg_constraint p CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY k(att, n) \
         JOIN pg_attribute a ON a.attrelid = p.conrelid AND a.attnum = k.att \
         WHERE p.conrelid = {target} AND p.contype = 'p' ORDER BY k.n"
    )
}

/// Grants of the target and of the staging table to others than their owners: `target|staging`, the grantee (`''`
/// for PUBLIC), the privilege, whether grantable.
fn acl_sql(target: &str, staging: &str) -> String {
    format!(
        "SELECT v.k, coalesce(pg_get_userbyid(nullif(a.grantee, 0))::text, ''), a.privilege_type::text, \
         CASE WHEN a.is_grantable THEN 1 ELSE 0 END \
         FROM (VALUES ({target}, 'target'), ({staging}, 'staging')) v(r, k) JOIN pg_class c ON c.oid = v.r \
         CROSS JOIN LATERAL aclexplode(c.relacl) a WHERE a.grantee <> c.relowner ORDER BY 1, 2, 3"
    )
}
