#!/usr/bin/env bash
# Demo on embedded defaults, no AWS account and no network: a throwaway local PostgreSQL, a seeded table of mixed
# types, and `pgshift extract` of two key ranges into Parquet on a local stage. (The whole pipeline — plan, Map of
# extractors, load — joins this demo as its issues land.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q -p pgshift-cli
PGSHIFT=target/release/pgshift

BIN=${PGSHIFT_PG_BIN:-$( (pg_config --bindir 2>/dev/null | grep -q . && [ -x "$(pg_config --bindir)/initdb" ] && pg_config --bindir) || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
WORK=${PGSHIFT_DEMO_DIR:-/tmp/pgshift-demo}
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 755 "$WORK"
RUN=(); if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; RUN=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"${RUN[@]}" "$BIN/initdb" -D "$WORK/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 --no-sync >/dev/null
"${RUN[@]}" "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $WORK -c fsync=off" start >/dev/null
trap '"${RUN[@]}" "$BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null' EXIT
SOURCE="postgres://postgres@127.0.0.1:$PORT/postgres"

echo "== seeding sales.orders (200,000 rows) on a throwaway PostgreSQL at 127.0.0.1:$PORT"
psql -X -q -v ON_ERROR_STOP=1 "$SOURCE" <<'SQL'
CREATE SCHEMA sales;
CREATE TYPE sales.status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE sales.orders (
  id bigint PRIMARY KEY, customer uuid NOT NULL, amount numeric(12,2) NOT NULL, discount float8,
  status sales.status NOT NULL, note text, placed_at timestamptz NOT NULL, tags text[], attrs jsonb);
INSERT INTO sales.orders
SELECT g, md5('c' || g % 5000)::uuid, (g % 100000) / 100.0, CASE WHEN g % 10 = 0 THEN NULL ELSE (g % 30) / 100.0 END,
       (ARRAY['new','paid','shipped']::sales.status[])[g % 3 + 1], CASE WHEN g % 7 = 0 THEN 'gift ' || g END,
       TIMESTAMPTZ '2024-01-01' + g * INTERVAL '13 seconds', ARRAY['t' || g % 4], jsonb_build_object('n', g % 9)
FROM generate_series(1, 200000) g;
ANALYZE sales.orders;
SQL

STAGE="file://$WORK/stage"
echo "== pgshift extract: ids [1, 100001) and [100001, ∞) → $STAGE"
"$PGSHIFT" extract --source "$SOURCE" --table sales.orders --upper 100001 --range-index 0 --run-id demo --stage "$STAGE" >"$WORK/range0.json"
"$PGSHIFT" extract --source "$SOURCE" --table sales.orders --lower 100001 --range-index 1 --run-id demo --stage "$STAGE" >"$WORK/range1.json"
python3 - "$WORK" <<'PY'
import json, sys, pyarrow.parquet as pq
work = sys.argv[1]
total = 0
for i in (0, 1):
    r = json.load(open(f"{work}/range{i}.json"))
    total += r["rows"]
    for f in r["files"]:
        t = pq.read_table(f["url"][len("file://"):])
        print(f"range {i}: {r['rows']:>7} rows in {r['seconds']:.2f} s, first key {r['first_key'][0]['value']}, "
              f"{f['bytes']/1e6:.1f} MB -> {f['url']}")
print(f"total {total} rows; Parquet schema as pyarrow reads it:")
print(pq.read_schema(json.load(open(f"{work}/range0.json"))["files"][0]["url"][len("file://"):]))
PY
echo "== results (ExtractResult JSON): $WORK/range0.json $WORK/range1.json"
