"""The example pipeline (health -> steps -> step_count_by_source) in DuckDB, on the
same Parquet input and with the same outputs as `amora materialize`: steps as one
Parquet file, step_count_by_source as daily hive partitions.

Usage: python duckdb_pipeline.py HEALTH_PARQUET OUT_DIR
Prints one JSON line: seconds, rows of each table, sum(value_sum).
"""
import json
import os
import shutil
import sys
import time

import duckdb

STEPS = """
SELECT source_name, source_version, unit, creation_date, start_date, end_date, CAST(value AS DOUBLE) AS value
FROM read_parquet('{src}')
WHERE type = 'HKQuantityTypeIdentifierStepCount'
"""

BY_SOURCE = """
SELECT source_name, date_trunc('hour', start_date) AS event_timestamp, max(creation_date) AS created_at,
       avg(value) AS value_avg, sum(value) AS value_sum, count(value) AS value_count,
       strftime(date_trunc('hour', start_date), '%Y-%m-%d') AS amora_date
FROM read_parquet('{steps}')
GROUP BY source_name, date_trunc('hour', start_date)
"""


def main():
    src, out = sys.argv[1], sys.argv[2]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    steps = os.path.join(out, "steps.parquet")
    by_source = os.path.join(out, "step_count_by_source")
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"COPY ({STEPS.format(src=src)}) TO '{steps}' (FORMAT parquet)")
    con.execute(f"COPY ({BY_SOURCE.format(steps=steps)}) TO '{by_source}' (FORMAT parquet, PARTITION_BY (amora_date))")
    seconds = time.perf_counter() - start
    n_steps = con.execute(f"SELECT count(*) FROM read_parquet('{steps}')").fetchone()[0]
    n_by, total = con.execute(
        f"SELECT count(*), sum(value_sum) FROM read_parquet('{by_source}/*/*.parquet')"
    ).fetchone()
    print(json.dumps({"seconds": seconds, "steps_rows": n_steps, "by_source_rows": n_by, "sum_value_sum": total}))


if __name__ == "__main__":
    main()
