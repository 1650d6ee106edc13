//! The flags `plan`, `run`, `start` and `load` share, `pgshift.toml`, and the one way they become a run's request:
//! the flags given (only those), as the fields of a request, merged over `pgshift.toml` merged over the defaults, by
//! [`PlanRequest::merged`], the merge the deployed planner applies to a run's input over its own defaults. `start`
//! sends the same fields as the execution's input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, ValueEnum};
use pgshift::contract::load::{Atomicity, LoadMode, LoadOptions, LongText, SchemaEvolution, WarehouseDialect};
use pgshift::contract::model::{Compression, WriterSettings};
use pgshift::contract::plan::{PlanRequest, PlanSettings, TableOverride};
use pgshift::contract::types::TypePolicies;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::commands::types::TypeArgs;

/// `pgshift.toml`: the run's settings; `settings` and `writer` are the planner's tables of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunConfig {
    pub(crate) source: Option<String>,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    pub(crate) stage: Option<String>,
    pub(crate) warehouse: Option<String>,
    run_id: Option<String>,
    concurrency: Option<u32>,
    /// `diff` or `full` for every table (each table's section may say otherwise).
    incremental: Option<pgshift::contract::incremental::Incremental>,
    pub(crate) load: Option<LoadOptions>,
    settings: Option<PlanSettings>,
    writer: Option<WriterSettings>,
    /// The type policies of every table (`infinity`, `unconstrained_numeric_as_text`, …).
    policies: Option<TypePolicies>,
    /// Per table, keyed by `schema.table`: `key`, `casts = { column = "text" }`, `policies`, `parts`.
    #[serde(default, alias = "overrides")]
    table: BTreeMap<String, TableOverride>,
}

/// `--config`: where the settings file is. Every command that takes a source, a stage or a warehouse reads it the
/// same way.
#[derive(Args, Clone, Default, Debug)]
pub(crate) struct ConfigArg {
    /// A config file with the run's settings (flags override it); ./pgshift.toml is read when present.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

impl ConfigArg {
    /// The config file named, else `./pgshift.toml` when there is one, else nothing (every setting from flags).
    pub(crate) fn read(&self) -> Result<RunConfig> {
        let path = match &self.config {
            Some(p) => p.clone(),
            None if Path::new("pgshift.toml").exists() => PathBuf::from("pgshift.toml"),
            None => return Ok(RunConfig::default()),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| super::exit::usage(format!("reading {}: {e} (--config FILE)", path.display())))?;
        toml::from_str(&text).map_err(|e| super::exit::usage(format!("{}: {e}", path.display())))
    }
}

/// A stage as the user gave it, as a URL: `s3://bucket/prefix` and `file:///dir` as they are, a directory path
/// (absolute or relative to the working directory) as `file:///` its absolute path. Anything else is a usage error,
/// before any run starts.
pub(crate) fn stage_url(given: &str) -> Result<String> {
    let bad = |why: &str| super::exit::usage(format!("stage {given:?}: {why}"));
    if given.starts_with("s3://") {
        return Ok(given.to_string());
    }
    if let Some(path) = given.strip_prefix("file://") {
        return if path.starts_with('/') {
            Ok(given.to_string())
        } else {
            Err(bad(&format!(
                "a file:// URL needs an absolute path, three slashes: file:///{path} (or give the directory as a path:                  --stage /{path})"
            )))
        };
    }
    if let Some((scheme, _)) = given.split_once("://") {
        return Err(bad(&format!(
            "unsupported scheme {scheme:?}: use s3://bucket/prefix, file:///dir, or a directory path"
        )));
    }
    if given.is_empty() {
        return Err(bad("empty: give s3://bucket/prefix, file:///dir, or a directory path"));
    }
    let path = std::path::absolute(given).map_err(|e| bad(&e.to_string()))?;
    Ok(format!("file://{}", path.display()))
}

/// [`stage_url`] as a flag's parser.
pub(crate) fn stage_arg(given: &str) -> Result<String, String> {
    stage_url(given).map_err(|e| e.to_string())
}

/// A connection setting: the flag (or its environment variable), else the config file's, else an error naming both.
pub(crate) fn need(flag: &Option<String>, conf: Option<String>, what: &str) -> Result<String> {
    // An empty flag or variable (PGSHIFT_STAGE= in a script) is no value: the file's stands.
    match flag.clone().filter(|v| !v.is_empty()).or(conf) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(super::exit::usage(format!(
            "no {what}: pass --{what} (or PGSHIFT_{}) or set {what} in pgshift.toml",
            what.to_uppercase()
        ))),
    }
}

