//! Parquet → canonical text, for comparing with what Postgres returns. Two independent readers: the `parquet`
//! crate here, and pyarrow (`tests/py/parquet_text.py`). Canonical forms: integers and decimals in plain decimal
//! notation (a decimal with exactly `scale` fractional digits), floats as the hex of their IEEE bits, booleans as
//! `true`/`false`, binary as lower-case hex, dates as days since 1970-01-01, timestamps as microseconds since the
//! epoch, text as is. NULL is `None`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Column name → values, rows in file order.
pub type Columns = Vec<(String, Vec<Option<String>>)>;

/// Reads files (concatenated, in order) with the `parquet` crate.
pub fn read_rust(files: &[impl AsRef<Path>]) -> Result<(Columns, Vec<(String, DataType)>)> {
    let mut cols: Columns = Vec::new();
    let mut types = Vec::new();
    for f in files {
        let file = std::fs::File::open(f.as_ref()).with_context(|| format!("open {}", f.as_ref().display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
        for batch in reader {
            let batch: RecordBatch = batch?;
            if cols.is_empty() {
                for field in batch.schema().fields() {
                    cols.push((field.name().clone(), Vec::new()));
                    types.push((field.name().clone(), field.data_type().clone()));
                }
            }
            for (i, array) in batch.columns().iter().enumerate() {
                for row in 0..array.len() {
                    cols[i].1.push(if array.is_null(row) {
                        None
                    } else {
                        Some(value(array.as_ref(), row)?)
                    });
                }
            }
        }
    }
    Ok((cols, types))
}

fn value(a: &dyn Array, i: usize) -> Result<String> {
    Ok(match a.data_type() {
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float32 => format!("{:08x}", a.as_primitive::<Float32Type>().value(i).to_bits()),
        DataType::Float64 => format!("{:016x}", a.as_primitive::<Float64Type>().value(i).to_bits()),
        DataType::Decimal128(_, scale) => decimal(a.as_primitive::<Decimal128Type>().value(i), *scale),
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::Binary => hex(a.as_binary::<i32>().value(i)),
        DataType::Date32 => a.as_primitive::<Date32Type>().value(i).to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            a.as_primitive::<TimestampMicrosecondType>().value(i).to_string()
        }
        other => bail!("no canonical text for {other}"),
    })
}

pub fn decimal(v: i128, scale: i8) -> String {
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let s = if scale == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{int}.{frac}")
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads files with pyarrow through `tests/py/parquet_text.py`.
pub fn read_pyarrow(files: &[impl AsRef<Path>]) -> Result<Columns> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/parquet_text.py");
    let python = std::env::var("PGSHIFT_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(files.iter().map(|f| f.as_ref().as_os_str()))
        .output()
        .with_context(|| format!("running {python} (the second Parquet reader; scripts/setup.sh installs pyarrow)"))?;
    if !out.status.success() {
        bail!(
            "pyarrow reader failed (scripts/setup.sh installs pyarrow): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Vec<(String, Vec<Option<String>>)> = serde_json::from_slice(&out.stdout)?;
    Ok(v)
}
