"""Writes the same feature-store definitions twice: as an amora project and as a
Feast 0.67 repo. N feature views over one small Parquet table, one entity, and
for each view the service `amora_fs__<view>` (amora adds it implicitly; the Feast
repo declares it), so both registries hold the same objects.

Usage: python gen_project.py N OUT_DIR   (writes OUT_DIR/amora and OUT_DIR/feast)
"""
import os
import sys
from datetime import datetime, timezone

FEATURES = [("value_avg", "float64", "Float64"), ("value_sum", "float64", "Float64"), ("value_count", "int64", "Int64")]


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def table(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table(
        {
            "source_name": ["a", "b"],
            "event_timestamp": [datetime(2024, 1, 1, tzinfo=timezone.utc)] * 2,
            "created_at": [datetime(2024, 1, 1, tzinfo=timezone.utc)] * 2,
            "value_avg": [1.0, 2.0],
            "value_sum": [1.0, 2.0],
            "value_count": [1, 2],
        }
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(t, path)


def amora(n, root, parquet):
    write(f"{root}/amora.yaml", "project: bench\nfeature_store:\n  registry: data/registry.db\n")
    cols = "\n".join(f"      - {{name: {c}, type: {t}}}" for c, t, _ in FEATURES)
    write(
        f"{root}/sources/base.yml",
        f"sources:\n  - name: base\n    path: {parquet}\n    columns:\n      - {{name: source_name, type: string}}\n"
        f"      - {{name: event_timestamp, type: timestamp}}\n      - {{name: created_at, type: timestamp}}\n{cols}\n",
    )
    write(
        f"{root}/feature_store/entities.yml",
        "entities:\n  - {name: source_name, type: string, description: The data source}\n",
    )
    names = ", ".join(c for c, _, _ in FEATURES)
    for i in range(n):
        write(f"{root}/models/m{i}.sql", f"SELECT source_name, event_timestamp, created_at, {names} FROM base\n")
        mcols = "\n".join(f"  - {{name: {c}, type: {t}, doc: feature {c}}}" for c, t, _ in FEATURES)
        write(
            f"{root}/models/m{i}.yml",
            f"description: view {i}\nowner: team{i % 7}@example.com\ncolumns:\n  - {{name: source_name, type: string}}\n"
            f"  - {{name: event_timestamp, type: timestamp}}\n  - {{name: created_at, type: timestamp}}\n{mcols}\n"
            f"feature_view:\n  entities: [source_name]\n  event_timestamp: event_timestamp\n  created_timestamp: created_at\n"
            f"  ttl: 1h\n  tags: {{team: t{i % 7}}}\n",
        )


def feast(n, root, parquet):
    write(
        f"{root}/feature_store.yaml",
        "project: bench\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online_store.db\nentity_key_serialization_version: 3\n",
    )
    lines = [
        "from datetime import timedelta",
        "from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType",
        "from feast.types import Float64, Int64",
        "source_name = Entity(name='source_name', join_keys=['source_name'], value_type=ValueType.STRING, description='The data source')",
        f"N = {n}",
        "for i in range(N):",
        f"    src = FileSource(name=f'm{{i}}', path={parquet!r}, timestamp_field='event_timestamp', created_timestamp_column='created_at', description=f'view {{i}}', owner=f'team{{i % 7}}@example.com')",
        "    fv = FeatureView(name=f'm{i}', entities=[source_name], ttl=timedelta(hours=1), source=src, online=True,",
        "        schema=[" + ", ".join(f"Field(name='{c}', dtype={p}, description='feature {c}')" for c, _, p in FEATURES) + "],",
        "        tags={'team': f't{i % 7}'}, owner=f'team{i % 7}@example.com', description=f'view {i}')",
        "    globals()[f'fv_{i}'] = fv",
        "    globals()[f'fs_{i}'] = FeatureService(name=f'amora_fs__m{i}', features=[fv], description=f'All features of m{i}', owner=f'team{i % 7}@example.com')",
    ]
    write(f"{root}/definitions.py", "\n".join(lines) + "\n")


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    parquet = os.path.abspath(f"{out}/base.parquet")
    table(parquet)
    amora(n, f"{out}/amora", parquet)
    feast(n, f"{out}/feast", parquet)


if __name__ == "__main__":
    main()
