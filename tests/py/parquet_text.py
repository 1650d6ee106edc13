"""The second, independent Parquet reader of the tests: pyarrow.

Prints [[column, [value-or-null, ...]], ...] for the given files read in order, values in the canonical text forms
of tests/src/parquet_text.rs: integers and decimals in plain notation, floats as the hex of their IEEE bits,
booleans true/false, binary as hex, dates as days since 1970-01-01, timestamps as microseconds since the epoch.
"""
import json
import struct
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def canon(t, v):
    if v is None:
        return None
    if pa.types.is_boolean(t):
        return "true" if v else "false"
    if pa.types.is_float32(t):
        return struct.pack(">f", v).hex()
    if pa.types.is_float64(t):
        return struct.pack(">d", v).hex()
    if pa.types.is_decimal(t):
        return format(v, "f")
    if pa.types.is_binary(t):
        return v.hex()
    return str(v)


def column_values(col):
    t = col.type
    # Dates and timestamps beyond Python's datetime range: read their physical integers.
    if pa.types.is_date32(t):
        col, t = col.cast(pa.int32()), pa.int32()
    elif pa.types.is_timestamp(t):
        assert t.unit == "us", t
        col, t = col.cast(pa.int64()), pa.int64()
    return [canon(t, v) for v in col.to_pylist()]


def main(paths):
    table = pa.concat_tables([pq.read_table(p) for p in paths]) if paths else pa.table({})
    out = [[name, column_values(table.column(name).combine_chunks())] for name in table.column_names]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
