#!/usr/bin/env bash
# The main job on the example project, with the embedded defaults (no services):
# build the binary, scaffold the health example, run its pipeline
# (health -> steps -> step_count_by_source) and data tests, plan and apply its
# feature store, and show what the registry now holds.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${AMORA_BUILD_DIR:-$PWD/target}}"
cargo build --release --quiet
AMORA="$CARGO_TARGET_DIR/release/amora"
DEMO="${1:-$CARGO_TARGET_DIR/demo}"
rm -rf "$DEMO"
set -x
"$AMORA" init "$DEMO"
cd "$DEMO"
"$AMORA" validate
"$AMORA" compile
"$AMORA" materialize
"$AMORA" test
"$AMORA" models list
"$AMORA" feature-store plan
"$AMORA" feature-store apply
"$AMORA" feature-store list feature-views
"$AMORA" feature-store list feature-services
"$AMORA" feature-store describe step_count_by_source
"$AMORA" feature-store history
"$AMORA" lineage --format text
