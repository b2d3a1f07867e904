"""Regenerates the golden point-in-time fixtures with Feast 0.67's DuckDB offline store.

Usage: python make_golden.py OUT_DIR     (needs `pip install "feast[duckdb]==0.67.0"`)

Writes, deterministically (seeded):
  features.parquet  user_id (int64), event_timestamp, created (UTC), f_float (float64, some nulls), f_int (int64), f_str (string)
  entities.parquet  row_id, user_id, event_timestamp (naive = UTC), label
  expected.parquet  Feast's get_historical_features output (ttl 2h), with row_id to match rows
Small domains force equal keys, equal timestamps (ties broken by `created`), TTL edges
(exactly at entity_ts - ttl and one microsecond past it), duplicate entity rows and
keys with no data.
"""
import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(67)
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    n = 600
    minutes = rng.integers(0, 24 * 60, n)
    ts = [base + timedelta(minutes=int(m)) for m in minutes]
    # Unique created timestamps: exact (key, ts, created) ties have no defined winner anywhere.
    created = [t + timedelta(seconds=int(s)) for t, s in zip(ts, rng.permutation(n))]
    feats = pd.DataFrame(
        {
            "user_id": rng.integers(1, 21, n).astype("int64"),
            "event_timestamp": ts,
            "created": created,
            "f_float": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "f_int": rng.integers(0, 1000, n).astype("int64"),
            "f_str": [f"s{v}" for v in rng.integers(0, 50, n)],
        }
    )
    m = 800
    ent_ts = [base + timedelta(minutes=int(x)) for x in rng.integers(-60, 26 * 60, m)]
    # TTL edges: exactly entity_ts - 2h = a feature ts, and one microsecond past it.
    for i in range(40):
        row = feats.iloc[i]
        ent_ts[i] = row.event_timestamp + timedelta(hours=2) + timedelta(microseconds=i % 2)
    users = rng.integers(1, 23, m).astype("int64")
    users[:40] = feats.user_id.values[:40]
    ents = pd.DataFrame({"row_id": np.arange(m, dtype="int64"), "user_id": users, "event_timestamp": ent_ts, "label": rng.integers(0, 2, m)})
    ents = pd.concat([ents, ents.iloc[:25].assign(row_id=np.arange(m, m + 25, dtype="int64"))], ignore_index=True)  # duplicates
    ents["event_timestamp"] = pd.to_datetime(ents["event_timestamp"], utc=True).dt.tz_localize(None)  # naive = UTC
    feats.to_parquet(f"{out}/features.parquet", index=False)
    ents.to_parquet(f"{out}/entities.parquet", index=False)

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64, String

    repo = tempfile.mkdtemp()
    config = RepoConfig(
        project="golden",
        registry=f"{repo}/registry.db",
        provider="local",
        offline_store={"type": "duckdb"},
        online_store={"type": "sqlite", "path": f"{repo}/online.db"},
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    store = FeatureStore(config=config)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    src = FileSource(name="features", path=os.path.abspath(f"{out}/features.parquet"), timestamp_field="event_timestamp", created_timestamp_column="created")
    fv = FeatureView(
        name="stats",
        entities=[user],
        ttl=timedelta(hours=2),
        source=src,
        schema=[Field(name="f_float", dtype=Float64), Field(name="f_int", dtype=Int64), Field(name="f_str", dtype=String)],
    )
    store.apply([user, fv])
    result = store.get_historical_features(entity_df=ents, features=["stats:f_float", "stats:f_int", "stats:f_str"]).to_df()
    result = result.sort_values("row_id").reset_index(drop=True)
    result.to_parquet(f"{out}/expected.parquet", index=False)
    print(f"{len(result)} rows; {result.f_int.notna().sum()} with features")


if __name__ == "__main__":
    main()
