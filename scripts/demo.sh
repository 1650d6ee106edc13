#!/usr/bin/env bash
# The demo, on embedded defaults: no AWS account, no network. A throwaway local PostgreSQL (its server binaries
# installed by `scripts/setup.sh --demo` if absent: nothing else the tests need) with a seeded star schema (a fact table of a few million rows with a skewed key, several
# dimensions, a UUID-keyed table), moved by `pgshift run`: the state machine of statemachine/pipeline.asl.json run
# locally, planning balanced key ranges, extracting them in parallel to Parquet on a local stage, and loading them into
# a second database. It ends with the summary, the reconciliation, and where the files and the warehouse are.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --demo
cargo build --profile cli -q -p pgshift-cli
PGSHIFT=$PWD/target/cli/pgshift

BIN=${PGSHIFT_PG_BIN:-$( (pg_config --bindir 2>/dev/null | grep -q . && [ -x "$(pg_config --bindir)/initdb" ] && pg_config --bindir) || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
WORK=${PGSHIFT_DEMO_DIR:-/tmp/pgshift-demo}
FACT_ROWS=${PGSHIFT_DEMO_ROWS:-3000000}
KEEP=${PGSHIFT_DEMO_KEEP:-0}
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 755 "$WORK"
RUN=(); if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; RUN=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"${RUN[@]}" "$BIN/initdb" -D "$WORK/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 --no-sync >/dev/null
"${RUN[@]}" "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $WORK -c fsync=off -c max_connections=100" start >/dev/null
if [ "$KEEP" = 1 ]; then
  echo "== PostgreSQL stays up (PGSHIFT_DEMO_KEEP=1): $BIN/pg_ctl -D $WORK/data stop"
else
  trap '"${RUN[@]}" "$BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null' EXIT
fi
SOURCE="postgres://postgres@127.0.0.1:$PORT/postgres"

echo "== seeding a sales star schema ($FACT_ROWS fact rows) on a throwaway PostgreSQL at 127.0.0.1:$PORT"
psql -X -q -v ON_ERROR_STOP=1 -v rows="$FACT_ROWS" -f scripts/demo-schema.sql "$SOURCE"
psql -X -q "$SOURCE" -c "CREATE DATABASE warehouse"
WAREHOUSE="postgres://postgres@127.0.0.1:$PORT/warehouse"

echo "== pgshift run: the state machine of statemachine/pipeline.asl.json, locally"
"$PGSHIFT" run --source "$SOURCE" --tables 'sales.*' --stage "file://$WORK/stage" --warehouse "$WAREHOUSE" \
  --target-part-mib 32 --concurrency 4

echo "== for scale, in the same run: the raw binary COPY of the same tables to /dev/null, one after another"
t0=$(date +%s.%N)
for t in sales.customers sales.products sales.stores sales.days sales.orders; do
  psql -X -q "$SOURCE" -c "\\copy (SELECT * FROM $t) TO '/dev/null' (FORMAT binary)"
done
python3 -c "import sys; print('  raw COPY out: %.1f s (pgshift run above: plan, extract to Parquet and load)' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)"

echo "== a second look, straight from the warehouse: rows per table in source and target"
for t in sales.customers sales.products sales.stores sales.days sales.orders; do
  s=$(psql -X -At "$SOURCE" -c "SELECT count(*) FROM $t"); w=$(psql -X -At "$WAREHOUSE" -c "SELECT count(*) FROM $t")
  printf '  %-16s source %9s  warehouse %9s  %s\n' "$t" "$s" "$w" "$([ "$s" = "$w" ] && echo ok || echo MISMATCH)"
done
echo "== a snapshot run: snapshot the source, change it, load from the snapshot (docs/snapshots.md)"
"$PGSHIFT" snapshot create --source "$SOURCE" --id demo-nightly --snapshot-dir "$WORK/rds"
psql -X -q -v ON_ERROR_STOP=1 "$SOURCE" <<'SQL'
INSERT INTO sales.customers SELECT md5('late' || g)::uuid, 'late ' || g, 'DE', DATE '2026-12-01' FROM generate_series(1, 500) g;
UPDATE sales.orders SET amount = amount + 1 WHERE id % 13 = 0;
DELETE FROM sales.orders WHERE id % 17 = 0;
UPDATE sales.products SET price = price * 2 WHERE id <= 100;
SQL
echo "   the source changed after the snapshot: 500 customers inserted, orders updated and deleted, prices doubled"
psql -X -q "$SOURCE" -c "CREATE DATABASE snapshot_warehouse"
SNAP_WAREHOUSE="postgres://postgres@127.0.0.1:$PORT/snapshot_warehouse"
"$PGSHIFT" run --snapshot demo-nightly --snapshot-dir "$WORK/rds" --source "$SOURCE" --tables 'sales.*' \
  --stage "file://$WORK/stage" --warehouse "$SNAP_WAREHOUSE" --target-part-mib 32 --concurrency 4
# A per-table fingerprint: the row count and the sum of every row's hash. The first load above read the source
# before the snapshot was taken and nothing changed in between, so it holds exactly what the snapshot holds.
fp() { psql -X -At "$1" -c "SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM $2 t"; }
echo "== the snapshot run's warehouse against the snapshot and against the changed source"
for t in sales.customers sales.products sales.stores sales.days sales.orders; do
  at_snapshot=$(fp "$WAREHOUSE" "$t"); loaded=$(fp "$SNAP_WAREHOUSE" "$t")
  live=$(psql -X -At "$SOURCE" -c "SELECT count(*) FROM $t")
  printf '  %-16s snapshot %-24s snapshot run %-24s %s (live source now %s rows)\n' "$t" "$at_snapshot" "$loaded" \
    "$([ "$at_snapshot" = "$loaded" ] && echo "matches the snapshot" || echo MISMATCH)" "$live"
done
leftover=$(ls "$WORK/rds/instances" 2>/dev/null | wc -l)
echo "   restored servers left running: $leftover (each run deletes its own; pgshift gc removes a killed run's)"
echo "== plans, results, manifests, ledgers and reports: $WORK/stage (the Parquet parts are deleted once a run's load committed; --keep-parts keeps them)"
for r in "$WORK"/stage/*/report.html; do
  [ -e "$r" ] && echo "== how the data moved (timeline, skew, load steps, cost): open $r in a browser"
done
echo "== warehouse: $WAREHOUSE ($([ "$KEEP" = 1 ] && echo "still running" || echo "stopped with this script; PGSHIFT_DEMO_KEEP=1 keeps it"))"
