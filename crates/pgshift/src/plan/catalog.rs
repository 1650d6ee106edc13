//! What the planner reads of the source besides the relations: the server's identity, and the columns with few
//! enough distinct values to dictionary-encode.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::contract::plan::SourceInfo;

/// Columns whose `pg_stats.n_distinct` is at most $2 (a negative n_distinct is a fraction of the rows).
const LOW_CARDINALITY_SQL: &str = "
SELECT c.oid, s.attname::text
FROM pg_catalog.pg_stats s
JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
WHERE c.oid = ANY($1)
  AND CASE WHEN s.n_distinct >= 0 THEN s.n_distinct ELSE -s.n_distinct * greatest(c.reltuples, 0) END BETWEEN 1 AND $2
ORDER BY c.oid, s.attname";

/// The selected tables whose row-level security policies apply to this role: RLS enabled, and the role neither a
/// superuser, nor `BYPASSRLS`, nor (unless the table forces RLS on its owner) a member of the owning role
/// (<https://www.postgresql.org/docs/current/ddl-rowsecurity.html>). With each, its policies' names.
const ROW_SECURITY_SQL: &str = "
SELECT c.oid, pg_catalog.string_agg(p.polname::text, ', ' ORDER BY p.polname) AS policies, current_user::text,
       c.relforcerowsecurity AND pg_catalog.pg_has_role(c.relowner, 'USAGE') AS forced_on_owner
FROM pg_catalog.pg_class c
LEFT JOIN pg_catalog.pg_policy p ON p.polrelid = c.oid
WHERE c.oid = ANY($1) AND c.relrowsecurity
  AND NOT (SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
  AND (c.relforcerowsecurity OR NOT pg_catalog.pg_has_role(c.relowner, 'USAGE'))
GROUP BY c.oid, c.relforcerowsecurity, c.relowner";

/// A table whose rows a row-level security policy would hide from this role.
pub(super) struct Hidden {
    pub(super) oid: u32,
    /// The policies' names (empty: RLS without a policy hides every row).
    pub(super) policies: String,
    pub(super) role: String,
    /// The role owns the table, which forces RLS on its owner (`FORCE ROW LEVEL SECURITY`).
    pub(super) forced_on_owner: bool,
}

/// Tables (by oid) whose rows a row-level security policy would hide from this role.
pub(super) async fn row_security(client: &Client, oids: &[u32]) -> Result<Vec<Hidden>, tokio_postgres::Error> {
    let rows = client.query(ROW_SECURITY_SQL, &[&oids]).await?;
    Ok(rows
        .iter()
        .map(|r| Hidden {
            oid: r.get(0),
            policies: r.get::<_, Option<String>>(1).unwrap_or_default(),
            role: r.get(2),
            forced_on_owner: r.get(3),
        })
        .collect())
}

/// The server's version and database, and its system identifier when the role may read it.
pub(super) async fn source_info(client: &Client) -> Result<SourceInfo, tokio_postgres::Error> {
    let info = client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version'), \
             pg_catalog.current_setting('server_version_num')::pg_catalog.int4, pg_catalog.current_database()::text",
            &[],
        )
        .await?;
    let system_identifier = client
        .query_one(
            "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
            &[],
        )
        .await
        .ok()
        .map(|r| r.get::<_, String>(0));
    Ok(SourceInfo {
        server_version: info.get(0),
        server_version_num: info.get(1),
        database: info.get(2),
        system_identifier,
    })
}

/// Per relation oid, the columns with at most `max_distinct` distinct values (`pg_stats.n_distinct`).
pub(super) async fn low_cardinality(
    client: &Client,
    oids: &[u32],
    max_distinct: u32,
) -> Result<HashMap<u32, Vec<String>>, tokio_postgres::Error> {
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    for r in client
        .query(LOW_CARDINALITY_SQL, &[&oids, &(max_distinct as f32)])
        .await?
    {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}
