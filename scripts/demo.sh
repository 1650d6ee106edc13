#!/usr/bin/env bash
# Demo on embedded defaults, no AWS account and no network: a throwaway local PostgreSQL with a seeded star schema,
# planned into balanced key ranges, every range extracted to Parquet on a local stage, and loaded into a second
# database (the PostgreSQL warehouse), then reconciled. (The state machine that runs these steps as one pipeline
# comes with its issue.)
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

echo "== seeding a sales star schema on a throwaway PostgreSQL at 127.0.0.1:$PORT"
psql -X -q -v ON_ERROR_STOP=1 "$SOURCE" <<'SQL'
CREATE SCHEMA sales;
CREATE TYPE sales.status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE sales.customers (id uuid PRIMARY KEY, name text NOT NULL, country char(2) NOT NULL);
INSERT INTO sales.customers SELECT md5('c' || g)::uuid, 'customer ' || g, (ARRAY['DE','FR','US','JP'])[g % 4 + 1]
FROM generate_series(1, 5000) g;
CREATE TABLE sales.products (id int4 PRIMARY KEY, title text NOT NULL, price numeric(10,2) NOT NULL);
INSERT INTO sales.products SELECT g, 'product ' || g, (g % 500) + 0.99 FROM generate_series(1, 2000) g;
-- The fact table: a skewed key (90% of ids in a dense band, the rest spread up to 1e12).
CREATE TABLE sales.orders (
  id bigint PRIMARY KEY, customer uuid NOT NULL, product int4 NOT NULL, amount numeric(12,2) NOT NULL, discount float8,
  status sales.status NOT NULL, note text, placed_at timestamptz NOT NULL, tags text[], attrs jsonb);
INSERT INTO sales.orders
SELECT k, md5('c' || k % 5000)::uuid, k % 2000 + 1, (k % 100000) / 100.0, CASE WHEN k % 10 = 0 THEN NULL ELSE (k % 30) / 100.0 END,
       (ARRAY['new','paid','shipped']::sales.status[])[k % 3 + 1], CASE WHEN k % 7 = 0 THEN 'gift ' || k END,
       TIMESTAMPTZ '2024-01-01' + (k % 1000000) * INTERVAL '13 seconds', ARRAY['t' || k % 4], jsonb_build_object('n', k % 9)
FROM (SELECT DISTINCT CASE WHEN g % 10 < 9 THEN g ELSE abs(hashint8extended(g, 7)) % 1000000000000 END AS k
      FROM generate_series(1, 300000) g) s;
ANALYZE;
SQL
psql -X -q "$SOURCE" -c "CREATE DATABASE warehouse"
WAREHOUSE="postgres://postgres@127.0.0.1:$PORT/warehouse"

STAGE="file://$WORK/stage"
echo "== pgshift plan: 'sales.*' into 4 parts per table"
"$PGSHIFT" plan --source "$SOURCE" --tables 'sales.*' --stage "$STAGE" --parts 4 --explain --verify | tee "$WORK/plan.txt"
RUN_DIR=$(sed -n 's|.*"tasks_url": "file://\(.*\)/tasks.json".*|\1|p' "$WORK/plan.txt")

echo "== pgshift extract: every task of $RUN_DIR/tasks.json"
python3 - "$RUN_DIR/tasks.json" "$WORK/tasks" <<'PY'
import json, os, sys
os.makedirs(sys.argv[2], exist_ok=True)
for i, t in enumerate(json.load(open(sys.argv[1]))):
    json.dump(t, open(f"{sys.argv[2]}/{i:04d}.json", "w"))
PY
for t in "$WORK"/tasks/*.json; do
  "$PGSHIFT" extract --source "$SOURCE" --task "$t" --stage "$STAGE" | python3 -c '
import json, sys
r = json.load(sys.stdin)
table = r["table"]["schema"] + "." + r["table"]["name"]
mb = sum(f["bytes"] for f in r["files"]) / 1e6
print("  %-16s range %d: %7d rows, %6.2f MB Parquet in %.2f s" % (table, r["range_index"], r["rows"], mb, r["seconds"]))'
done

echo "== pgshift load: into $WAREHOUSE (replace, one transaction per table)"
"$PGSHIFT" load --plan "file://$RUN_DIR/plan.json" --warehouse "$WAREHOUSE" >"$WORK/load.json"
echo "== reconciliation: rows in source and warehouse"
for t in sales.customers sales.products sales.orders; do
  s=$(psql -X -At "$SOURCE" -c "SELECT count(*) FROM $t"); w=$(psql -X -At "$WAREHOUSE" -c "SELECT count(*) FROM $t")
  printf '  %-16s source %8s  warehouse %8s  %s\n' "$t" "$s" "$w" "$([ "$s" = "$w" ] && echo ok || echo MISMATCH)"
done
echo "== stage: $WORK/stage   warehouse: $WAREHOUSE (stops with this script)   plan and results: $WORK"
