#!/usr/bin/env bash
# The main job on the example project, with the embedded defaults (no services):
# build the binary, scaffold the health example, run its pipeline
# (health -> steps -> step_count_by_source) and data tests, plan and apply its
# feature store, show what the registry holds, build a training set, and
# materialize and read online features.
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
# Training data, point-in-time correct, for a few labelled events.
printf 'source_name,event_timestamp,label\nFitbit,2024-01-10 00:00:00,1\nMi Fit,2024-01-30 21:30:00,0\nMi Fit,2024-01-30 23:30:00,0\nnobody,2024-01-20 12:00:00,0\n' > events.csv
"$AMORA" feature-store get-historical-features --entities events.csv --feature-service step_activity --output training.csv
cat training.csv
# Serving: materialize into the embedded online store and read it back.
"$AMORA" feature-store materialize 2024-01-01T00:00:00 2024-02-01T00:00:00
"$AMORA" feature-store get-online-features --features step_count_by_source:value_avg,step_count_by_source:value_sum \
  --entity "source_name=Fitbit" --entity "source_name=nobody"
