#!/usr/bin/env bash
# Feature-server benchmark: `amora feature-store serve` vs `feast serve` (1 worker and
# one per CPU) on the same private Redis with the same materialized anchor data, load
# from wrk (Debian's `wrk`; installed here if missing). Usage: run.sh [--duration S]
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
bench_setup venv-bench-feast "feast, duckdb, ibis, redis" "feast[duckdb,redis]==0.67.0"
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
WORK="$BUILD_DIR/bench-serve"
DATA="$BUILD_DIR/bench-historical/anchor-data"
mkdir -p "$WORK"
if [ ! -f "$DATA/meta.json" ]; then
  "$VENV/bin/python" "${AMORA_SHARED:-../shared}/bench/gen_anchor_data.py" --out "$DATA"
fi
PORT="${AMORA_BENCH_REDIS_PORT:-6392}"
redis-server --bind 127.0.0.1 --port "$PORT" --daemonize yes --save "" --appendonly no \
  --dir "$WORK" --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log"
trap 'kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true' EXIT
until redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; do sleep 0.05; done
"$VENV/bin/python" bench/serve/run.py "$AMORA" "$DATA" "$WORK" "$PORT" "$@"
