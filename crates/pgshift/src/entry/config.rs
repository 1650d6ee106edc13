//! The Lambdas' configuration: read from the environment once, at cold start, and validated there, so a bad setting
//! fails the first invocation with its name rather than a run halfway through. Database passwords come from Secrets
//! Manager by ARN and are never logged (connectors print no password).
//!
//! | variable | used by | meaning |
//! |---|---|---|
//! | `PGSHIFT_SOURCE` | planner, extractor | source connection string (`postgres://user@host:5432/db?sslmode=verify-full&sslrootcert=/opt/rds-global-bundle.pem`; see [`crate::pgclient::tls`]) |
//! | `PGSHIFT_SOURCE_SECRET_ARN` | planner, extractor | a Secrets Manager secret with `username`, `password` and optionally `host`, `port`, `dbname` (the RDS secret shape); overrides those parts of `PGSHIFT_SOURCE` |
//! | `PGSHIFT_STAGE` | planner | default stage URL (`s3://bucket/prefix`) |
//! | `PGSHIFT_TABLES`, `PGSHIFT_EXCLUDE` | planner | default table patterns, separated by spaces or commas |
//! | `PGSHIFT_INCREMENTAL` | planner | `diff` or `full` (the default): every run moves only what changed since the last (docs/incremental.md) |
//! | `PGSHIFT_MAX_CONCURRENCY`, `PGSHIFT_SLICES` | planner | extractors at once; Redshift slices |
//! | `PGSHIFT_PLAN_DEFAULTS` | planner | a JSON plan request the variables above then override (settings, writer, load options) |
//! | `PGSHIFT_WAREHOUSE` | loader | warehouse URL (`redshift://…`, `redshift-serverless://…`, `postgres://…`) |
//! | `PGSHIFT_WAREHOUSE_SECRET_ARN` | loader | for a `postgres://` warehouse: its credentials, as for the source |
//! | `PGSHIFT_STACK` | planner, loader | the `pgshift:stack` tag of restored instances: the sweep deletes only this stack's |
//! | `PGSHIFT_RESTORE_CLASS`, `PGSHIFT_RESTORE_SUBNET_GROUP`, `PGSHIFT_RESTORE_SECURITY_GROUPS`, `PGSHIFT_RESTORE_PARAMETER_GROUP`, `PGSHIFT_RESTORE_CLUSTER_PARAMETER_GROUP` | planner | the restored snapshot's instance class and networking |
//! | `PGSHIFT_RESTORE_TIMEOUT_MINUTES`, `PGSHIFT_RESTORE_POLL_SECONDS` | planner | how long a restore may take, checked how often |
//! | `PGSHIFT_SWEEP_AFTER_HOURS` | loader | restored instances of this stack older than this are orphans the sweep deletes |
//! | `PGSHIFT_EXTRACTOR_MEMORY_MB` | loader | the extractor's memory, for the run report's cost (default 2048, the template's) |
//! | `PGSHIFT_EVENT_BUS` | loader | the EventBridge bus the run's events go to (its name or ARN; `default`) |
//! | `PGSHIFT_OPENLINEAGE_URL` | loader | an OpenLineage endpoint the run's lineage goes to (none when unset) |
//! | `PGSHIFT_LINEAGE_SOURCE` | loader | the source as lineage names it (`postgres://host:port/db`: the live source a snapshot is of) |

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::contract::plan::PlanRequest;
use crate::contract::snapshot::RestoreSettings;
use crate::source::PgConnector;
use crate::warehouse::Warehouse;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set: {hint}")]
    Missing { var: &'static str, hint: &'static str },
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("secret {arn} ({var}): {reason}")]
    Secret {
        var: &'static str,
        arn: String,
        reason: String,
    },
}

/// Where settings come from: the process environment, or a map in tests.
pub trait Env {
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment; empty values count as unset.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for std::collections::BTreeMap<&str, &str> {
    fn get(&self, var: &str) -> Option<String> {
        std::collections::BTreeMap::get(self, var).map(|v| v.to_string())
    }
}

/// Reads a secret's string value by ARN.
pub trait SecretReader: Send + Sync {
    fn secret_string<'a>(&'a self, arn: &'a str) -> BoxFuture<'a, Result<String, String>>;
}

/// AWS Secrets Manager. The client is built on first use, from the standard AWS environment (the Lambda's role):
/// a function configured without a secret never builds it.
#[derive(Default)]
pub struct SecretsManager(tokio::sync::OnceCell<aws_sdk_secretsmanager::Client>);

impl SecretsManager {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self(tokio::sync::OnceCell::new_with(Some(client)))
    }
}

