#!/usr/bin/env bash
# BigQuery offline store benchmark, on the bqemulator (BigQuery REST + Storage Read,
# DuckDB inside): the example pipeline on N generated health rows (default 1M),
# training sets for E entity rows (default 100k) and a materialization, each on the
# embedded engine and on BigQuery, and BigQuery's results read through the Storage
# Read API vs REST paging, in one run. Usage: bench/bigquery/run.sh [ROWS] [ENTITY_ROWS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS="${1:-1000000}"
ENTITIES="${2:-100000}"
. bench/lib.sh
bench_setup venv-bench duckdb "duckdb==1.5.5"
. scripts/bqemulator.sh
bq_install "$BUILD_DIR"
WORK="$BUILD_DIR/bench-bigquery"
STATE="$(mktemp -d)"
mkdir -p "$WORK"
REST="${AMORA_BENCH_BQ_PORT:-19050}"
GRPC=$((REST + 1))
if curl -sf "http://127.0.0.1:$REST/readyz" >/dev/null 2>&1; then
  echo "port $REST already answers: set AMORA_BENCH_BQ_PORT to a free port" >&2
  exit 1
fi
bq_start "$STATE" "$REST" "$GRPC"
trap 'kill "$(cat "$STATE/bqemulator.pid")" 2>/dev/null || true; rm -rf "$STATE"' EXIT
bq_wait "$REST"
DATA="$WORK/health-$ROWS.parquet"
if [ ! -f "$DATA" ]; then
  echo "generating $ROWS health rows -> $DATA"
  "$AMORA" generate-health --rows "$ROWS" --sources 2000 --days 60 --output "$DATA"
fi
for p in embedded bigquery; do
  rm -rf "$WORK/$p"
  "$AMORA" init "$WORK/$p" --rows 10 >/dev/null
  sed -i "s|path: data/health.csv|path: $DATA|; s|format: csv|format: parquet|" "$WORK/$p/sources/health.yml"
done
python3 - "$WORK/bigquery/amora.yaml" "$REST" "$GRPC" <<'PY'
import sys, time
p, rest, grpc = sys.argv[1:]
s = open(p).read()
s = s.replace("  offline_store:\n    type: embedded\n",
              f"  offline_store:\n    type: bigquery\n    project_id: test-project\n    dataset: bench_{int(time.time())}\n"
              f"    endpoint: http://127.0.0.1:{rest}\n    storage_endpoint: http://127.0.0.1:{grpc}\n")
open(p, "w").write(s)
PY
# Not exec: the trap must stop the emulator when the benchmark ends.
"$VENV/bin/python" bench/bigquery/run.py "$AMORA" "$WORK" "$ENTITIES"
