"""The BigQuery offline store on the emulator beside the embedded engine, one run.

Each step runs in both projects (same data, same definitions): the pipeline
(`materialize --force`), a training set for ENTITY_ROWS rows, a materialization;
BigQuery's training set is read once through the Storage Read API and once through
REST paging. Outputs are compared (they must be identical). Prints wall times,
peak memory and ratios.

Usage: python run.py AMORA_BIN WORK_DIR ENTITY_ROWS
"""
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from measure import measure  # noqa: E402


def main():
    amora, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    emb, bq = os.path.join(work, "embedded"), os.path.join(work, "bigquery")

    def run(d, *a):
        return measure([amora, "--project-dir", d, *a])

    rows = []

    def step(name, args, out=None):
        results = {}
        for label, d in (("embedded", emb), ("bigquery", bq)):
            a = list(args)
            if out:
                a += ["--output", os.path.join(work, f"{label}-{out}")]
            wall, mb, _ = run(d, *a)
            results[label] = (wall, mb)
        rows.append((name, results))
        if out:
            x = open(os.path.join(work, f"embedded-{out}")).read()
            y = open(os.path.join(work, f"bigquery-{out}")).read()
            assert x == y, f"{name}: the two stores' outputs differ"

    step("pipeline (materialize --force)", ["materialize", "--force"])
    run(emb, "show", "step_count_by_source", "--output", os.path.join(work, "table.csv"))
    run(emb, "feature-store", "apply")
    run(bq, "feature-store", "apply")
    # Entity rows at (and around) real feature timestamps, so most find a value.
    random.seed(7)
    lines = open(os.path.join(work, "table.csv")).read().splitlines()[1:]
    ent = os.path.join(work, "entities.csv")
    with open(ent, "w") as f:
        f.write("source_name,event_timestamp,label\n")
        for i in range(n):
            name, ts = random.choice(lines).split(",")[:2]
            f.write(f"{name},{ts[:-1]},{i}\n")
    feats = "step_count_by_source:value_avg,step_count_by_source:value_sum,step_count_by_source:value_count"
    step(f"training set, {n:,} entity rows", ["feature-store", "get-historical-features", "--entities", ent,
                                               "--features", feats], out="training.csv")
    rest_wall, rest_mb, _ = measure_env([amora, "--project-dir", bq, "feature-store", "get-historical-features",
                                         "--entities", ent, "--features", feats,
                                         "--output", os.path.join(work, "rest-training.csv")],
                                        {"AMORA_FEATURE_STORE_OFFLINE_STORE_CONFIG": '{"read_api": "rest"}'})
    assert open(os.path.join(work, "rest-training.csv")).read() == open(os.path.join(work, "bigquery-training.csv")).read()
    step("materialize (offline -> embedded online)", ["feature-store", "materialize", "2024-01-01T00:00:00", "2025-01-01T00:00:00"])

    print("BigQuery offline store (bqemulator, DuckDB inside) beside the embedded engine; one run")
    print(f"  {'step':44} {'embedded s':>11} {'bigquery s':>11} {'bq/emb':>7} {'peak MB emb/bq':>16}")
    for name, r in rows:
        (ew, em), (bw, bm) = r["embedded"], r["bigquery"]
        print(f"  {name:44} {ew:11.3f} {bw:11.3f} {bw / ew:7.2f} {em:8.1f}/{bm:<7.1f}")
    storage = rows[1][1]["bigquery"][0]
    print(f"  training set read back through REST paging: {rest_wall:.3f} s (peak {rest_mb:.1f} MB); "
          f"Storage Read API / REST = {storage / rest_wall:.3f}")
    print("  outputs: identical on both stores and both read paths")


def measure_env(cmd, extra):
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        return measure(cmd)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    main()
