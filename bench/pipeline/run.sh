#!/usr/bin/env bash
# Pipeline benchmark: the example pipeline on N generated health rows (default 10M),
# amora vs DuckDB on the same Parquet input, one run. Usage: bench/pipeline/run.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS="${1:-10000000}"
shift || true
. bench/lib.sh
bench_setup venv-bench duckdb "duckdb==1.5.5"
WORK="$BUILD_DIR/bench-pipeline"
DATA="$WORK/health-$ROWS.parquet"
mkdir -p "$WORK"
if [ ! -f "$DATA" ]; then
  echo "generating $ROWS health rows -> $DATA"
  "$AMORA" generate-health --rows "$ROWS" --sources 200 --days 90 --output "$DATA"
fi
rm -rf "$WORK/project"
"$AMORA" init "$WORK/project" --rows 10 >/dev/null
sed -i "s|path: data/health.csv|path: $DATA|; s|format: csv|format: parquet|" "$WORK/project/sources/health.yml"
exec "$VENV/bin/python" bench/pipeline/run.py "$AMORA" "$WORK/project" "$DATA" "$@"