impl SecretReader for SecretsManager {
    fn secret_string<'a>(&'a self, arn: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let client = self
                .0
                .get_or_init(|| async {
                    let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                    aws_sdk_secretsmanager::Client::new(&conf)
                })
                .await;
            let out = client
                .get_secret_value()
                .secret_id(arn)
                .send()
                .await
                .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string())?;
            out.secret_string()
                .map(str::to_string)
                .ok_or_else(|| "the secret has no string value".to_string())
        })
    }
}

/// The RDS secret shape (what RDS-managed and rotation-template secrets hold).
#[derive(Deserialize)]
struct DbSecret {
    username: String,
    password: String,
    host: Option<String>,
    port: Option<serde_json::Value>,
    dbname: Option<String>,
}

/// A connection config from a URL variable and an optional secret variable (the secret's parts win).
async fn pg_config(
    env: &dyn Env,
    secrets: &dyn SecretReader,
    url_var: &'static str,
    secret_var: &'static str,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { var: url_var, reason };
    let (mut config, tls) = match env.get(url_var) {
        Some(url) => {
            let p = crate::pgclient::tls::config(&url).map_err(invalid)?;
            (p.config, p.tls)
        }
        None => (
            tokio_postgres::Config::new(),
            crate::pgclient::tls::unverified().map_err(invalid)?,
        ),
    };
    let Some(arn) = env.get(secret_var) else {
        if env.get(url_var).is_none() {
            return Err(ConfigError::Missing {
                var: url_var,
                hint: "a connection string, or its secret's ARN in the _SECRET_ARN variable",
            });
        }
        return Ok((config, tls));
    };
    let bad = |reason: String| ConfigError::Secret {
        var: secret_var,
        arn: arn.clone(),
        reason,
    };
    let text = secrets.secret_string(&arn).await.map_err(bad)?;
    let s: DbSecret = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "expected JSON with username and password ({})",
            e.classify_name()
        ))
    })?;
    config.user(&s.username).password(s.password);
    if let Some(h) = s.host {
        config.host(&h);
    }
    if let Some(p) = s.port {
        let port = match &p {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| bad(format!("port {p} is not a port number")))?;
        config.port(port);
    }
    if let Some(d) = s.dbname {
        config.dbname(&d);
    }
    if config.get_hosts().is_empty() {
        return Err(bad(format!("no host: set it in {url_var} or in the secret")));
    }
    Ok((config, tls))
}

/// serde_json's error category, without the input it quotes (which could hold the password).
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// The source database of the planner and the extractor.
pub async fn source(env: &dyn Env, secrets: &dyn SecretReader) -> Result<PgConnector, ConfigError> {
    let (config, tls) = pg_config(env, secrets, "PGSHIFT_SOURCE", "PGSHIFT_SOURCE_SECRET_ARN").await?;
    Ok(PgConnector::from_parts(config, tls))
}

