//! The bounded fuzz run of the test command (the open-ended runs are `fuzz/`'s cargo-fuzz targets, on the same
//! entry points): the binary COPY decoder and the warehouse's Parquet read-back, fed a real table's bytes split at
//! arbitrary points and mutated in every way a stream or a file can break. A split never changes what is decoded; a
//! mutation ends in an error or in rows, never in a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use anyhow::Result;
use futures_util::{pin_mut, StreamExt};
use pgshift::contract::model::{Bounds, ExtractTask, TableRef, WriterSettings};
use pgshift::contract::sql;
use pgshift::contract::types::TypePolicies;
use pgshift::source::{column_specs, decode_chunks, describe_table, SESSION_SETTINGS};
use pgshift_tests::{connect, list_files, stage_dir};

use super::{ctx, db};

/// A table of every common type, NULLs in every column now and then.
const TYPES: &str = "
CREATE TABLE public.f (id int8 PRIMARY KEY, a int2, b int4, c float4, d float8, e numeric(12,2), t text,
    v varchar(20), ok bool, raw bytea, day date, ts timestamp, tz timestamptz, u uuid, j jsonb);
INSERT INTO public.f SELECT g, (g % 300)::int2, g * 7, g / 3.0, g / 7.0, g / 100.0, repeat('é', g % 9) || g,
    'v' || g, g % 2 = 0, decode(md5(g::text), 'hex'), DATE '2020-01-01' + g, TIMESTAMP '2020-01-01' + g * INTERVAL '1 s',
    TIMESTAMPTZ '2020-01-01 00:00+02' + g * INTERVAL '1 min', md5(g::text)::uuid, jsonb_build_object('g', g)
  FROM generate_series(1, 300) g;
UPDATE public.f SET a = NULL, t = NULL, raw = NULL, j = NULL, tz = NULL WHERE id % 7 = 0;
ANALYZE;";

/// xorshift64*: a deterministic stream of numbers, so a failing case is replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Cut points splitting `len` bytes into up to 8 chunks (empty chunks included).
fn splits(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

fn chunks<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        out.push(&data[at..c]);
        at = c;
    }
    out.push(&data[at..]);
    out
}