/// What the planner is asked: the same flags, with the same names, on `plan`, `run` and `start`.
#[derive(Args, Clone, Default, Debug)]
pub(crate) struct PlanFlags {
    /// Table patterns: schema.table with * and ? (sales.* public.orders).
    #[arg(long, num_args = 1.., help_heading = "Selection")]
    pub(crate) tables: Vec<String>,
    /// Table patterns to leave out of those --tables selects: schema.table with * and ? (sales.tmp_*).
    #[arg(long, num_args = 1.., help_heading = "Selection")]
    pub(crate) exclude: Vec<String>,
    /// Where parts and the run's records go: s3://bucket/prefix, file:///dir or a directory (pgshift start: the
    /// stack's stage by default).
    #[arg(long, env = "PGSHIFT_STAGE", hide_env_values = true, help_heading = "Run")]
    pub(crate) stage: Option<String>,
    /// The run's id (default: from the time). A run id is loaded once: running it again with the same settings
    /// before its load goes on with its plan; after, or with other settings, it is refused.
    #[arg(long, help_heading = "Run")]
    pub(crate) run_id: Option<String>,
    /// Start the run over: delete what it left on the stage (plan, parts, results) and plan it anew.
    #[arg(long, help_heading = "Run")]
    pub(crate) restart: bool,
    /// Extractors at once (the Map's MaxConcurrency, 1 or more; default 16): protects the source.
    #[arg(long, visible_alias = "max-concurrency", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Planning")]
    pub(crate) concurrency: Option<u32>,
    /// Parts per table, fixed, 1 or more (default: from the data); raises the cap of parts per table to it unless
    /// --max-parts-per-table is given.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Planning")]
    pub(crate) parts: Option<u32>,
    /// Source MiB per part, 1 or more (default 512).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Planning")]
    pub(crate) target_part_mib: Option<u64>,
    /// Redshift slices, 1 or more (part counts above it are rounded to a multiple; default: the cluster's own count,
    /// read from stv_slices by `run`, else 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Planning")]
    pub(crate) slices: Option<u32>,
    /// The most parts a table is split into, 1 or more (default 256).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Planning")]
    pub(crate) max_parts_per_table: Option<u32>,
    /// The source does not change during the run (a restored snapshot, a paused replica): tables without a key
    /// may then be read in parallel ctid ranges.
    #[arg(long, help_heading = "Planning")]
    pub(crate) static_source: bool,
    /// diff: after a first full load, move only the key ranges whose rows changed since the last committed run,
    /// deletes included (a run from a snapshot, or --static-source; docs/incremental.md); full (the default): move
    /// every table whole. Per table: `incremental = "diff"` in its pgshift.toml section.
    /// cursor=COLUMN (a live source): after a first full load, merge by key the rows whose COLUMN (a timestamptz the
    /// application sets on every write) is at or past the last run's watermark; deletes are not seen.
    #[arg(long, value_parser = parse_incremental, help_heading = "Planning")]
    pub(crate) incremental: Option<pgshift::contract::incremental::Incremental>,
    /// Load incremental tables in full every N runs, 1 or more (cursor mode: what removes the rows the source
    /// deleted).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Planning")]
    pub(crate) full_every: Option<u32>,
    /// Plan the views and materialized views a wildcard matches (by default they are left out, and the plan says so).
    #[arg(long, help_heading = "Selection")]
    pub(crate) include_views: bool,
    #[command(flatten)]
    pub(crate) types: TypeArgs,
    #[command(flatten)]
    pub(crate) writer: WriterArgs,
}

fn parse_incremental(s: &str) -> Result<pgshift::contract::incremental::Incremental, String> {
    s.parse()
}

/// Inserts `v` under `k` when there is one.
fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.into(), v);
    }
}

impl PlanFlags {
    /// The request fields the flags give, and only those.
    pub(crate) fn fields(&self) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        put(&mut m, "tables", (!self.tables.is_empty()).then(|| json!(self.tables)));
        put(
            &mut m,
            "exclude",
            (!self.exclude.is_empty()).then(|| json!(self.exclude)),
        );
        put(&mut m, "stage", self.stage.as_ref().map(|s| json!(s)));
        put(&mut m, "run_id", self.run_id.as_ref().map(|s| json!(s)));
        put(&mut m, "restart", self.restart.then_some(json!(true)));
        put(&mut m, "incremental", self.incremental.as_ref().map(|i| json!(i)));
        put(&mut m, "full_every", self.full_every.map(|n| json!(n)));
        let mut s = Map::new();
        put(&mut s, "max_concurrency", self.concurrency.map(|c| json!(c)));
        put(&mut s, "parts", self.parts.map(|p| json!(p)));
        put(
            &mut s,
            "target_part_bytes",
            self.target_part_mib.map(|x| json!(x * 1024 * 1024)),
        );
        put(&mut s, "slices", self.slices.map(|x| json!(x)));
        put(
            &mut s,
            "max_parts_per_table",
            self.max_parts_per_table.map(|x| json!(x)),
        );
        put(&mut s, "static_source", self.static_source.then_some(json!(true)));
        put(&mut s, "include_views", self.include_views.then_some(json!(true)));
        put(&mut m, "settings", (!s.is_empty()).then_some(Value::Object(s)));
        let w = self.writer.fields();
        put(&mut m, "writer", (!w.is_empty()).then_some(Value::Object(w)));
        let mut overrides = BTreeMap::new();
        self.types.merge_into(&mut overrides)?;
        let overrides: Map<String, Value> = overrides
            .into_iter()
            .map(|(table, o)| (table, json!({"casts": o.casts})))
            .collect();
        put(
            &mut m,
            "overrides",
            (!overrides.is_empty()).then_some(Value::Object(overrides)),
        );
        let p = self.types.fields();
        put(&mut m, "policies", (!p.is_empty()).then_some(Value::Object(p)));
        Ok(m)
    }
}

/// How the loader loads: the same flags, with the same names, on `run`, `load` and `start`.
#[derive(Args, Clone, Default, Debug)]
pub(crate) struct LoadFlags {
    /// How each target is written [default: replace]: replace (the target becomes the source's rows), append, or
    /// merge (by key).
    #[arg(long, value_enum, help_heading = "Load")]
    pub(crate) mode: Option<LoadMode>,
    /// Commit each table on its own [default: table], or the whole run in one transaction (run).
    #[arg(long, value_enum, help_heading = "Load")]
    pub(crate) atomic: Option<Atomicity>,
    /// What a load may change in an existing target whose columns differ from the source's [default: refuse].
    #[arg(long, value_enum, help_heading = "Load")]
    pub(crate) schema_evolution: Option<SchemaEvolution>,
    /// Tables loaded side by side (load transactions at once, 1 or more; default 8): protects the warehouse.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Load")]
    pub(crate) load_concurrency: Option<u32>,
    /// Cut text longer than 65,535 bytes instead of failing (PostgreSQL warehouses only: a Redshift COPY from Parquet
    /// cannot cut values, so it is refused there and the load fails by column).
    #[arg(long, help_heading = "Load")]
    pub(crate) truncate_long_text: bool,
    /// Redshift: load json and jsonb columns into SUPER instead of VARCHAR.
    #[arg(long, help_heading = "Load")]
    pub(crate) json_as_super: bool,
    /// Keep the Parquet parts on the stage after every table committed (by default they are deleted then; the plan,
    /// results, ledger and report stay).
    #[arg(long, help_heading = "Load")]
    pub(crate) keep_parts: bool,
    /// What becomes of a target's row whose key the source no longer holds [default: hard]: hard (deleted), or soft
    /// (kept, with _pgshift_deleted_at set to the instant of the run's data; live rows have it NULL). Keyed tables,
    /// --mode replace.
    #[arg(long, value_enum, help_heading = "Load")]
    pub(crate) deletes: Option<pgshift::contract::incremental::Deletes>,
    #[command(flatten)]
    pub(crate) guards: GuardArgs,
}