fn list(v: &str) -> Vec<String> {
    v.split([' ', ',', '\n', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn number<T: std::str::FromStr>(env: &dyn Env, var: &'static str) -> Result<Option<T>, ConfigError> {
    env.get(var)
        .map(|v| {
            v.trim().parse().map_err(|_| ConfigError::Invalid {
                var,
                reason: format!("{v:?} is not a positive whole number"),
            })
        })
        .transpose()
}

/// The planner's defaults: what a run started by an RDS event plans, and what a manual input overrides.
pub fn plan_defaults(env: &dyn Env) -> Result<PlanRequest, ConfigError> {
    let mut req: PlanRequest = match env.get("PGSHIFT_PLAN_DEFAULTS") {
        Some(json) => serde_json::from_str(&json).map_err(|e| ConfigError::Invalid {
            var: "PGSHIFT_PLAN_DEFAULTS",
            reason: e.to_string(),
        })?,
        None => PlanRequest::default(),
    };
    if let Some(s) = env.get("PGSHIFT_STAGE") {
        if !(s.starts_with("s3://") || s.starts_with("file:///")) {
            return Err(ConfigError::Invalid {
                var: "PGSHIFT_STAGE",
                reason: format!("{s:?}: use s3://bucket/prefix (or file:///dir)"),
            });
        }
        req.stage = s;
    }
    if let Some(t) = env.get("PGSHIFT_TABLES") {
        req.tables = list(&t);
    }
    match env.get("PGSHIFT_WAREHOUSE_KIND").as_deref().map(str::trim) {
        None | Some("") => {}
        Some("redshift") => req.warehouse = crate::contract::load::WarehouseLimits::redshift(),
        Some(other) => {
            return Err(ConfigError::Invalid {
                var: "PGSHIFT_WAREHOUSE_KIND",
                reason: format!("{other:?}: the deployed loader's warehouse is redshift"),
            })
        }
    }
    if let Some(t) = env.get("PGSHIFT_EXCLUDE") {
        req.exclude = list(&t);
    }
    if let Some(m) = env.get("PGSHIFT_INCREMENTAL").filter(|m| !m.trim().is_empty()) {
        req.incremental = m.parse().map_err(|reason| ConfigError::Invalid {
            var: "PGSHIFT_INCREMENTAL",
            reason,
        })?;
    }
    for p in req.tables.iter().chain(&req.exclude) {
        crate::contract::model::TableRef::parse(p).map_err(|reason| ConfigError::Invalid {
            var: "PGSHIFT_TABLES",
            reason,
        })?;
    }
    if let Some(n) = number::<u32>(env, "PGSHIFT_MAX_CONCURRENCY")? {
        req.settings.max_concurrency = n;
    }
    if let Some(n) = number::<u32>(env, "PGSHIFT_SLICES")? {
        req.settings.slices = n;
    }
    Ok(req)
}

/// The planner's defaults with how it restores snapshots (`PGSHIFT_RESTORE_*`, `PGSHIFT_STACK`).
pub fn planner_defaults(env: &dyn Env) -> Result<crate::entry::trigger::PlannerDefaults, ConfigError> {
    Ok(crate::entry::trigger::PlannerDefaults {
        request: plan_defaults(env)?,
        restore: restore_settings(env)?,
    })
}

/// How snapshots are restored and swept, from the environment; unset or empty variables keep the defaults.
pub fn restore_settings(env: &dyn Env) -> Result<RestoreSettings, ConfigError> {
    let mut r = RestoreSettings::default();
    let text = |var: &str| env.get(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if let Some(v) = text("PGSHIFT_STACK") {
        r.stack = v;
    }
    if let Some(v) = text("PGSHIFT_RESTORE_CLASS") {
        if !v.starts_with("db.") {
            return Err(ConfigError::Invalid {
                var: "PGSHIFT_RESTORE_CLASS",
                reason: format!("{v:?} is not a DB instance class (db.r6g.large)"),
            });
        }
        r.instance_class = v;
    }
    r.subnet_group = text("PGSHIFT_RESTORE_SUBNET_GROUP");
    r.parameter_group = text("PGSHIFT_RESTORE_PARAMETER_GROUP");
    r.cluster_parameter_group = text("PGSHIFT_RESTORE_CLUSTER_PARAMETER_GROUP");
    if let Some(v) = text("PGSHIFT_RESTORE_SECURITY_GROUPS") {
        r.security_groups = list(&v);
    }
    if let Some(v) = text("PGSHIFT_SOURCE_IDENTIFIERS") {
        r.sources = list(&v);
    }
    if let Some(n) = number::<u32>(env, "PGSHIFT_RESTORE_TIMEOUT_MINUTES")? {
        r.timeout_seconds = n.max(1).saturating_mul(60);
    }
    if let Some(n) = number::<u32>(env, "PGSHIFT_RESTORE_POLL_SECONDS")? {
        r.poll_seconds = n.max(1);
    }
    if let Some(n) = number::<u32>(env, "PGSHIFT_SWEEP_AFTER_HOURS")? {
        r.sweep_after_hours = n.max(1);
    }
    Ok(r)
}

/// The extractor's configured memory in MB, as the run report prices its GB-seconds (the template sets it beside the
/// extractor's `MemorySize`).
pub fn extractor_memory_mb(env: &dyn Env) -> Result<u32, ConfigError> {
    match env.get("PGSHIFT_EXTRACTOR_MEMORY_MB") {
        None => Ok(2048),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|m| (128..=10_240).contains(m))
            .ok_or(ConfigError::Invalid {
                var: "PGSHIFT_EXTRACTOR_MEMORY_MB",
                reason: format!("{v:?} is not a Lambda memory size in MB (128 to 10240)"),
            }),
    }
}

/// How long one loader invocation may go on setting tables up before the next check takes the rest
/// (`PGSHIFT_LOADER_BUDGET_SECONDS`, default 420): with one Data API statement waited on for at most 300 s
/// ([`crate::warehouse::redshift::Polling`]), an invocation ends well inside the function's 900 s timeout.
pub fn loader_budget(env: &dyn Env) -> Result<std::time::Duration, ConfigError> {
    match env.get("PGSHIFT_LOADER_BUDGET_SECONDS") {
        None => Ok(std::time::Duration::from_secs(420)),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= 600)
            .map(std::time::Duration::from_secs)
            .ok_or(ConfigError::Invalid {
                var: "PGSHIFT_LOADER_BUDGET_SECONDS",
                reason: format!("{v:?} is not a number of seconds from 0 to 600 (the loader's timeout is 900 s)"),
            }),
    }
}

/// The loader's warehouse.
pub async fn warehouse(env: &dyn Env, secrets: &dyn SecretReader) -> Result<Arc<dyn Warehouse>, ConfigError> {
    let url = env.get("PGSHIFT_WAREHOUSE").ok_or(ConfigError::Missing {
        var: "PGSHIFT_WAREHOUSE",
        hint: "redshift://<cluster>/<db>?…, redshift-serverless://<workgroup>/<db>?… or postgres://…",
    })?;
    let invalid = |e: crate::warehouse::WarehouseError| ConfigError::Invalid {
        var: "PGSHIFT_WAREHOUSE",
        reason: e.to_string(),
    };
    if crate::warehouse::Kind::of(&url).map_err(invalid)? == crate::warehouse::Kind::Postgres {
        let (config, tls) = pg_config(env, secrets, "PGSHIFT_WAREHOUSE", "PGSHIFT_WAREHOUSE_SECRET_ARN").await?;
        return Ok(Arc::new(crate::warehouse::postgres::PgWarehouse::from_parts(
            config, tls,
        )));
    }
    crate::warehouse::warehouse(&url).await.map_err(invalid)
}

/// What the loader tells when a run ends (`PGSHIFT_STACK`, `PGSHIFT_EVENT_BUS`, `PGSHIFT_OPENLINEAGE_URL` with
/// `PGSHIFT_LINEAGE_SOURCE` and `PGSHIFT_WAREHOUSE`): events to EventBridge and to the run's `events.jsonl`, EMF
/// metrics on standard output, lineage when an endpoint is set. Told by the Finish state.
pub async fn announce(
    env: &dyn Env,
    stages: Arc<dyn crate::stage::StageOpener>,
) -> Result<crate::entry::announce::Announce, ConfigError> {
    let text = |var: &str| env.get(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let stack = text("PGSHIFT_STACK").unwrap_or_else(|| "pgshift".into());
    let mut sinks: Vec<Arc<dyn crate::events::EventSink>> = vec![Arc::new(crate::events::StageEvents { stages })];
    if let Some(bus) = text("PGSHIFT_EVENT_BUS") {
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        sinks.push(Arc::new(crate::events::eventbridge::EventBridgeEvents {
            client: aws_sdk_eventbridge::Client::new(&conf),
            bus,
        }));
    }
    let lineage = match text("PGSHIFT_OPENLINEAGE_URL") {
        None => None,
        Some(url) => {
            let invalid = |var: &'static str| move |reason: String| ConfigError::Invalid { var, reason };
            let source = text("PGSHIFT_LINEAGE_SOURCE").ok_or(ConfigError::Missing {
                var: "PGSHIFT_LINEAGE_SOURCE",
                hint: "the source as lineage names it, postgres://host:port/db (with PGSHIFT_OPENLINEAGE_URL)",
            })?;
            let warehouse = text("PGSHIFT_WAREHOUSE").unwrap_or_default();
            let region = text("AWS_REGION");
            let ds = crate::entry::announce::datasets(&source, &warehouse, &stack, region.as_deref())
                .map_err(invalid("PGSHIFT_LINEAGE_SOURCE"))?;
            Some((url, ds))
        }
    };
    Ok(crate::entry::announce::Announce {
        stack,
        sinks: crate::events::Fanout(sinks),
        metrics: true,
        lineage,
        at_finish: true,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_loaders_budget_is_seconds_below_its_timeout() {
        let env = |v: &'static str| BTreeMap::from([("PGSHIFT_LOADER_BUDGET_SECONDS", v)]);
        assert_eq!(
            loader_budget(&BTreeMap::new()).ok(),
            Some(std::time::Duration::from_secs(420))
        );
        assert_eq!(loader_budget(&env("0")).ok(), Some(std::time::Duration::ZERO));
        for bad in ["900", "-1", "ten"] {
            let e = loader_budget(&env(bad)).expect_err(bad).to_string();
            assert!(
                e.contains("PGSHIFT_LOADER_BUDGET_SECONDS") && e.contains("900 s"),
                "{e}"
            );
        }
    }

    struct Fake(&'static str);

    impl SecretReader for Fake {
        fn secret_string<'a>(&'a self, arn: &'a str) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async move {
                if arn.ends_with(":missing") {
                    Err("ResourceNotFoundException".into())
                } else {
                    Ok(self.0.to_string())
                }
            })
        }
    }

    const RDS_SECRET: &str = r#"{"username":"shift","password":"s3cr3t!","engine":"postgres",
        "host":"db.example.internal","port":5433,"dbname":"sales"}"#;

    #[tokio::test]
    async fn a_secret_supplies_the_credentials_and_is_never_printed() {
        let env = BTreeMap::from([
            ("PGSHIFT_SOURCE", "postgres://ignored@placeholder/x?sslmode=disable"),
            (
                "PGSHIFT_SOURCE_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:1:secret:src",
            ),
        ]);
        let c = source(&env, &Fake(RDS_SECRET)).await.expect("config");
        let shown = format!("{c:?}");
        assert!(shown.contains("db.example.internal") && shown.contains("5433") && shown.contains("shift"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[tokio::test]
    async fn bad_settings_are_named() {
        let none: BTreeMap<&str, &str> = BTreeMap::new();
        let e = source(&none, &Fake(RDS_SECRET)).await.expect_err("missing");
        assert!(e.to_string().contains("PGSHIFT_SOURCE"), "{e}");
        let env = BTreeMap::from([(
            "PGSHIFT_SOURCE_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:1:secret:missing",
        )]);
        let e = source(&env, &Fake(RDS_SECRET)).await.expect_err("missing secret");
        assert!(
            e.to_string().contains("ResourceNotFoundException") && e.to_string().contains(":missing"),
            "{e}"
        );
        let e = source(&env_with_secret(), &Fake(r#"{"username": "u", "password": "leak-me" "#))
            .await
            .expect_err("bad JSON");
        assert!(!e.to_string().contains("leak-me"), "{e}");
        let e = source(&env_with_secret(), &Fake(r#"{"username": "u", "password": "p"}"#))
            .await
            .expect_err("no host anywhere");
        assert!(e.to_string().contains("no host"), "{e}");
        let e = plan_defaults(&BTreeMap::from([("PGSHIFT_STAGE", "bucket/prefix")])).expect_err("stage");
        assert!(e.to_string().contains("PGSHIFT_STAGE"), "{e}");
        let e = plan_defaults(&BTreeMap::from([("PGSHIFT_MAX_CONCURRENCY", "lots")])).expect_err("number");
        assert!(e.to_string().contains("PGSHIFT_MAX_CONCURRENCY"), "{e}");
        let e = warehouse(&none, &Fake(RDS_SECRET))
            .await
            .err()
            .expect("missing warehouse");
        assert!(e.to_string().contains("PGSHIFT_WAREHOUSE"), "{e}");
        let e = warehouse(
            &BTreeMap::from([("PGSHIFT_WAREHOUSE", "redshift://c/db")]),
            &Fake(RDS_SECRET),
        )
        .await
        .err()
        .expect("no iam_role");
        assert!(e.to_string().contains("iam_role"), "{e}");
    }

    fn env_with_secret() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([(
            "PGSHIFT_SOURCE_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:1:secret:src",
        )])
    }

    #[test]
    fn plan_defaults_come_from_the_environment() {
        let env = BTreeMap::from([
            (
                "PGSHIFT_PLAN_DEFAULTS",
                r#"{"tables": ["x.*"], "stage": "s3://a/b", "settings": {"parts": 4}}"#,
            ),
            ("PGSHIFT_TABLES", "sales.*, public.orders"),
            ("PGSHIFT_MAX_CONCURRENCY", "8"),
            ("PGSHIFT_INCREMENTAL", "diff"),
        ]);
        let d = plan_defaults(&env).expect("defaults");
        assert_eq!(d.tables, vec!["sales.*".to_string(), "public.orders".to_string()]);
        assert_eq!(d.incremental, crate::contract::incremental::Incremental::Diff);
        let bad = BTreeMap::from([("PGSHIFT_INCREMENTAL", "sometimes")]);
        assert!(plan_defaults(&bad)
            .unwrap_err()
            .to_string()
            .contains("PGSHIFT_INCREMENTAL"));
        assert_eq!(
            (d.stage.as_str(), d.settings.parts, d.settings.max_concurrency),
            ("s3://a/b", Some(4), 8)
        );
    }
}
