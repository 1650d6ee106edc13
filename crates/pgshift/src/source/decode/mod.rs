//! Binary COPY → Arrow. The stream is parsed tuple by tuple straight into one Arrow builder per column: no per-row
//! or per-field allocation (builders grow amortized, text is validated and copied once into the value buffer).
//! A tuple is first walked to check it is complete, so a tuple split across network chunks is never half-appended.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use crate::contract::model::{ColumnSpec, KeyType, KeyValue};
use crate::contract::pgtext::{self, NumericWire};
use crate::contract::types::{InfinityPolicy, Mapping};

mod sieved;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Why decoding stopped.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// The stream does not follow the binary COPY format.
    Protocol(String),
    /// A value cannot be represented under its column's mapping.
    Value {
        column: usize,
        reason: String,
        key: Option<Vec<KeyValue>>,
    },
}

enum Col {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    Oid(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Text(StringBuilder, TextKind),
    Binary(BinaryBuilder),
    Date(Date32Builder, InfinityPolicy),
    Ts(TimestampMicrosecondBuilder, InfinityPolicy, Option<Arc<str>>),
}

#[derive(Clone, Copy)]
enum TextKind {
    Plain,
    Jsonb,
    Uuid,
}

struct Column {
    col: Col,
    mapping: Mapping,
    max_len: u64,
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("expected {N} bytes on the wire, got {}", b.len()))
}

/// A fresh builder for `m`, sized for `rows` values and `bytes` of variable-length data, so that a batch's builders
/// do not regrow (and copy) from empty every time.
fn new_col(m: &Mapping, rows: usize, bytes: usize) -> Col {
    match *m {
        Mapping::Bool => Col::Bool(BooleanBuilder::with_capacity(rows)),
        Mapping::Int16 => Col::I16(Int16Builder::with_capacity(rows)),
        Mapping::Int32 => Col::I32(Int32Builder::with_capacity(rows)),
        Mapping::Int64 => Col::I64(Int64Builder::with_capacity(rows)),
        Mapping::Oid => Col::Oid(Int64Builder::with_capacity(rows)),
        Mapping::Float32 => Col::F32(Float32Builder::with_capacity(rows)),
        Mapping::Float64 => Col::F64(Float64Builder::with_capacity(rows)),
        Mapping::Decimal { precision, scale } => Col::Decimal(
            Decimal128Builder::with_capacity(rows).with_data_type(m.arrow_type()),
            precision,
            scale,
        ),
        Mapping::Text | Mapping::Json => Col::Text(StringBuilder::with_capacity(rows, bytes), TextKind::Plain),
        Mapping::Jsonb => Col::Text(StringBuilder::with_capacity(rows, bytes), TextKind::Jsonb),
        Mapping::Uuid => Col::Text(StringBuilder::with_capacity(rows, rows * 36), TextKind::Uuid),
        Mapping::Binary => Col::Binary(BinaryBuilder::with_capacity(rows, bytes)),
        Mapping::Date { infinity } => Col::Date(Date32Builder::with_capacity(rows), infinity),
        Mapping::Timestamp { infinity } => Col::Ts(TimestampMicrosecondBuilder::with_capacity(rows), infinity, None),
        Mapping::TimestampTz { infinity } => Col::Ts(
            TimestampMicrosecondBuilder::with_capacity(rows),
            infinity,
            Some(Arc::from("UTC")),
        ),
    }
}

impl Column {
    fn new(m: &Mapping) -> Self {
        Column {
            col: new_col(m, 1024, 0),
            mapping: *m,
            max_len: 0,
        }
    }

