#!/usr/bin/env bash
# Historical-retrieval benchmark on the anchor workload (../shared/bench/gen_anchor_data.py):
# amora vs DuckDB ASOF JOIN vs Feast 0.67's duckdb offline store, one run.
# Usage: bench/historical/run.sh [--sizes 10000,100000,1000000] [--repeat 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
bench_setup venv-bench-feast "feast, duckdb, ibis" "feast[duckdb]==0.67.0"
WORK="$BUILD_DIR/bench-historical"
DATA="$WORK/anchor-data"
mkdir -p "$WORK"
GEN="${AMORA_SHARED:-../shared}/bench/gen_anchor_data.py"
if [ ! -f "$DATA/meta.json" ]; then
  "$VENV/bin/python" "$GEN" --out "$DATA"
fi
exec "$VENV/bin/python" bench/historical/run.py "$AMORA" "$DATA" "$WORK" "$@"
