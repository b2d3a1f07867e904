# Shared set-up for the benchmarks: the build folder, a virtualenv with the peers,
# and a release build of amora. Source it from bench/*/run.sh after `cd` to the repo root.
#   bench_setup VENV_NAME "IMPORTS" PIP_SPEC...
BUILD_DIR="${AMORA_BUILD_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BUILD_DIR}"
AMORA="$CARGO_TARGET_DIR/release/amora"

bench_setup() {
  local name="$1" imports="$2"
  shift 2
  VENV="$BUILD_DIR/$name"
  if ! "$VENV/bin/python" -c "import $imports" >/dev/null 2>&1; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet "$@"
  fi
  cargo build --release --quiet -p amora-cli
}