/// What a load may do that it refuses by default, and the limits it checks values against.
#[derive(Args, Clone, Default, Debug)]
#[command(next_help_heading = "Load")]
pub(crate) struct GuardArgs {
    /// Load even when the run's data is older than what the target holds (an older snapshot after a newer one).
    #[arg(long)]
    pub(crate) allow_older: bool,
    /// Check every value against this warehouse's limits too: `redshift` makes a run into a local PostgreSQL fail
    /// where the same run into Redshift would (text past VARCHAR(65535), binary past VARBYTE's maximum).
    #[arg(long, value_enum)]
    pub(crate) warehouse_dialect: Option<WarehouseDialect>,
    /// Load into targets that have rules or triggers on INSERT, UPDATE or DELETE (refused by default, before
    /// anything is extracted: they change what the load writes); what such a target holds is then theirs.
    #[arg(long)]
    pub(crate) allow_target_triggers: bool,
}

fn value_of<T: serde::Serialize>(x: T) -> Value {
    serde_json::to_value(x).unwrap_or_default()
}

impl LoadFlags {
    /// The load options the flags give, and only those.
    pub(crate) fn fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        put(&mut m, "mode", self.mode.map(value_of));
        put(&mut m, "atomic", self.atomic.map(value_of));
        put(&mut m, "schema_evolution", self.schema_evolution.map(value_of));
        put(&mut m, "concurrency", self.load_concurrency.map(|c| json!(c)));
        put(
            &mut m,
            "long_text",
            self.truncate_long_text.then(|| value_of(LongText::Truncate)),
        );
        put(&mut m, "json_as_super", self.json_as_super.then_some(json!(true)));
        put(&mut m, "allow_older", self.guards.allow_older.then_some(json!(true)));
        put(
            &mut m,
            "allow_target_triggers",
            self.guards.allow_target_triggers.then_some(json!(true)),
        );
        put(&mut m, "warehouse_dialect", self.guards.warehouse_dialect.map(value_of));
        put(&mut m, "keep_parts", self.keep_parts.then_some(json!(true)));
        put(&mut m, "deletes", self.deletes.map(value_of));
        m
    }

    /// The flags given over `base` (from `pgshift.toml`, or the defaults), merged as a request's fields are.
    pub(crate) fn over(&self, base: Option<LoadOptions>) -> Result<LoadOptions> {
        let req = PlanRequest {
            load: Some(base.unwrap_or_default()),
            ..PlanRequest::default()
        };
        let fields = Map::from_iter([("load".to_string(), Value::Object(self.fields()))]);
        let merged = req.merged(&fields).map_err(anyhow::Error::msg)?;
        Ok(merged.load.unwrap_or_default())
    }
}

/// The request fields a config file gives.
fn config_fields(c: RunConfig) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    put(&mut m, "tables", (!c.tables.is_empty()).then(|| json!(c.tables)));
    put(&mut m, "exclude", (!c.exclude.is_empty()).then(|| json!(c.exclude)));
    put(&mut m, "stage", c.stage.map(|s| json!(s)));
    put(&mut m, "run_id", c.run_id.map(|s| json!(s)));
    put(&mut m, "incremental", c.incremental.map(|i| json!(i)));
    let mut settings = match c.settings {
        Some(s) => serde_json::to_value(s)?,
        None => json!({}),
    };
    if let Some(n) = c.concurrency {
        settings["max_concurrency"] = json!(n);
    }
    put(&mut m, "settings", Some(settings));
    put(&mut m, "writer", c.writer.map(value_of));
    put(&mut m, "load", c.load.map(value_of));
    put(&mut m, "policies", c.policies.map(value_of));
    put(&mut m, "overrides", (!c.table.is_empty()).then(|| value_of(&c.table)));
    Ok(m)
}

