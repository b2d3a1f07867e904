"""The pipeline benchmark: `amora materialize --force` of the example project on N
generated health rows (Parquet), beside DuckDB running the same SQL on the same
file, in one run. Reports median wall time, peak memory, the ratio, and amora's
pipeline overhead (everything but running the models' SQL and writing tables).

Usage: python run.py AMORA_BIN PROJECT_DIR HEALTH_PARQUET [--repeat 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from measure import measure  # noqa: E402




def main():
    p = argparse.ArgumentParser()
    p.add_argument("amora")
    p.add_argument("project")
    p.add_argument("health")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    duck_out = tempfile.mkdtemp(prefix="amora-bench-duckdb-")
    amora_runs, duck_runs = [], []
    for _ in range(args.repeat):
        wall, mb, out = measure([args.amora, "--project-dir", args.project, "materialize", "--force", "--json"])
        summary = json.loads(out)
        amora_runs.append((wall, mb, summary))
        wall, mb, out = measure([sys.executable, os.path.join(HERE, "duckdb_pipeline.py"), args.health, duck_out])
        duck_runs.append((wall, mb, json.loads(out)))
    a_wall = statistics.median(r[0] for r in amora_runs)
    d_wall = statistics.median(r[0] for r in duck_runs)
    d_engine = statistics.median(r[2]["seconds"] for r in duck_runs)
    a_mb = max(r[1] for r in amora_runs)
    d_mb = max(r[1] for r in duck_runs)
    model_secs = statistics.median(r[2]["model_seconds"] for r in amora_runs)
    rows = {o["model"]: o["rows"] for o in amora_runs[-1][2]["outcomes"]}
    duck = duck_runs[-1][2]
    print(f"pipeline benchmark: health -> steps -> step_count_by_source, median of {args.repeat} runs")
    print(f"  {'':28} {'wall s':>8} {'peak MB':>9}")
    print(f"  {'amora materialize --force':28} {a_wall:8.3f} {a_mb:9.1f}")
    print(f"  {'duckdb (python, same SQL)':28} {d_wall:8.3f} {d_mb:9.1f}   (in-engine {d_engine:.3f} s)")
    print(f"  ratio wall amora/duckdb: {a_wall / d_wall:.3f}   (vs duckdb in-engine time only: {a_wall / d_engine:.3f})")
    print(f"  ratio peak memory amora/duckdb: {a_mb / d_mb:.3f}")
    print(f"  amora overhead (wall - model time): {a_wall - model_secs:.3f} s = {100 * (a_wall - model_secs) / a_wall:.1f}% of the run")
    print(f"  rows: amora steps={rows.get('steps')} step_count_by_source={rows.get('step_count_by_source')}; "
          f"duckdb steps={duck['steps_rows']} step_count_by_source={duck['by_source_rows']}")


if __name__ == "__main__":
    main()