    fn append_null(&mut self) {
        match &mut self.col {
            Col::Bool(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) | Col::Oid(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Decimal(b, ..) => b.append_null(),
            Col::Text(b, _) => b.append_null(),
            Col::Binary(b) => b.append_null(),
            Col::Date(b, _) => b.append_null(),
            Col::Ts(b, ..) => b.append_null(),
        }
    }

    #[inline]
    fn append(&mut self, v: &[u8]) -> Result<(), String> {
        match &mut self.col {
            Col::Bool(b) => match v {
                [x] => b.append_value(*x != 0),
                _ => return Err(format!("expected 1 byte for bool, got {}", v.len())),
            },
            Col::I16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Col::I32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Col::I64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Col::Oid(b) => b.append_value(u32::from_be_bytes(fixed(v)?) as i64),
            Col::F32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Col::F64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Col::Decimal(b, p, s) => {
                let n = NumericWire::parse(v)?;
                b.append_value(n.to_scaled_i128(*p, *s).map_err(|e| format!("{} {e}", n.to_text()))?);
            }
            Col::Text(b, kind) => {
                let s = match kind {
                    TextKind::Plain => utf8(v)?,
                    TextKind::Jsonb => match v.split_first() {
                        Some((1, rest)) => utf8(rest)?,
                        Some((ver, _)) => return Err(format!("unknown jsonb format version {ver}")),
                        None => return Err("empty jsonb value".into()),
                    },
                    TextKind::Uuid => {
                        let text = pgtext::uuid(&fixed(v)?);
                        self.max_len = self.max_len.max(36);
                        // SAFETY-free: the formatter only emits ASCII hex and dashes.
                        b.append_value(std::str::from_utf8(&text).map_err(|e| e.to_string())?);
                        return Ok(());
                    }
                };
                self.max_len = self.max_len.max(s.len() as u64);
                b.append_value(s);
            }
            Col::Binary(b) => {
                self.max_len = self.max_len.max(v.len() as u64);
                b.append_value(v);
            }
            Col::Date(b, inf) => super::datetime::append_date(b, *inf, v)?,
            Col::Ts(b, inf, _) => super::datetime::append_timestamp(b, *inf, v)?,
        }
        Ok(())
    }

    /// Values and variable-length bytes in the builder.
    fn size(&self) -> (usize, usize) {
        match &self.col {
            Col::Bool(b) => (b.len(), 0),
            Col::I16(b) => (b.len(), 0),
            Col::I32(b) => (b.len(), 0),
            Col::I64(b) | Col::Oid(b) => (b.len(), 0),
            Col::F32(b) => (b.len(), 0),
            Col::F64(b) => (b.len(), 0),
            Col::Decimal(b, ..) => (b.len(), 0),
            Col::Text(b, _) => (b.len(), b.values_slice().len()),
            Col::Binary(b) => (b.len(), b.values_slice().len()),
            Col::Date(b, _) => (b.len(), 0),
            Col::Ts(b, ..) => (b.len(), 0),
        }
    }

    /// The built array; the builder starts over sized like this batch plus an eighth.
    fn finish(&mut self) -> ArrayRef {
        let (rows, bytes) = self.size();
        let fresh = new_col(&self.mapping, rows + rows / 8, bytes + bytes / 8);
        match std::mem::replace(&mut self.col, fresh) {
            Col::Bool(mut b) => Arc::new(b.finish()),
            Col::I16(mut b) => Arc::new(b.finish()),
            Col::I32(mut b) => Arc::new(b.finish()),
            Col::I64(mut b) | Col::Oid(mut b) => Arc::new(b.finish()),
            Col::F32(mut b) => Arc::new(b.finish()),
            Col::F64(mut b) => Arc::new(b.finish()),
            Col::Decimal(mut b, ..) => Arc::new(b.finish()),
            Col::Text(mut b, _) => Arc::new(b.finish()),
            Col::Binary(mut b) => Arc::new(b.finish()),
            Col::Date(mut b, _) => Arc::new(b.finish()),
            Col::Ts(mut b, _, tz) => Arc::new(b.finish().with_timezone_opt(tz)),
        }
    }
}

#[inline]
fn utf8(v: &[u8]) -> Result<&str, String> {
    // SIMD validation; on failure the std error says where.
    simdutf8::basic::from_utf8(v).map_err(|_| match std::str::from_utf8(v) {
        Err(e) => format!("invalid UTF-8 in text value: {e}"),
        Ok(_) => "invalid UTF-8 in text value".to_string(),
    })
}

/// Decodes a binary COPY stream, chunk by chunk, into record batches of about `batch_bytes` decoded bytes.
pub(crate) struct CopyDecoder {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// For each key column: its position in the output columns and its type.
    key_fields: Vec<(usize, KeyType)>,
    batch_bytes: usize,
    header_done: bool,
    trailer_seen: bool,
    rows_in_batch: usize,
    bytes_in_batch: usize,
    /// Field offsets of the tuple being decoded: (start, length or -1), reused across tuples.
    fields: Vec<(usize, i32)>,
    /// Unparsed tail of the previous chunk (a tuple split across chunks).
    carry: Vec<u8>,
    pub rows: u64,
    pub first_key: Option<Vec<KeyValue>>,
    last_key_raw: Vec<u8>,
    last_key_bounds: Vec<(usize, i32)>,
    /// The fields a tuple has on the wire: every column's, but the deleted flag's of a row-by-row comparison.
    wire: usize,
    /// Fields after the wire's columns: a versioned comparison's two version fields.
    extra: usize,
    sieve: Option<super::sieve::Sieve>,
}

impl CopyDecoder {
    pub(crate) fn new(schema: SchemaRef, columns: &[ColumnSpec], key: &[String], batch_bytes: usize) -> Self {
        let key_fields = key
            .iter()
            .map_while(|k| {
                let i = columns.iter().position(|c| &c.name == k)?;
                Some((i, KeyType::from_oid(columns[i].pg_type.oid)?))
            })
            .collect::<Vec<_>>();
        // Track the key only when every key column is extracted in its wire form.
        let key_fields = if key_fields.len() == key.len()
            && key
                .iter()
                .all(|k| columns.iter().find(|c| &c.name == k).is_some_and(|c| c.cast.is_none()))
        {
            key_fields
        } else {
            Vec::new()
        };
        CopyDecoder {
            schema,
            columns: columns.iter().map(|c| Column::new(&c.mapping)).collect(),
            key_fields,
            batch_bytes: batch_bytes.max(1),
            header_done: false,
            trailer_seen: false,
            rows_in_batch: 0,
            bytes_in_batch: 0,
            fields: Vec::with_capacity(columns.len()),
            carry: Vec::new(),
            rows: 0,
            first_key: None,
            last_key_raw: Vec::new(),
            last_key_bounds: Vec::new(),
            wire: columns.len(),
            extra: 0,
            sieve: None,
        }
    }

