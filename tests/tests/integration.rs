//! Integration tests: real PostgreSQL (a throwaway cluster), real files, Parquet read back by two independent readers.
//! One test binary, one cluster, a database per test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use pgshift::contract::model::{
    Bounds, ColumnSpec, ExtractResult, ExtractTask, KeyType, KeyValue, TableRef, WriterSettings,
};
use pgshift::contract::types::{Cast, InfinityPolicy, Mapping, TypePolicies};
use pgshift::source::{column_specs, describe_table, PgConnector, SESSION_SETTINGS};
use pgshift::{ExtractContext, UrlStages};
use pgshift_tests::parquet_text::{read_pyarrow, read_rust, Columns};
use pgshift_tests::{cluster, connect, list_files, stage_dir};

mod cleanup_scale;
mod dialect;
mod events;
mod executions;
mod failures;
mod faults;
mod fuzz;
mod grants;
mod hooked;
mod incremental;
mod load;
mod parts;
mod pipeline;
mod planner;
mod rds_aws;
mod redshift;
mod redshift_pipeline;
mod report;
mod round_two;
mod s3;
mod snapshot;
mod tls;
mod wrong_data;
mod wrong_data2;

/// A database with `setup` run in it.
async fn db(prefix: &str, setup: &str) -> Result<String> {
    db_on(cluster(), prefix, setup).await
}

/// A database with `setup` run in it, on the cluster given.
async fn db_on(on: &pgshift_tests::Cluster, prefix: &str, setup: &str) -> Result<String> {
    let url = on.create_db(prefix).await?;
    connect(&url).await?.batch_execute(setup).await?;
    Ok(url)
}

fn ctx(url: &str) -> ExtractContext {
    ExtractContext {
        source: Arc::new(PgConnector::new(url).expect("connection string")),
        stages: Arc::new(UrlStages::default()),
    }
}

/// The task for a whole table, as `pgshift extract` builds it.
async fn task_for(url: &str, table: &str, policies: &TypePolicies, casts: &[(String, Cast)]) -> Result<ExtractTask> {
    let table = TableRef::parse(table).map_err(anyhow::Error::msg)?;
    let client = connect(url).await?;
    let catalog = describe_table(&client, &table).await?;
    let columns = column_specs(&catalog, policies, casts)?;
    let dir = stage_dir(&table.name);
    Ok(ExtractTask {
        task_id: String::new(),
        plan_id: String::new(),
        run_id: "test-run".into(),
        table,
        columns,
        key: catalog.key.clone(),
        range_index: 0,
        bounds: Bounds::ALL,
        stage: format!("file://{}", dir.display()),
        writer: WriterSettings::default(),
        statement_timeout_secs: 60,
        source_endpoint: None,
        diff: None,
        since: None,
    })
}

fn paths(r: &ExtractResult) -> Vec<PathBuf> {
    r.files
        .iter()
        .map(|f| PathBuf::from(f.url.strip_prefix("file://").expect("file url")))
        .collect()
}

/// An integer column's values, sorted (NULL or non-integers as -1, which no test expects).
fn sorted_ints(cols: &Columns, index: usize) -> Vec<i64> {
    let mut v: Vec<i64> = cols[index]
        .1
        .iter()
        .map(|x| x.as_deref().unwrap_or_default().parse().unwrap_or(-1))
        .collect();
    v.sort();
    v
}

fn stage_path(task: &ExtractTask) -> PathBuf {
    PathBuf::from(task.stage.strip_prefix("file://").expect("file stage"))
}

fn key_bound(ty: KeyType, v: &str) -> Option<Vec<KeyValue>> {
    Some(vec![KeyValue::new(ty, v)])
}

