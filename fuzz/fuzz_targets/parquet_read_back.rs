//! The PostgreSQL warehouse's read-back of a Parquet part (decode, then binary COPY rows) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pgshift::warehouse::postgres::read_part_bytes(bytes::Bytes::copy_from_slice(data));
});
