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

# Python tools the tests compare against, pinned.
VENV="$BUILD_DIR/venv-feast-0.67.0"
if ! "$VENV/bin/python" -c 'import feast' >/dev/null 2>&1; then
  echo "== installing feast 0.67.0 into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "feast==0.67.0"
fi
export AMORA_FEAST_PYTHON="$VENV/bin/python"
export TEST_INTEGRATION=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace
