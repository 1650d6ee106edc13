#!/usr/bin/env bash
# The demo, on embedded defaults: no AWS account, no network. A throwaway local PostgreSQL (installed by
# scripts/setup.sh if absent) with a seeded star schema (a fact table of a few million rows with a skewed key, several
# dimensions, a UUID-keyed table), moved by `pgshift run`: the state machine of statemachine/pipeline.asl.json run
# locally, planning balanced key ranges, extracting them in parallel to Parquet on a local stage, and loading them into
# a second database. It ends with the summary, the reconciliation, and where the files and the warehouse are.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
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
echo "== Parquet parts, manifests and plan: $WORK/stage"
for r in "$WORK"/stage/*/report.html; do
  [ -e "$r" ] && echo "== how the data moved (timeline, skew, load steps, cost): open $r in a browser"
done
echo "== warehouse: $WAREHOUSE ($([ "$KEEP" = 1 ] && echo "still running" || echo "stopped with this script; PGSHIFT_DEMO_KEEP=1 keeps it"))"