/// The run's request: the defaults, `pgshift.toml` over them, the flags over that; tables and the stage required.
pub(crate) fn request(config: RunConfig, plan: &PlanFlags, load: Option<&LoadFlags>) -> Result<PlanRequest> {
    let mut flags = plan.fields()?;
    if let Some(l) = load {
        let f = l.fields();
        put(&mut flags, "load", Some(Value::Object(f)));
    }
    let base = PlanRequest {
        load: load.map(|_| LoadOptions::default()),
        ..PlanRequest::default()
    };
    let req = base
        .merged(&config_fields(config)?)
        .and_then(|r| r.merged(&flags))
        .map_err(|e| super::exit::usage(format!("the run's settings: {e}")))?;
    if req.tables.is_empty() {
        return Err(super::exit::usage(
            "no tables: pass --tables or set tables in pgshift.toml",
        ));
    }
    if req.stage.is_empty() {
        return Err(super::exit::usage(
            "no stage: pass --stage (or PGSHIFT_STAGE) or set stage in pgshift.toml",
        ));
    }
    let mut req = req;
    req.stage = stage_url(&req.stage)?;
    Ok(req)
}

/// How parts are written: the same flags on `plan`, `run`, `start`, `extract` and `bench`.
#[derive(Args, Clone, Default, Debug)]
#[command(next_help_heading = "Extraction")]
pub(crate) struct WriterArgs {
    /// zstd (default), snappy or none.
    #[arg(long, value_enum)]
    pub(crate) compression: Option<Codec>,
    /// The zstd level (default 1).
    #[arg(long)]
    pub(crate) zstd_level: Option<i32>,
    /// Row-group budget in MiB of encoded data (bounds memory; default 16).
    #[arg(long)]
    pub(crate) row_group_mib: Option<u64>,
    /// Start a new file once a file reaches this many MiB (default 256).
    #[arg(long)]
    pub(crate) file_mib: Option<u64>,
    /// Columns to dictionary-encode (the planner picks low-cardinality ones itself); the rest are plain.
    #[arg(long, value_delimiter = ',')]
    pub(crate) dictionary: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Codec {
    Zstd,
    Snappy,
    None,
}

impl WriterArgs {
    /// The writer settings the flags give, and only those.
    fn fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let level = self.zstd_level.unwrap_or(1);
        let compression = match (self.compression, self.zstd_level) {
            (Some(Codec::Snappy), _) => Some(Compression::Snappy),
            (Some(Codec::None), _) => Some(Compression::None),
            (Some(Codec::Zstd), _) | (None, Some(_)) => Some(Compression::Zstd { level }),
            (None, None) => None,
        };
        put(&mut m, "compression", compression.map(value_of));
        put(
            &mut m,
            "row_group_bytes",
            self.row_group_mib.map(|x| json!(x * 1024 * 1024)),
        );
        put(
            &mut m,
            "target_file_bytes",
            self.file_mib.map(|x| json!(x * 1024 * 1024)),
        );
        put(
            &mut m,
            "dictionary_columns",
            (!self.dictionary.is_empty()).then(|| json!(self.dictionary)),
        );
        m
    }

    /// The flags over the default writer settings (one part, one table: `extract` and `bench`).
    pub(crate) fn settings(&self) -> WriterSettings {
        let fields = Map::from_iter([("writer".to_string(), Value::Object(self.fields()))]);
        PlanRequest::default()
            .merged(&fields)
            .map(|r| r.writer)
            .unwrap_or_default()
    }

