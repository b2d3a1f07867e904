"""Feast's side of the online-store compatibility tests.

  python feast_online.py REPO read FEATURES ENTITY_ROWS_JSON   -> JSON {feature: [values...]} via get_online_features
  python feast_online.py REPO write VIEW ROWS_JSON             -> write_to_online_store (event_timestamp as ISO strings)
  python feast_online.py REPO push SOURCE ROWS_JSON            -> push(SOURCE, df, to=ONLINE)
  python feast_online.py REPO read-service SERVICE ENTITY_ROWS_JSON -> get_online_features(feature service, full names)
  python feast_online.py REPO materialize START END VIEW...     -> FeatureStore.materialize (Feast's own offline read)
"""
import json
import sys

import pandas as pd
from feast import FeatureStore


def main():
    repo, cmd = sys.argv[1], sys.argv[2]
    store = FeatureStore(repo_path=repo)
    if cmd == "read":
        features = sys.argv[3].split(",")
        rows = json.loads(sys.argv[4])
        out = store.get_online_features(features=features, entity_rows=rows).to_dict()
        print(json.dumps(out, default=str))
    elif cmd == "read-service":
        service = store.get_feature_service(sys.argv[3])
        rows = json.loads(sys.argv[4])
        out = store.get_online_features(features=service, entity_rows=rows, full_feature_names=True).to_dict()
        print(json.dumps(out, default=str))
    elif cmd in ("write", "push"):
        target, rows = sys.argv[3], json.loads(sys.argv[4])
        df = pd.DataFrame(rows)
        for c in ("event_timestamp", "created_at"):
            if c in df:
                df[c] = pd.to_datetime(df[c], utc=True)
        if cmd == "write":
            store.write_to_online_store(target, df)
        else:
            from feast.data_source import PushMode

            store.push(target, df, to=PushMode.ONLINE)
        print("ok")
    elif cmd == "materialize":
        start, end, views = sys.argv[3], sys.argv[4], sys.argv[5:]
        store.materialize(
            start_date=pd.Timestamp(start, tz="UTC").to_pydatetime(),
            end_date=pd.Timestamp(end, tz="UTC").to_pydatetime(),
            feature_views=views or None,
        )
        print("ok")


if __name__ == "__main__":
    main()
