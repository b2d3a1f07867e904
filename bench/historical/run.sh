#!/usr/bin/env bash
# Historical-retrieval benchmark on the anchor workload (../shared/bench/gen_anchor_data.py):
# amora vs DuckDB ASOF JOIN vs Feast 0.67's duckdb offline store, one run.
# Usage: bench/historical/run.sh [--sizes 10000,100000,1000000] [--repeat 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${AMORA_BUILD_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BUILD_DIR}"
VENV="$BUILD_DIR/venv-bench-feast"
if ! "$VENV/bin/python" -c 'import feast, duckdb, ibis' >/dev/null 2>&1; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet "feast[duckdb]==0.67.0"
fi
cargo build --release --quiet -p amora-cli
WORK="$BUILD_DIR/bench-historical"
DATA="$WORK/anchor-data"
mkdir -p "$WORK"
GEN="${AMORA_SHARED:-../shared}/bench/gen_anchor_data.py"
if [ ! -f "$DATA/meta.json" ]; then
  "$VENV/bin/python" "$GEN" --out "$DATA"
fi
exec "$VENV/bin/python" bench/historical/run.py "$CARGO_TARGET_DIR/release/amora" "$DATA" "$WORK" "$@"
