#!/usr/bin/env bash
# Registry benchmark: amora plan/apply vs feast apply, 2 and 1,000 feature views, one run.
# Installs Feast 0.67 into the build folder's venv if needed; builds amora in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${AMORA_BUILD_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BUILD_DIR}"
VENV="$BUILD_DIR/venv-feast-0.67.0"
if ! "$VENV/bin/python" -c 'import feast' >/dev/null 2>&1; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet "feast==0.67.0"
fi
cargo build --release --quiet -p amora-cli
exec "$VENV/bin/python" bench/registry/run.py "$CARGO_TARGET_DIR/release/amora" "$VENV/bin/feast" "$@"