/// What Postgres itself says each column's value is, in the canonical text of `parquet_text`. A cast column is
/// rendered by the test's own expression for the cast (never the extractor's select expression): text through the
/// type's output function, JSON by `to_json`, money as numeric.
fn expected_expr(c: &ColumnSpec) -> String {
    let name = pgshift_tests::fingerprint::quote(&c.name);
    let col = match c.cast {
        None | Some(Cast::Text) => name,
        Some(Cast::Json) => format!("pg_catalog.to_json({name})"),
        Some(Cast::Numeric) => format!("({name})::pg_catalog.numeric"),
    };
    match c.mapping {
        Mapping::Bool | Mapping::Int16 | Mapping::Int32 | Mapping::Int64 | Mapping::Oid => format!("({col})::text"),
        Mapping::Float32 | Mapping::Float64 => format!("({col})::text"),
        Mapping::Decimal { precision, scale } => format!("({col})::numeric({precision},{scale})::text"),
        // format('%s') prints through the type's output function: char(n) keeps its padding, as on the wire.
        Mapping::Text | Mapping::Json | Mapping::Jsonb | Mapping::Uuid => {
            format!("CASE WHEN {col} IS NULL THEN NULL ELSE format('%s', {col}) END")
        }
        Mapping::Binary => format!("encode({col}, 'hex')"),
        Mapping::Date { .. } => format!("({col} - DATE '1970-01-01')::text"),
        // Exact at the extremes (extract(epoch) of a whole timestamp rounds there): days, plus the time of day.
        Mapping::Timestamp { .. } => format!(
            "((({col})::date - DATE '1970-01-01')::numeric * 86400000000 + extract(epoch FROM ({col})::time) * 1000000)::numeric(40,0)::text"
        ),
        Mapping::TimestampTz { .. } => {
            let utc = format!("({col} AT TIME ZONE 'UTC')");
            format!(
                "(({utc}::date - DATE '1970-01-01')::numeric * 86400000000 + extract(epoch FROM {utc}::time) * 1000000)::numeric(40,0)::text"
            )
        }
    }
}

/// Postgres' float text (shortest exact, with extra_float_digits > 0) → the hex of the IEEE bits.
fn float_bits(mapping: &Mapping, text: &str) -> String {
    match mapping {
        Mapping::Float32 => format!("{:08x}", text.parse::<f32>().expect("float4 text").to_bits()),
        _ => format!("{:016x}", text.parse::<f64>().expect("float8 text").to_bits()),
    }
}

/// Rows of the table ordered by `order_by`, one canonical text per column.
async fn expected_rows(url: &str, task: &ExtractTask, order_by: &str) -> Result<Vec<Vec<Option<String>>>> {
    let client = connect(url).await?;
    client.batch_execute(SESSION_SETTINGS).await?;
    let list = task.columns.iter().map(expected_expr).collect::<Vec<_>>().join(", ");
    let q = format!(
        "SELECT {list} FROM {} ORDER BY {order_by}",
        pgshift::contract::sql::table(&task.table).expect("table")
    );
    let rows = client.query(&q, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            task.columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v: Option<String> = r.get(i);
                    match c.mapping {
                        Mapping::Float32 | Mapping::Float64 => v.map(|t| float_bits(&c.mapping, &t)),
                        _ => v,
                    }
                })
                .collect()
        })
        .collect())
}

/// Columns → rows, sorted by the integer column `id`.
fn rows_by_id(cols: &Columns) -> Vec<Vec<Option<String>>> {
    let id = cols.iter().position(|(n, _)| n == "id").expect("an id column");
    let n = cols.first().map(|c| c.1.len()).unwrap_or(0);
    let mut rows: Vec<Vec<Option<String>>> = (0..n).map(|r| cols.iter().map(|c| c.1[r].clone()).collect()).collect();
    rows.sort_by_key(|r| r[id].as_deref().and_then(|v| v.parse::<i64>().ok()));
    rows
}

fn assert_same(what: &str, task: &ExtractTask, got: &[Vec<Option<String>>], want: &[Vec<Option<String>>]) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        for (i, c) in task.columns.iter().enumerate() {
            let short = |v: &Option<String>| {
                v.as_ref().map(|s| {
                    if s.len() > 200 {
                        format!("{}…({} bytes)", &s[..s.floor_char_boundary(200)], s.len())
                    } else {
                        s.clone()
                    }
                })
            };
            assert!(
                g[i] == w[i],
                "{what}: row {r} column {} ({:?}): got {:?}, Postgres says {:?}",
                c.name,
                c.mapping,
                short(&g[i]),
                short(&w[i])
            );
        }
    }
}

