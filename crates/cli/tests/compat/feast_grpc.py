"""Feast's own generated gRPC stubs against amora's ServingService.

  python feast_grpc.py PORT FEATURES SOURCES_JSON -> JSON {version, names, values, statuses, missing_view_code}
"""
import json
import sys

import grpc
from feast.protos.feast.serving.ServingService_pb2 import (
    FeatureList,
    GetFeastServingInfoRequest,
    GetOnlineFeaturesRequest,
)
from feast.protos.feast.serving.ServingService_pb2_grpc import ServingServiceStub
from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value
from feast.type_map import feast_value_type_to_python_type


def main():
    port, features, sources = sys.argv[1], sys.argv[2].split(","), json.loads(sys.argv[3])
    stub = ServingServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    info = stub.GetFeastServingInfo(GetFeastServingInfoRequest(), timeout=10)
    entities = {"source_name": RepeatedValue(val=[Value(string_val=s) for s in sources])}
    resp = stub.GetOnlineFeatures(GetOnlineFeaturesRequest(features=FeatureList(val=features), entities=entities), timeout=10)
    out = {
        "version": info.version,
        "names": list(resp.metadata.feature_names.val),
        "values": [[feast_value_type_to_python_type(v) for v in r.values] for r in resp.results],
        "statuses": [list(r.statuses) for r in resp.results],
    }
    meta = stub.GetOnlineFeatures(
        GetOnlineFeaturesRequest(features=FeatureList(val=features), entities=entities, include_feature_view_version_metadata=True),
        timeout=10,
    ).metadata
    out["view_metadata"] = [[m.name, m.version] for m in meta.feature_view_metadata]
    out["view_metadata_unasked"] = len(resp.metadata.feature_view_metadata)
    try:
        stub.GetOnlineFeatures(GetOnlineFeaturesRequest(features=FeatureList(val=["nope:x"]), entities=entities), timeout=10)
        out["missing_view_code"] = "OK"
    except grpc.RpcError as e:
        out["missing_view_code"] = e.code().name
        out["missing_view_message"] = e.details()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