    /// Ends one COPY stream of several: it must have ended with its trailer; the next one starts with its header.
    pub(crate) fn next_stream(&mut self) -> Result<(), DecodeError> {
        self.check_ended()?;
        self.header_done = false;
        self.trailer_seen = false;
        Ok(())
    }

    /// No stream to read: a first pass of keys and versions decided every row of the range (the deletes remain).
    pub(crate) fn no_stream(&mut self) {
        self.header_done = true;
        self.trailer_seen = true;
    }

    fn check_ended(&self) -> Result<(), DecodeError> {
        if !self.trailer_seen {
            return Err(DecodeError::Protocol("the stream ended before the COPY trailer".into()));
        }
        if !self.carry.is_empty() {
            return Err(DecodeError::Protocol(format!(
                "{} bytes follow the COPY trailer",
                self.carry.len()
            )));
        }
        Ok(())
    }

    /// Feeds one chunk of the stream; calls `emit` for every full batch.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        emit: &mut dyn FnMut(RecordBatch) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        if self.carry.is_empty() {
            let used = self.parse(chunk, emit)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(chunk);
            let used = self.parse(&carry, emit)?;
            carry.drain(..used);
            self.carry = carry;
        }
        Ok(())
    }

    /// Ends the stream: checks the trailer arrived and nothing follows it, and returns the last partial batch.
    pub(crate) fn finish(mut self) -> Result<(Option<RecordBatch>, DecoderSummary), DecodeError> {
        self.check_ended()?;
        let diff = match self.sieve.take() {
            Some(sieve) => Some(self.append_deletes(sieve)?),
            None => None,
        };
        let batch = if self.rows_in_batch > 0 {
            Some(self.take_batch()?)
        } else {
            None
        };
        let last_key = if self.key_fields.is_empty() || self.rows == 0 {
            None
        } else {
            Some(self.render_saved_key().map_err(DecodeError::Protocol)?)
        };
        let max_value_bytes = self.columns.iter().map(|c| c.max_len).collect();
        Ok((
            batch,
            DecoderSummary {
                rows: self.rows,
                first_key: self.first_key,
                last_key,
                max_value_bytes,
                diff,
            },
        ))
    }

    fn take_batch(&mut self) -> Result<RecordBatch, DecodeError> {
        let arrays = self.columns.iter_mut().map(Column::finish).collect::<Vec<_>>();
        self.rows_in_batch = 0;
        self.bytes_in_batch = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| DecodeError::Protocol(e.to_string()))
    }

    /// Parses as many whole tuples from `buf` as it holds; returns the bytes consumed.
    fn parse(
        &mut self,
        buf: &[u8],
        emit: &mut dyn FnMut(RecordBatch) -> Result<(), DecodeError>,
    ) -> Result<usize, DecodeError> {
        let mut pos = 0;
        if !self.header_done {
            match header_len(buf)? {
                Some(n) => pos = n,
                None => return Ok(0),
            }
            self.header_done = true;
        }
        while pos + 2 <= buf.len() {
            if self.trailer_seen {
                return Err(DecodeError::Protocol("data after the COPY trailer".into()));
            }
            let count = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
            if count == -1 {
                self.trailer_seen = true;
                pos += 2;
                continue;
            }
            let Some(end) = self.frame_tuple(buf, pos, count)? else {
                break;
            };
            if let Some(sieve) = &mut self.sieve {
                let fields = &self.fields;
                let keys = self.key_fields.iter().map(|&(i, _)| slice(buf, fields[i]));
                let versions_at = (self.extra > 0).then(|| fields[self.wire].0 - 4 - pos);
                if !sieve.keep(&buf[pos..end], versions_at, keys) {
                    pos = end;
                    continue;
                }
            }
            self.append_tuple(buf, false)?;
            self.rows += 1;
            self.rows_in_batch += 1;
            self.bytes_in_batch += end - pos;
            pos = end;
            if self.bytes_in_batch >= self.batch_bytes {
                let batch = self.take_batch()?;
                emit(batch)?;
            }
        }
        Ok(pos)
    }

    /// Frames the tuple at `pos` (its field count read already) into `self.fields`: each field's start and length.
    /// Returns where the tuple ends, or `None` when the buffer does not hold all of it yet.
    #[inline]
    fn frame_tuple(&mut self, buf: &[u8], pos: usize, count: i16) -> Result<Option<usize>, DecodeError> {
        let ncols = self.wire + self.extra;
        if count as usize != ncols {
            return Err(DecodeError::Protocol(format!(
                "tuple has {count} fields, expected {ncols}"
            )));
        }
        self.fields.clear();
        let mut p = pos + 2;
        for _ in 0..ncols {
            if p + 4 > buf.len() {
                return Ok(None);
            }
            let len = i32::from_be_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]);
            p += 4;
            self.fields.push((p, len));
            if len > 0 {
                p += len as usize;
                if p > buf.len() {
                    return Ok(None);
                }
            } else if len < -1 {
                return Err(DecodeError::Protocol(format!("negative field length {len}")));
            }
        }
        Ok(Some(p))
    }

    /// Converts the framed tuple's values into the column builders, and keeps its key when the range has one.
    #[inline]
    fn append_tuple(&mut self, buf: &[u8], deleted: bool) -> Result<(), DecodeError> {
        if self.wire < self.columns.len() {
            // The deleted flag, as its wire form would be (one byte).
            let flag = [u8::from(deleted)];
            if let Some(col) = self.columns.last_mut() {
                col.append(&flag).map_err(DecodeError::Protocol)?;
            }
        }
        for (i, &(start, len)) in self.fields.iter().take(self.wire).enumerate() {
            let col = &mut self.columns[i];
            if len < 0 {
                col.append_null();
            } else if let Err(reason) = col.append(&buf[start..start + len as usize]) {
                let key = self.render_key(buf, &self.fields).ok();
                return Err(DecodeError::Value { column: i, reason, key });
            }
        }
        if !self.key_fields.is_empty() {
            if self.rows == 0 {
                self.first_key = Some(self.render_key(buf, &self.fields).map_err(DecodeError::Protocol)?);
            }
            self.remember_last_key(buf);
        }
        Ok(())
    }

    /// Keeps the raw key fields of the latest row (a copy of a few bytes into a reused buffer).
    fn remember_last_key(&mut self, buf: &[u8]) {
        self.last_key_raw.clear();
        self.last_key_bounds.clear();
        for &(i, _) in &self.key_fields {
            let (start, len) = self.fields[i];
            let at = self.last_key_raw.len();
            if len > 0 {
                self.last_key_raw.extend_from_slice(&buf[start..start + len as usize]);
            }
            self.last_key_bounds.push((at, len));
        }
    }

    /// The key of the row whose fields are `fields` (offsets into `buf`, indexed by output column).
    fn render_key(&self, buf: &[u8], fields: &[(usize, i32)]) -> Result<Vec<KeyValue>, String> {
        render_key(self.key_fields.iter().map(|&(i, ty)| (ty, slice(buf, fields[i]))))
    }

    /// The key saved by [`Self::remember_last_key`].
    fn render_saved_key(&self) -> Result<Vec<KeyValue>, String> {
        let raw = &self.last_key_raw;
        render_key(
            self.key_fields
                .iter()
                .zip(&self.last_key_bounds)
                .map(|(&(_, ty), &f)| (ty, slice(raw, f))),
        )
    }
}