pub(crate) const ALL_TYPES: &str = r#"
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN short_text AS varchar(20);
CREATE DOMAIN price AS numeric(10,3);
CREATE SCHEMA "Odd ""Schema""";
CREATE TABLE "Odd ""Schema""".all_types (
    id int8 PRIMARY KEY,
    b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
    n12 numeric(12,2), n38 numeric(38,10), nu numeric, dom_price price,
    t text, vc varchar(10), bp char(5), nm name, ci citext, en mood, dom_int posint, dom_txt short_text,
    u uuid, j json, jb jsonb, by bytea,
    dt date, ts timestamp, tstz timestamptz,
    tm time, tmtz timetz, iv interval, ip inet, cd cidr, mac macaddr, mny money, o oid, x xml,
    arr_i int4[], arr_t text[], "Mixed Case ""col""" int4
);
INSERT INTO "Odd ""Schema""".all_types (id) VALUES (1);
INSERT INTO "Odd ""Schema""".all_types VALUES
 (2, true, 12, 123456, 1234567890123, 1.5, 3.141592653589793,
  1234.56, 123456789012345678.0123456789, 12345.6789, 12.345,
  'hello', 'varchar', 'ab', 'a_name', 'MiXeD', 'happy', 7, 'short',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1,  "a": [1,2]}', '{"b": 1, "a": [1, 2]}', '\xdeadbeef00',
  '2024-02-29', '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+05:30',
  '12:34:56.789', '12:34:56+05:30', '1 year 2 mons 3 days 04:05:06.7', '192.168.1.5/24', '10.0.0.0/8',
  '08:00:2b:01:02:03', 1234.56, 4294967295, '<a>b</a>', '{1,NULL,3}', '{"a","b c","\"q\""}', 42),
 (3, false, -32768, -2147483648, -9223372036854775808, 'NaN', '-0',
  -9999999999.99, '-9999999999999999999999999999.9999999999', '-12345678901234567890.123456789012345678', -0.001,
  '', '', '', '', '', 'sad', 1, '',
  '00000000-0000-0000-0000-000000000000', '[]', '{}', '\x',
  '4713-11-24 BC', '4713-11-24 00:00:00 BC', '4713-11-24 00:00:00+00 BC',
  '00:00:00', '00:00:00-14:59', '-178000000 years', '::1', '::/0', '00:00:00:00:00:00', -92233720368547758.08, 0,
  '', '{}', '{}', -1),
 (4, true, 32767, 2147483647, 9223372036854775807, 'Infinity', '-Infinity',
  9999999999.99, '9999999999999999999999999999.9999999999', '0.000000000000000001', 9999999.999,
  E'😀𝄞 ünï \\ '' " \t\n end', 'ünïcödé😀', 'x😀', E'\\''', E'\\''', 'ok', 2147483647, 'twenty characters..',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '"😀"', '{"k": "😀", "n": null, "x": 1.50}', '\x00ff',
  '5874897-12-31', '294247-01-10 04:00:54.775807', '294247-01-10 04:00:54.775807+00',
  '24:00:00', '23:59:59.999999+15:59', 'P1Y2M3DT4H5M6.000007S', '2001:db8::ff00:42:8329', '2001:db8::/32',
  'ff:ff:ff:ff:ff:ff', 92233720368547758.07, 1, '<?xml version="1.0"?><r/>', '{{1,2},{3,4}}', '{NULL,""}', 0),
 (5, NULL, NULL, NULL, NULL, '1e-45', '4.9e-324', NULL, NULL, '-0.000000000000000000', NULL,
  repeat('ab😀', 262144), NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, decode(repeat('00ff', 524288), 'hex'),
  '1970-01-01', '1970-01-01 00:00:00', '1969-12-31 23:59:59.999999+00',
  NULL, NULL, NULL, '0.0.0.0', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_both_readers() -> Result<()> {
    let url = db("alltypes", ALL_TYPES).await?;
    let table = r#""Odd ""Schema""".all_types"#;
    let task = task_for(&url, table, &TypePolicies::default(), &[]).await?;
    // Every default mapping is what the type table documents.
    let mapping = |name: &str| {
        task.columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| (c.cast, c.mapping))
    };
    assert_eq!(
        mapping("dom_int"),
        Some((None, Mapping::Int32)),
        "domains resolve to their base type"
    );
    assert_eq!(
        mapping("dom_price"),
        Some((
            None,
            Mapping::Decimal {
                precision: 10,
                scale: 3
            }
        ))
    );
    assert_eq!(
        mapping("nu"),
        Some((
            None,
            Mapping::Decimal {
                precision: 38,
                scale: 18
            }
        ))
    );
    assert_eq!(
        mapping("mny"),
        Some((
            Some(Cast::Numeric),
            Mapping::Decimal {
                precision: 19,
                scale: 2
            }
        ))
    );
    assert_eq!(mapping("arr_i"), Some((Some(Cast::Json), Mapping::Text)));
    assert_eq!(mapping("iv"), Some((Some(Cast::Text), Mapping::Text)));
    assert_eq!(mapping("ci"), Some((None, Mapping::Text)));
    assert_eq!(mapping("en"), Some((None, Mapping::Text)));

    let result = pgshift::extract(&ctx(&url), task.clone()).await?;
    assert_eq!(result.rows, 5);
    assert_eq!(result.files.len(), 1);
    let files = paths(&result);
    assert_eq!(
        std::fs::metadata(&files[0])?.len(),
        result.files[0].bytes,
        "recorded size is the content length"
    );
    assert!(result.files[0]
        .url
        .ends_with("/test-run/Odd%20%22Schema%22/all_types/part-00000-000.parquet"));

    let want = expected_rows(&url, &task, "id").await?;
    let (rust_cols, types) = read_rust(&files)?;
    assert_eq!(
        types.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        task.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
    );
    assert_same("parquet crate", &task, &rows_by_id(&rust_cols), &want);
    assert_same("pyarrow", &task, &rows_by_id(&read_pyarrow(&files)?), &want);

    // What the loader needs for VARCHAR sizing: the longest value in bytes.
    assert_eq!(result.max_value_bytes.get("t"), Some(&(6 * 262_144)));
    assert_eq!(result.max_value_bytes.get("by"), Some(&(2 * 524_288)));
    assert_eq!(result.max_value_bytes.get("u"), Some(&36));
    assert!(!result.max_value_bytes.contains_key("i4"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_lower_inclusive_upper_exclusive() -> Result<()> {
    let url = db(
        "ranges",
        "CREATE TABLE r (id int8 PRIMARY KEY, v text NOT NULL);
         INSERT INTO r SELECT g, 'v' || g FROM generate_series(1, 1000) g;",
    )
    .await?;
    let base = task_for(&url, "r", &TypePolicies::default(), &[]).await?;
    let run = |lower: Option<&str>, upper: Option<&str>, index: u32| {
        let mut t = base.clone();
        t.range_index = index;
        t.bounds = Bounds::Key {
            lower: lower.and_then(|v| key_bound(KeyType::Int8, v)),
            upper: upper.and_then(|v| key_bound(KeyType::Int8, v)),
        };
        let url = url.clone();
        async move { pgshift::extract(&ctx(&url), t).await }
    };
    let ids = |r: &ExtractResult| -> Result<Vec<i64>> {
        let (cols, _) = read_rust(&paths(r))?;
        Ok(sorted_ints(&cols, 0))
    };

    let mid = run(Some("100"), Some("200"), 1).await?;
    assert_eq!(ids(&mid)?, (100..200).collect::<Vec<_>>());
    assert_eq!(
        mid.first_key.as_ref().map(|k| k[0].clone()),
        key_bound(KeyType::Int8, "100").map(|k| k[0].clone())
    );
    let low = run(None, Some("100"), 0).await?;
    assert_eq!(ids(&low)?, (1..100).collect::<Vec<_>>());
    let high = run(Some("200"), None, 2).await?;
    assert_eq!(ids(&high)?, (200..=1000).collect::<Vec<_>>());
    assert_eq!(
        low.rows + mid.rows + high.rows,
        1000,
        "adjacent ranges cover every row once"
    );

    // An empty range writes no file, and says so.
    let empty = run(Some("5000"), None, 3).await?;
    assert_eq!((empty.rows, empty.files.len(), empty.first_key.clone()), (0, 0, None));
    let also_empty = run(Some("7"), Some("7"), 4).await?;
    assert_eq!(also_empty.rows, 0);
    let written = list_files(&stage_path(&base));
    let parquet = written.iter().filter(|f| f.ends_with(".parquet")).count();
    let results = written.iter().filter(|f| f.ends_with(".result.json")).count();
    assert_eq!(
        (parquet, results, written.len()),
        (3, 5, 8),
        "3 files, 5 results, no temporaries: {written:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_use_row_value_bounds() -> Result<()> {
    let url = db(
        "composite",
        "CREATE TABLE c (a int8, b int2, v int4, PRIMARY KEY (a, b));
         INSERT INTO c SELECT a, b, a * 10 + b FROM generate_series(1, 20) a, generate_series(1, 5) b;",
    )
    .await?;
    let mut task = task_for(&url, "c", &TypePolicies::default(), &[]).await?;
    assert_eq!(task.key, vec!["a", "b"]);
    let k = |a: &str, b: &str| Some(vec![KeyValue::new(KeyType::Int8, a), KeyValue::new(KeyType::Int2, b)]);
    task.bounds = Bounds::Key {
        lower: k("3", "4"),
        upper: k("5", "2"),
    };
    let r = pgshift::extract(&ctx(&url), task).await?;
    // (3,4) (3,5) (4,1..5) (5,1)
    assert_eq!(r.rows, 8);
    let (cols, _) = read_rust(&paths(&r))?;
    assert_eq!(sorted_ints(&cols, 2), vec![34, 35, 41, 42, 43, 44, 45, 51]);
    let first = r.first_key.expect("first key");
    assert_eq!(first.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_key_literals_cannot_break_out() -> Result<()> {
    let url = db(
        "textkeys",
        "CREATE TABLE k (id text COLLATE \"C\" PRIMARY KEY, n int4 NOT NULL);",
    )
    .await?;
    let nasty = [
        "O'Brien",
        "'; DROP TABLE k; --",
        "back\\slash",
        "\\'",
        "''",
        "$$dollar$$",
        "😀 four-byte",
        "ünïcödé",
        "line\nbreak",
        "a\"quote",
        "E'\\x00'",
        "plain",
    ];
    let client = connect(&url).await?;
    for (i, k) in nasty.iter().enumerate() {
        client
            .execute("INSERT INTO k VALUES ($1, $2)", &[k, &(i as i32)])
            .await?;
    }
    let base = task_for(&url, "k", &TypePolicies::default(), &[]).await?;
    for (i, k) in nasty.iter().enumerate() {
        // The same range predicate, with the value as a bind parameter, counted by Postgres itself.
        let want: i64 = client
            .query_one("SELECT count(*) FROM k WHERE id >= $1", &[k])
            .await?
            .get(0);
        let mut t = base.clone();
        t.range_index = i as u32;
        t.bounds = Bounds::Key {
            lower: key_bound(KeyType::Text, k),
            upper: None,
        };
        let r = pgshift::extract(&ctx(&url), t).await?;
        assert_eq!(r.rows as i64, want, "rows >= {k:?}");
    }
    let still: i64 = client.query_one("SELECT count(*) FROM k", &[]).await?.get(0);
    assert_eq!(still, nasty.len() as i64, "the table is intact");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_roll_by_size_and_a_retry_overwrites() -> Result<()> {
    let url = db(
        "rolling",
        "CREATE TABLE big (id int8 PRIMARY KEY, payload text NOT NULL);
         INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 200000) g;",
    )
    .await?;
    let mut task = task_for(&url, "big", &TypePolicies::default(), &[]).await?;
    task.writer = WriterSettings {
        row_group_bytes: 256 * 1024,
        target_file_bytes: 1024 * 1024,
        batch_bytes: 64 * 1024,
        ..WriterSettings::default()
    };
    let first = pgshift::extract(&ctx(&url), task.clone()).await?;
    assert!(
        first.files.len() >= 3,
        "expected several files, got {}",
        first.files.len()
    );
    assert_eq!(first.files.iter().map(|f| f.rows).sum::<u64>(), 200_000);
    for f in &first.files {
        let meta =
            parquet::file::reader::FileReader::metadata(&parquet::file::serialized_reader::SerializedFileReader::new(
                std::fs::File::open(f.url.strip_prefix("file://").unwrap_or_default())?,
            )?)
            .clone();
        assert!(meta.num_row_groups() >= 2, "row groups are bounded by bytes");
        assert!(meta
            .file_metadata()
            .created_by()
            .unwrap_or_default()
            .starts_with("pgshift"));
        assert_eq!(meta.file_metadata().num_rows() as u64, f.rows);
    }
    let before = list_files(&stage_path(&task));
    let again = pgshift::extract(&ctx(&url), task.clone()).await?;
    assert_eq!(
        again.files.iter().map(|f| &f.url).collect::<Vec<_>>(),
        first.files.iter().map(|f| &f.url).collect::<Vec<_>>()
    );
    assert_eq!(list_files(&stage_path(&task)), before, "a retry overwrites, never adds");
    let (cols, _) = read_rust(&paths(&again))?;
    let mut ids = sorted_ints(&cols, 0);
    ids.dedup();
    assert_eq!(ids.len(), 200_000);
    Ok(())
}

#[test]
fn fixtures_round_trip() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for (name, check) in [
        (
            "extract_task.json",
            (|v: &serde_json::Value| -> Result<serde_json::Value> {
                Ok(serde_json::to_value(serde_json::from_value::<ExtractTask>(v.clone())?)?)
            }) as fn(&serde_json::Value) -> Result<serde_json::Value>,
        ),
        ("extract_result.json", |v| {
            Ok(serde_json::to_value(serde_json::from_value::<ExtractResult>(
                v.clone(),
            )?)?)
        }),
    ] {
        let text = std::fs::read_to_string(dir.join(name))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(check(&v)?, v, "{name} round-trips exactly");
    }
    Ok(())
}

#[test]
fn infinity_policies_are_named() {
    // Referenced by the failures module; keeps the policy names in the public contract stable.
    let names: Vec<String> = [InfinityPolicy::Error, InfinityPolicy::Null, InfinityPolicy::Clamp]
        .iter()
        .map(|p| serde_json::to_string(p).unwrap_or_default())
        .collect();
    assert_eq!(names, ["\"error\"", "\"null\"", "\"clamp\""]);
}