    pub(crate) fn compression_name(&self) -> &'static str {
        match self.compression {
            Some(Codec::Snappy) => "snappy",
            Some(Codec::None) => "none",
            Some(Codec::Zstd) | None => "zstd",
        }
    }

    /// The flags given, as a command line (a child `pgshift` writes as this one would).
    pub(crate) fn argv(&self) -> Vec<String> {
        let mut v = vec!["--compression".to_string(), self.compression_name().to_string()];
        let mut flag = |name: &str, x: Option<String>| {
            if let Some(x) = x {
                v.extend([name.to_string(), x]);
            }
        };
        flag("--zstd-level", self.zstd_level.map(|x| x.to_string()));
        flag("--row-group-mib", self.row_group_mib.map(|x| x.to_string()));
        flag("--file-mib", self.file_mib.map(|x| x.to_string()));
        if !self.dictionary.is_empty() {
            v.extend(["--dictionary".to_string(), self.dictionary.join(",")]);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// The long flags of a subcommand of `pgshift`, with their aliases.
    fn flags_of(sub: &str) -> Vec<String> {
        let cli = crate::Cli::command();
        let cmd = cli.find_subcommand(sub).unwrap_or_else(|| panic!("{sub}"));
        cmd.get_arguments()
            .flat_map(|a| {
                let mut v: Vec<String> = a.get_long().map(str::to_string).into_iter().collect();
                v.extend(a.get_all_aliases().unwrap_or_default().into_iter().map(str::to_string));
                v
            })
            .collect()
    }

    #[test]
    fn plan_run_and_start_take_the_same_planner_flags_and_run_load_and_start_the_same_load_flags() {
        let planner = [
            "tables",
            "exclude",
            "stage",
            "run-id",
            "restart",
            "concurrency",
            "max-concurrency",
            "parts",
            "target-part-mib",
            "slices",
            "max-parts-per-table",
            "static-source",
            "incremental",
            "full-every",
            "include-views",
            "cast",
            "numeric-as-text",
            "infinity",
            "compression",
            "zstd-level",
            "row-group-mib",
            "file-mib",
            "dictionary",
        ];
        let load = [
            "mode",
            "atomic",
            "schema-evolution",
            "load-concurrency",
            "truncate-long-text",
            "json-as-super",
            "allow-older",
            "warehouse-dialect",
            "allow-target-triggers",
            "deletes",
        ];
        for (subs, names) in [
            (&["plan", "run", "start"][..], &planner[..]),
            (&["run", "load", "start"], &load),
        ] {
            for sub in subs {
                let have = flags_of(sub);
                for n in names {
                    assert!(have.iter().any(|h| h == n), "pgshift {sub} takes --{n}");
                }
            }
        }
        for sub in ["plan", "run", "load", "runs", "cost"] {
            assert!(
                flags_of(sub).iter().any(|h| h == "config"),
                "pgshift {sub} reads --config"
            );
        }
    }

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        plan: PlanFlags,
        #[command(flatten)]
        load: LoadFlags,
    }

    fn parsed(argv: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("x").chain(argv.iter().copied())).expect("flags")
    }

    #[test]
    fn the_flags_go_over_the_config_file_which_goes_over_the_defaults_field_by_field() {
        let config: RunConfig = toml::from_str(
            "tables = [\"sales.*\"]\nstage = \"file:///s\"\nconcurrency = 6\n[settings]\nslices = 4\n\
             max_parts_per_table = 10\n[load]\nmode = \"merge\"\njson_as_super = true\n[writer]\nrow_group_bytes = 1024\n\
             [table.\"sales.orders\"]\nparts = 3\ncasts = { location = \"text\" }\n",
        )
        .expect("config");
        let f = parsed(&[
            "--parts",
            "40",
            "--atomic",
            "run",
            "--cast",
            "sales.orders.tags=json",
            "--file-mib",
            "8",
            "--infinity",
            "null",
        ]);
        let r = request(config, &f.plan, Some(&f.load)).expect("request");
        let d = PlanRequest::default();
        assert_eq!(r.tables, vec!["sales.*".to_string()]);
        assert_eq!((r.settings.max_concurrency, r.settings.slices), (6, 4), "the file's");
        assert_eq!(r.settings.parts, Some(40), "the flag's");
        assert_eq!(
            r.settings.max_parts_per_table, 40,
            "--parts raises the file's cap of 10"
        );
        assert_eq!(
            r.settings.target_part_bytes, d.settings.target_part_bytes,
            "the default"
        );
        let load = r.load.expect("load");
        assert_eq!(
            (load.mode, load.atomic, load.json_as_super),
            (LoadMode::Merge, Atomicity::Run, true)
        );
        assert_eq!((r.writer.row_group_bytes, r.writer.target_file_bytes), (1024, 8 << 20));
        let o = &r.overrides["sales.orders"];
        assert_eq!(
            (o.parts, o.casts.len()),
            (Some(3), 2),
            "the file's override keeps its parts: {o:?}"
        );
        assert_eq!(r.policies.infinity, pgshift::contract::types::InfinityPolicy::Null);
        let e = request(RunConfig::default(), &parsed(&["--stage", "file:///s"]).plan, None).expect_err("no tables");
        assert!(e.to_string().contains("--tables"), "{e}");
    }
}
