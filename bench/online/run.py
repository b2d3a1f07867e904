"""The materialization benchmark on the anchor workload (2 views, ~2M source rows,
100k entities): amora into Redis and into the embedded store, `feast materialize`
into the same (private) Redis and into its own embedded store (SQLite), and
redis-benchmark's pipelined HSET as the ceiling, in one run. Amora reads the
registry `feast apply` wrote.

Usage: python run.py AMORA_BIN DATA_DIR WORK_DIR REDIS_PORT [--skip-feast] [--repeat N]

amora's materializations run N times each (default 3; the median time and its run's
peak memory are reported); Feast's once.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "historical"))
from measure import measure  # noqa: E402
from run import feast_repo, feast_repo_on_redis  # noqa: E402  (bench/historical/run.py: the anchor Feast repo)

START, END = "2025-01-01T00:00:00", "2025-02-01T00:00:00"


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True, text=True).stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("amora")
    p.add_argument("data")
    p.add_argument("work")
    p.add_argument("port", type=int)
    p.add_argument("--skip-feast", action="store_true")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    data, work = os.path.abspath(args.data), os.path.abspath(args.work)
    repo, amora_project = feast_repo_on_redis(work, data, args.port)
    rows = 0
    import pyarrow.parquet as pq
    for t in ("user_stats", "user_txn"):
        rows += pq.read_metadata(f"{data}/{t}.parquet").num_rows
    results = {}

    def median_run(cmd, before):
        runs = []
        for _ in range(args.repeat):
            before()
            runs.append(measure(cmd)[:2])
        runs.sort()
        return runs[len(runs) // 2]

    results["amora -> redis"] = median_run(
        [args.amora, "--project-dir", amora_project, "feature-store", "materialize", START, END, "--quiet"],
        lambda: redis_cli(args.port, "FLUSHALL"))
    keys_amora = int(redis_cli(args.port, "DBSIZE"))
    emb = os.path.join(work, "amora_embedded")
    os.makedirs(emb, exist_ok=True)
    with open(os.path.join(amora_project, "amora.yaml")) as f:
        cfg = f.read().replace(f"  online_store: {{type: redis, connection_string: \"127.0.0.1:{args.port}\"}}\n", f"  online_store: {{type: embedded, path: {emb}/online.redb}}\n")
    emb_project = os.path.join(work, "amora_project_embedded")
    os.makedirs(emb_project, exist_ok=True)
    with open(os.path.join(emb_project, "amora.yaml"), "w") as f:
        f.write(cfg)
    def fresh_embedded():
        # The store and its shards (`online.redb`, `online.redb.1`, ...).
        for name in os.listdir(emb):
            if name.startswith("online.redb"):
                os.remove(os.path.join(emb, name))

    results["amora -> embedded"] = median_run(
        [args.amora, "--project-dir", emb_project, "feature-store", "materialize", START, END, "--quiet"], fresh_embedded)
    if not args.skip_feast:
        redis_cli(args.port, "FLUSHALL")
        feast = os.path.join(os.path.dirname(sys.executable), "feast")
        results["feast -> redis"] = measure([feast, "materialize", START, END], cwd=repo)[:2]
        keys_feast = int(redis_cli(args.port, "DBSIZE"))
        # Feast's embedded default, the peer of amora's embedded store: the same
        # definitions with `online_store: sqlite`, in a folder of its own.
        # A fresh folder each run: `feast apply` creates the tables only for a new registry.
        shutil.rmtree(os.path.join(work, "feast_sqlite"), ignore_errors=True)
        sqlite_repo, _ = feast_repo(os.path.join(work, "feast_sqlite"), data)
        online_db = os.path.join(sqlite_repo, "data", "online.db")
        results["feast -> sqlite"] = measure([feast, "materialize", START, END], cwd=sqlite_repo)[:2]
        import sqlite3
        with sqlite3.connect(online_db) as db:
            rows_sqlite = {t: db.execute(f"SELECT COUNT(DISTINCT entity_key) FROM anchor_{t}").fetchone()[0] for t in ("user_stats", "user_txn")}
    # The ceiling: pipelined HSET of hashes with as many fields as amora writes per
    # entity (both views share the entity's hash: 15 features + 2 timestamps).
    fields = " ".join(f"f{i} v{i}" for i in range(17))
    out = subprocess.run(
        ["redis-benchmark", "-p", str(args.port), "-n", "200000", "-P", "16", "-r", "100000", "-q", "HSET", "key:__rand_int__"] + fields.split(),
        capture_output=True, text=True).stdout
    m = re.search(r"([\d.]+) requests per second", out)
    hset_per_s = float(m.group(1)) if m else float("nan")
    # Online reads through the library: 1 and 100 entities x 15 features (both views).
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "historical"))
    from peers import FEATURES  # noqa: E402
    import json
    reads = {}
    redis_cli(args.port, "FLUSHALL")
    measure([args.amora, "--project-dir", amora_project, "feature-store", "materialize", START, END, "--quiet"])
    for label, proj in (("redis", amora_project), ("embedded", emb_project)):
        for batch, iters in ((1, 5000), (100, 500)):
            _, _, out = measure([args.amora, "--project-dir", proj, "feature-store", "read-latency", "--features", ",".join(FEATURES),
                                 "--join-key", "user_id", "--ids", f"{data}/online_ids.parquet", "--batch", str(batch), "--iterations", str(iters)])
            reads[(label, batch)] = json.loads(out.strip().splitlines()[-1])
    # One raw round trip (PING, one connection, no pipelining) on the same server.
    raw = subprocess.run(["redis-benchmark", "-p", str(args.port), "-n", "20000", "-c", "1", "-t", "ping"], capture_output=True, text=True).stdout
    lat = re.findall(r"latency summary \(msec\):\s*\n\s*avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", raw)
    raw_p50, raw_p99 = (float(lat[0][2]) * 1000, float(lat[0][4]) * 1000) if lat else (float("nan"), float("nan"))

    print(f"materialization, anchor workload: {rows} source rows, 2 views, {START} .. {END}")
    print(f"  {'':22} {'seconds':>8} {'rows/s':>10} {'peak MB':>8}")
    for k, (sec, mb) in results.items():
        print(f"  {k:22} {sec:8.2f} {rows / sec:10.0f} {mb:8.1f}")
    print(f"  redis-benchmark pipelined HSET (17 fields, -P 16): {hset_per_s:.0f} ops/s")
    a = results["amora -> redis"][0]
    # amora writes one HSET per entity (both views): 100k; writes/s vs the ceiling.
    hsets = keys_amora
    print(f"  amora -> redis: {hsets / a:.0f} HSET/s = {100 * hsets / a / hset_per_s:.0f}% of the ceiling (plus one EXISTS round trip per batch, and an HMGET where keys exist)")
    if "feast -> redis" in results:
        f = results["feast -> redis"][0]
        print(f"  ratio amora/feast into redis: {a / f:.4f} ({f / a:.0f}x); embedded: {results['amora -> embedded'][0] / f:.4f} ({f / results['amora -> embedded'][0]:.0f}x)")
        print(f"  keys: amora {keys_amora}, feast {keys_feast}")
    if "feast -> sqlite" in results:
        f = results["feast -> sqlite"][0]
        e = results["amora -> embedded"][0]
        print(f"  ratio amora embedded / feast sqlite: {e / f:.4f} ({f / e:.0f}x); feast sqlite entities per view: {rows_sqlite}")
    print(f"online reads through the library (15 features, both views), microseconds; raw PING round trip p50 {raw_p50:.0f} / p99 {raw_p99:.0f}")
    for (label, batch), r in reads.items():
        extra = f"  (p99 / raw p99 = {r['p99_us'] / raw_p99:.2f})" if label == "redis" else ""
        print(f"  {label:9} {batch:>3} entities: p50 {r['p50_us']:8.1f}  p99 {r['p99_us']:8.1f}  p99.9 {r['p999_us']:8.1f}  values found {r['values_found']}{extra}")


if __name__ == "__main__":
    main()
