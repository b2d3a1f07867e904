"""The peers of the historical-retrieval benchmark, one per process so each is
measured alone, plus the checksum of any output.

  python peers.py duckdb ENTITIES STATS TXN OUT      DuckDB ASOF JOIN (the fastest as-of join we know)
  python peers.py feast REPO ENTITIES OUT            Feast 0.67 get_historical_features (offline_store: duckdb)
  python peers.py checksum OUT                       JSON: rows, non-null per view, sums (see the anchor README)
"""
import json
import sys
import time

STATS = ["avg_order_value", "session_len_avg", "ctr_7d", "risk_score", "n_orders_30d", "n_sessions_7d",
         "days_since_signup", "n_clicks_1d", "country", "segment"]
TXN = ["txn_amount_sum_7d", "txn_count_7d", "txn_amount_max_30d", "last_mcc", "chargebacks_90d"]
FEATURES = [f"user_stats:{f}" for f in STATS] + [f"user_txn:{f}" for f in TXN]


def duckdb_asof(entities, stats, txn, out):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    s_cols = ", ".join(f"s.{c}" for c in STATS)
    t_cols = ", ".join(f"t.{c}" for c in TXN)
    ttl = "INTERVAL 7 DAY"
    final = ", ".join(
        [f"CASE WHEN s_ts >= event_timestamp - {ttl} THEN {c} END AS {c}" for c in STATS]
        + [f"CASE WHEN t_ts >= event_timestamp - {ttl} THEN {c} END AS {c}" for c in TXN]
    )
    con.execute(f"""
        COPY (
          WITH e AS (SELECT * FROM read_parquet('{entities}')),
          j1 AS (SELECT e.*, s.event_timestamp AS s_ts, {s_cols} FROM e
                 ASOF LEFT JOIN read_parquet('{stats}') s ON e.user_id = s.user_id AND e.event_timestamp >= s.event_timestamp),
          j2 AS (SELECT j1.*, t.event_timestamp AS t_ts, {t_cols} FROM j1
                 ASOF LEFT JOIN read_parquet('{txn}') t ON j1.user_id = t.user_id AND j1.event_timestamp >= t.event_timestamp)
          SELECT user_id, event_timestamp, {final} FROM j2
        ) TO '{out}' (FORMAT parquet)""")


def feast_hist(repo, entities, out):
    import pandas as pd
    from feast import FeatureStore

    store = FeatureStore(repo_path=repo)
    df = pd.read_parquet(entities)
    start = time.perf_counter()
    result = store.get_historical_features(entity_df=df, features=FEATURES).to_df()
    result.to_parquet(out, index=False)
    print(json.dumps({"in_process_seconds": time.perf_counter() - start}))


def checksum(out):
    import duckdb

    q = f"""SELECT count(*), count(risk_score), count(txn_count_7d), round(sum(risk_score), 3), sum(txn_count_7d),
                   count(*) FILTER (WHERE risk_score IS NOT NULL AND txn_count_7d IS NOT NULL),
                   round(sum(risk_score) FILTER (WHERE txn_count_7d IS NOT NULL), 3)
            FROM read_parquet('{out}')"""
    r = duckdb.connect().execute(q).fetchone()
    keys = ["rows", "nonnull_user_stats", "nonnull_user_txn", "sum_risk_score", "sum_txn_count_7d", "rows_both", "sum_risk_score_both"]
    print(json.dumps(dict(zip(keys, [float(x) if x is not None else None for x in r]))))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"duckdb": duckdb_asof, "feast": feast_hist, "checksum": checksum}[cmd](*args)
