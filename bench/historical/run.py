"""The historical-retrieval benchmark on the anchor workload: amora vs DuckDB ASOF
JOIN vs Feast 0.67 (duckdb offline store), same Parquet files, one run. Amora reads
the registry `feast apply` wrote for the same views. Reports wall time (median of
--repeat runs), rows/s, peak memory and ratios, and checks every output's checksums
against each other.

Usage: python run.py AMORA_BIN DATA_DIR WORK_DIR [--sizes 10000,100000,1000000] [--repeat 3] [--feast-repeat 1]
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
sys.path.insert(0, HERE)
from peers import FEATURES, STATS, TXN  # noqa: E402




def feast_repo(work, data):
    repo = os.path.join(work, "feast_repo")
    os.makedirs(repo, exist_ok=True)
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write("project: anchor\nregistry: data/registry.db\nprovider: local\noffline_store:\n  type: duckdb\n"
                "online_store:\n  type: sqlite\n  path: data/online.db\nentity_key_serialization_version: 3\n")
    fields = lambda cols, types: ", ".join(f"Field(name='{c}', dtype={types(c)})" for c in cols)  # noqa: E731
    def t(c):
        if c in ("country", "segment", "last_mcc"):
            return "String"
        if c.startswith("n_") or c in ("days_since_signup", "txn_count_7d", "chargebacks_90d"):
            return "Int64"
        return "Float64"
    with open(os.path.join(repo, "definitions.py"), "w") as f:
        f.write(f"""from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
user_stats = FeatureView(name="user_stats", entities=[user], ttl=timedelta(days=7),
    source=FileSource(name="user_stats_src", path="{data}/user_stats.parquet", timestamp_field="event_timestamp", created_timestamp_column="created"),
    schema=[{fields(STATS, t)}])
user_txn = FeatureView(name="user_txn", entities=[user], ttl=timedelta(days=7),
    source=FileSource(name="user_txn_src", path="{data}/user_txn.parquet", timestamp_field="event_timestamp", created_timestamp_column="created"),
    schema=[{fields(TXN, t)}])
""")
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    subprocess.run([feast, "apply"], cwd=repo, check=True, capture_output=True)
    amora = os.path.join(work, "amora_project")
    os.makedirs(amora, exist_ok=True)
    with open(os.path.join(amora, "amora.yaml"), "w") as f:
        f.write(f"project: anchor\nfeature_store:\n  registry: {repo}/data/registry.db\n")
    return repo, amora


def feast_repo_on_redis(work, data, port):
    """feast_repo, with Feast and amora both pointed at the Redis on `port`."""
    repo, amora = feast_repo(work, data)
    with open(os.path.join(repo, "feature_store.yaml")) as f:
        yaml = f.read()
    yaml = yaml.replace("online_store:\n  type: sqlite\n  path: data/online.db\n",
                        f"online_store:\n  type: redis\n  connection_string: \"127.0.0.1:{port}\"\n")
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write(yaml)
    with open(os.path.join(amora, "amora.yaml"), "a") as f:
        f.write(f"  online_store: {{type: redis, connection_string: \"127.0.0.1:{port}\"}}\n")
    return repo, amora


def checksum(out):
    r = subprocess.run([sys.executable, os.path.join(HERE, "peers.py"), "checksum", out], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("amora")
    p.add_argument("data")
    p.add_argument("work")
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--feast-repeat", type=int, default=1)
    args = p.parse_args()
    data, work = os.path.abspath(args.data), os.path.abspath(args.work)
    repo, amora_project = feast_repo(work, data)
    print(f"historical retrieval, anchor workload (2 views, 15 features, ttl 7d); median of {args.repeat} runs (feast: {args.feast_repeat})")
    print(f"{'entity rows':>12} {'engine':<14} {'wall s':>8} {'rows/s':>12} {'peak MB':>9} {'ratio vs duckdb':>16}")
    for n in [int(s) for s in args.sizes.split(",")]:
        ent = os.path.join(data, f"entity_df_{n}.parquet")
        outs = {e: os.path.join(work, f"out_{e}_{n}.parquet") for e in ("amora", "duckdb", "feast")}
        cmds = {
            "amora": [args.amora, "--project-dir", amora_project, "feature-store", "get-historical-features",
                      "--entities", ent, "--features", ",".join(FEATURES), "--output", outs["amora"]],
            "duckdb": [sys.executable, os.path.join(HERE, "peers.py"), "duckdb", ent, f"{data}/user_stats.parquet", f"{data}/user_txn.parquet", outs["duckdb"]],
            "feast": [sys.executable, os.path.join(HERE, "peers.py"), "feast", repo, ent, outs["feast"]],
        }
        results = {}
        for engine, cmd in cmds.items():
            runs = [measure(cmd) for _ in range(args.feast_repeat if engine == "feast" else args.repeat)]
            results[engine] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
        for engine, (wall, mb) in results.items():
            ratio = wall / results["duckdb"][0]
            print(f"{n:>12} {engine:<14} {wall:8.3f} {n / wall:12.0f} {mb:9.1f} {ratio:16.3f}")
        a, d, f = results["amora"], results["duckdb"], results["feast"]
        print(f"{'':>12} amora/duckdb wall {a[0] / d[0]:.3f}, amora/feast wall {a[0] / f[0]:.4f} ({f[0] / a[0]:.1f}x), "
              f"amora/duckdb peak memory {a[1] / d[1]:.3f}")
        sums = {e: checksum(o) for e, o in outs.items()}
        same = sums["amora"] == sums["duckdb"] == sums["feast"]
        print(f"{'':>12} checksums {'agree' if same else 'DIFFER'}: {json.dumps(sums['amora'])}")
        if not same:
            print(json.dumps(sums, indent=1))


if __name__ == "__main__":
    main()
