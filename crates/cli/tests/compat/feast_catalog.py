"""Lists a Feast repo's registry objects the way `amora feature-store list --json` does.

Usage: python feast_catalog.py REPO_DIR
Prints a JSON object: for each kind (entities, feature-views, feature-services,
data-sources) an array of records sorted by name. Used by the compatibility tests to compare what
Feast 0.67 sees with what amora sees in the same registry file.
"""
import json
import sys

from feast import FeatureStore


def type_name(vt):
    name = vt.name
    return "INVALID" if name == "UNKNOWN" else name


def entities(store):
    return [
        {
            "name": e.name,
            "join_key": e.join_key,
            "value_type": type_name(e.value_type),
            "description": e.description,
            "owner": e.owner,
            "tags": dict(e.tags),
        }
        for e in store.list_entities()
    ]


def feature_views(store):
    out = []
    for v in store.list_feature_views():
        out.append(
            {
                "name": v.name,
                "type": "feature_view",
                "entities": list(v.entities),
                "features": [{"name": f.name, "value_type": type_name(f.dtype.to_value_type())} for f in v.features],
                "ttl_seconds": int(v.ttl.total_seconds()) if v.ttl else 0,
                "online": v.online,
                "owner": v.owner,
                "description": v.description,
                "tags": dict(v.tags),
                "source": v.batch_source.name if v.batch_source else "",
            }
        )
    for v in store.list_on_demand_feature_views():
        out.append({"name": v.name, "type": "on_demand_feature_view"})
    for v in store.list_stream_feature_views():
        out.append({"name": v.name, "type": "stream_feature_view"})
    if hasattr(store, "list_label_views"):
        for v in store.list_label_views():
            out.append({"name": v.name, "type": "label_view"})
    return out


def feature_services(store):
    return [
        {
            "name": s.name,
            "features": [f"{p.name}:{f.name}" for p in s.feature_view_projections for f in p.features],
            "description": s.description,
            "owner": s.owner,
            "tags": dict(s.tags),
        }
        for s in store.list_feature_services()
    ]


def data_sources(store):
    out = []
    for d in store.list_data_sources():
        cls = type(d)
        location = getattr(d, "path", None) or getattr(d, "table", None) or ""
        # A PushSource's Python object hides the timestamp columns that its proto
        # carries (copied from its batch source); read them from there.
        timed = d.batch_source if cls.__name__ == "PushSource" else d
        out.append(
            {
                "name": d.name,
                "class": f"{cls.__module__}.{cls.__name__}",
                "location": location,
                "timestamp_field": timed.timestamp_field or "",
                "created_timestamp_column": timed.created_timestamp_column or "",
                "description": d.description,
                "owner": d.owner,
                "tags": dict(d.tags),
            }
        )
    return out


def main():
    store = FeatureStore(repo_path=sys.argv[1])
    kinds = {
        "entities": entities,
        "feature-views": feature_views,
        "feature-services": feature_services,
        "data-sources": data_sources,
    }
    out = {}
    for kind, fn in kinds.items():
        out[kind] = sorted(fn(store), key=lambda r: r["name"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
