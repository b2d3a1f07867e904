# The BigQuery emulator (bqemulator 1.4.0: BigQuery REST + Storage Read over gRPC,
# backed by DuckDB), installed offline as ../shared/COMPONENTS.md describes. Source
# this file, then:
#   bq_install BUILD_DIR          # the virtualenv and DuckDB's extensions, once
#   bq_start STATE REST GRPC      # an in-memory emulator; its PID in STATE/bqemulator.pid
#   bq_wait REST                  # until it answers (about 5 s)
bq_install() {
  BQ_VENV="$1/venv-bqemulator-1.4.0"
  BQ_HOME="$1/bqemulator-home"
  if ! "$BQ_VENV/bin/python" -c 'import bqemulator, duckdb_extension_spatial, duckdb_extension_avro' >/dev/null 2>&1; then
    echo "== installing bqemulator 1.4.0 into $BQ_VENV"
    rm -rf "$BQ_VENV" "$BQ_HOME"
    python3 -m venv "$BQ_VENV"
    "$BQ_VENV/bin/pip" install --quiet --disable-pip-version-check "bqemulator[all]==1.4.0" "duckdb==1.5.5" \
      "duckdb-extension-spatial==1.5.5" "duckdb-extension-avro==1.5.5"
  fi
  if [ ! -f "$BQ_HOME/.extensions-installed" ]; then
    mkdir -p "$BQ_HOME"
    # A plain start would download these from the internet.
    HOME="$BQ_HOME" "$BQ_VENV/bin/python" - <<'PY'
import duckdb, glob, os
site = os.path.dirname(os.path.dirname(duckdb.__file__)); con = duckdb.connect()
for ext in ("spatial", "avro"):
    con.execute(f"INSTALL '{glob.glob(f'{site}/duckdb_extension_{ext}/extensions/*/{ext}.duckdb_extension')[0]}'")
PY
    touch "$BQ_HOME/.extensions-installed"
  fi
}

bq_start() {
  local state="$1" rest="$2" grpc="$3"
  HOME="$BQ_HOME" setsid "$BQ_VENV/bin/bqemulator" start --rest-host 127.0.0.1 --rest-port "$rest" \
    --grpc-host 127.0.0.1 --grpc-port "$grpc" --project test-project --ephemeral \
    --log-level warning >"$state/bqemulator.log" 2>&1 </dev/null &
  echo $! > "$state/bqemulator.pid"
}

bq_wait() {
  local deadline=$((SECONDS + 60))
  until curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "the BigQuery emulator did not start" >&2; return 1; fi
    sleep 0.1
  done
}