/// One of the ways a stream or a file breaks: bytes flipped, cut short, cut out, repeated, a length made huge or
/// negative, random bytes inserted.
fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    let at = rng.below(d.len());
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
        }
        1 => d.truncate(at),
        2 => {
            let end = (at + 1 + rng.below(64)).min(d.len());
            d.drain(at..end);
        }
        3 => {
            let end = (at + 1 + rng.below(64)).min(d.len());
            let piece = d[at..end].to_vec();
            d.splice(at..at, piece);
        }
        4 | 5 => {
            let word: [u8; 4] = match rng.below(3) {
                0 => 0x7fff_ffffi32.to_be_bytes(),
                1 => (-2i32).to_be_bytes(),
                _ => (rng.next() as i32).to_be_bytes(),
            };
            let i = at.min(d.len().saturating_sub(4));
            let n = 4.min(d.len() - i);
            d[i..i + n].copy_from_slice(&word[..n]);
        }
        _ => {
            let junk: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
            d.splice(at..at, junk);
        }
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_decoder_never_panics_and_a_split_never_changes_what_it_decodes() -> Result<()> {
    let url = db("fuzzcopy", TYPES).await?;
    let client = connect(&url).await?;
    client.batch_execute(SESSION_SETTINGS).await?;
    let table = TableRef::new("public", "f");
    let catalog = describe_table(&client, &table).await?;
    let columns = column_specs(&catalog, &TypePolicies::default(), &[])?;
    let key = vec!["id".to_string()];
    let select = sql::select(
        &table,
        &columns,
        &key,
        &Bounds::Key {
            lower: None,
            upper: None,
        },
        true,
    )
    .map_err(anyhow::Error::msg)?;
    let stream = client.copy_out(&sql::copy_out(&select)).await?;
    pin_mut!(stream);
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
    }
    // Batches of about 4 KiB: a split must leave every batch boundary, and every decoded value, where it was.
    let whole = decode_chunks(&columns, &key, &[&data], 4096).map_err(anyhow::Error::msg)?;
    assert_eq!(whole.iter().map(|b| b.num_rows()).sum::<usize>(), 300);
    assert!(whole.len() > 3, "several batches: {}", whole.len());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut panics, mut errors) = (Vec::new(), 0usize);
    for case in 0..4000u32 {
        let seed = rng.0;
        let input = if case % 4 == 0 {
            data.clone()
        } else {
            mutate(&mut rng, &data)
        };
        let cuts = splits(&mut rng, input.len());
        let out = catch_unwind(AssertUnwindSafe(|| {
            decode_chunks(&columns, &key, &chunks(&input, &cuts), 4096)
        }));
        match out {
            Err(_) => panics.push(format!("case {case} (seed {seed:#x})")),
            Ok(r) if case % 4 == 0 => assert_eq!(r.as_ref(), Ok(&whole), "case {case}: split at {cuts:?}"),
            Ok(Err(_)) => errors += 1,
            Ok(Ok(_)) => {}
        }
    }
    // Random bytes, with and without the signature in front.
    for case in 0..1000u32 {
        let mut input: Vec<u8> = if case % 2 == 0 { data[..19].to_vec() } else { Vec::new() };
        input.extend((0..rng.below(512)).map(|_| rng.next() as u8));
        let cuts = splits(&mut rng, input.len());
        if catch_unwind(AssertUnwindSafe(|| {
            decode_chunks(&columns, &key, &chunks(&input, &cuts), 4096)
        }))
        .is_err()
        {
            panics.push(format!("random case {case}"));
        }
    }
    assert!(panics.is_empty(), "the decoder panicked: {panics:?}");
    assert!(errors > 1000, "most mutations are caught as errors: {errors}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warehouses_parquet_read_back_never_panics_on_a_damaged_part() -> Result<()> {
    let url = db("fuzzparquet", TYPES).await?;
    let dir = stage_dir("fuzz-parquet");
    let client = connect(&url).await?;
    let table = TableRef::new("public", "f");
    let catalog = describe_table(&client, &table).await?;
    let task = ExtractTask {
        task_id: String::new(),
        run_id: "fuzz".into(),
        plan_id: String::new(),
        table: table.clone(),
        columns: column_specs(&catalog, &TypePolicies::default(), &[])?,
        key: vec!["id".into()],
        range_index: 0,
        bounds: Bounds::Key {
            lower: None,
            upper: None,
        },
        stage: format!("file://{}", dir.display()),
        writer: WriterSettings {
            row_group_bytes: 16 * 1024,
            ..WriterSettings::default()
        },
        statement_timeout_secs: 60,
        source_endpoint: None,
        diff: None,
        since: None,
    };
    pgshift::extract(&ctx(&url), task).await?;
    let file = list_files(&dir)
        .into_iter()
        .find(|f| f.ends_with(".parquet"))
        .expect("a part");
    let part = std::fs::read(dir.join(file))?;
    // The decoding runs on a blocking thread, as the warehouse runs it.
    let (panics, errors) = tokio::task::spawn_blocking(move || {
        let whole = pgshift::warehouse::postgres::read_part_bytes(bytes::Bytes::from(part.clone()));
        assert!(whole.is_ok_and(|n| n > 0));
        let mut rng = Rng(0xd1b5_4a32_d192_ed03);
        let (mut panics, mut errors) = (Vec::new(), 0usize);
        for case in 0..1500u32 {
            let seed = rng.0;
            let damaged = bytes::Bytes::from(mutate(&mut rng, &part));
            match catch_unwind(|| pgshift::warehouse::postgres::read_part_bytes(damaged)) {
                Err(_) => panics.push(format!("case {case} (seed {seed:#x})")),
                Ok(Err(_)) => errors += 1,
                Ok(Ok(_)) => {}
            }
        }
        (panics, errors)
    })
    .await?;
    assert!(panics.is_empty(), "the Parquet read-back panicked: {panics:?}");
    assert!(errors > 100, "damage is reported as errors: {errors}");
    Ok(())
}
