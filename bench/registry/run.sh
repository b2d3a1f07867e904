#!/usr/bin/env bash
# Registry benchmark: amora plan/apply vs feast apply, 2 and 1,000 feature views, one run.
# Installs Feast 0.67 into the build folder's venv if needed; builds amora in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
bench_setup venv-feast-0.67.0 feast "feast==0.67.0"
exec "$VENV/bin/python" bench/registry/run.py "$AMORA" "$VENV/bin/feast" "$@"