fn slice(buf: &[u8], (start, len): (usize, i32)) -> Option<&[u8]> {
    (len >= 0).then(|| &buf[start..start + len as usize])
}

fn render_key<'a>(parts: impl Iterator<Item = (KeyType, Option<&'a [u8]>)>) -> Result<Vec<KeyValue>, String> {
    parts
        .map(|(ty, v)| match v {
            Some(v) => pgtext::key_value(ty, v),
            None => Err("NULL in a key column".to_string()),
        })
        .collect()
}

/// What the decoder saw over the whole stream.
#[derive(Debug)]
pub(crate) struct DecoderSummary {
    pub rows: u64,
    pub first_key: Option<Vec<KeyValue>>,
    pub last_key: Option<Vec<KeyValue>>,
    /// Per output column, the longest value in bytes (0 for fixed-width columns).
    pub max_value_bytes: Vec<u64>,
    /// A row-by-row comparison's key file (compressed) and counts.
    pub diff: Option<(Vec<u8>, crate::contract::incremental::DiffCounts)>,
}

/// The length of the binary COPY header at the start of `buf` (signature, flags, extension), `None` while it is
/// incomplete.
pub(super) fn header_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 19 {
        return Ok(None);
    }
    if &buf[..11] != SIGNATURE {
        return Err(DecodeError::Protocol("missing binary COPY signature".into()));
    }
    let flags = u32::from_be_bytes([buf[11], buf[12], buf[13], buf[14]]);
    if flags & (1 << 16) != 0 {
        return Err(DecodeError::Protocol("COPY stream includes OIDs".into()));
    }
    let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
    Ok((buf.len() >= 19 + ext).then_some(19 + ext))
}

/// Decodes a binary COPY stream handed over in `chunks` (split anywhere) for the columns of a task, in batches of about
/// `batch_bytes`: the batches decoded, or the decoder's error. The fuzz targets' and the bounded fuzz test's entry: any input,
/// however malformed, must end in one of the two, never a panic; and however it is split, in the same batches.
#[doc(hidden)]
pub fn decode_chunks(
    columns: &[ColumnSpec],
    key: &[String],
    chunks: &[&[u8]],
    batch_bytes: usize,
) -> Result<Vec<RecordBatch>, String> {
    let schema = Arc::new(crate::contract::types::arrow_schema(columns));
    let mut d = CopyDecoder::new(schema, columns, key, batch_bytes);
    let mut batches = Vec::new();
    for c in chunks {
        d.feed(c, &mut |b| {
            batches.push(b);
            Ok(())
        })
        .map_err(|e| format!("{e:?}"))?;
    }
    let (last, _) = d.finish().map_err(|e| format!("{e:?}"))?;
    batches.extend(last);
    Ok(batches)
}
