//! The OpenAPI 3 document served at `/openapi.json`: every endpoint, with its
//! request and response shapes.

use serde_json::{json, Value};

fn post(summary: &str, request: Value, response: &str) -> Value {
    json!({"post": {
        "summary": summary,
        "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {"description": response},
            "400": {"description": "The request is wrong; the body names what and how to fix it", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeastError"}}}},
            "401": {"description": "Missing or invalid bearer token (when the server requires one)"},
            "404": {"description": "An unknown feature view, feature or feature service", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeastError"}}}},
            "413": {"description": "Body or entity count over the server's limits"},
            "503": {"description": "The online store is unavailable"}
        }
    }})
}

fn get(summary: &str, response: &str) -> Value {
    json!({"get": {"summary": summary, "responses": {"200": {"description": response}, "404": {"description": "Not found"}}}})
}

pub fn document() -> Value {
    let columns = json!({"type": "object", "additionalProperties": {"type": "array", "items": {}},
        "description": "Columnar: column name -> list of values; every list has the same length"});
    let name_param = |n: &str| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}});
    let mut paths = serde_json::Map::new();
    paths.insert(
        "/get-online-features".into(),
        post(
            "Latest feature values per entity (Feast's request and response)",
            json!({"type": "object", "required": ["entities"], "properties": {
                "features": {"type": "array", "items": {"type": "string"}, "description": "view:feature references"},
                "feature_service": {"type": "string"},
                "entities": columns,
                "full_feature_names": {"type": "boolean", "default": false},
                "include_feature_view_version_metadata": {"type": "boolean", "default": false}
            }}),
            "Columnar results: metadata.feature_names, results[i].values/statuses/event_timestamps",
        ),
    );
    paths.insert(
        "/write-to-online-store".into(),
        post(
            "Write rows of one feature view to the online store (only strictly newer rows replace)",
            json!({"type": "object", "required": ["feature_view_name", "df"], "properties": {
                "feature_view_name": {"type": "string"}, "df": columns,
                "allow_registry_cache": {"type": "boolean"}, "transform_on_write": {"type": "boolean"}
            }}),
            "null",
        ),
    );
    paths.insert(
        "/push".into(),
        post(
            "Write rows to every feature view whose stream source is the push source",
            json!({"type": "object", "required": ["push_source_name", "df"], "properties": {
                "push_source_name": {"type": "string"}, "df": columns,
                "to": {"type": "string", "enum": ["online", "offline", "online_and_offline"], "default": "online"}
            }}),
            "empty",
        ),
    );
    for (path, summary, required) in [
        (
            "/materialize",
            "Materialize [start_ts, end_ts] from the offline store (?async=true answers 202)",
            json!(["start_ts", "end_ts"]),
        ),
        ("/materialize-incremental", "Materialize from each view's last recorded end to end_ts", json!(["end_ts"])),
    ] {
        paths.insert(
            path.into(),
            post(
                summary,
                json!({"type": "object", "required": required, "properties": {
                    "start_ts": {"type": "string", "format": "date-time"},
                    "end_ts": {"type": "string", "format": "date-time"},
                    "feature_views": {"type": "array", "items": {"type": "string"}, "nullable": true}
                }}),
                "null; 202 {status, feature_views} with ?async=true; 409 when the views are already materializing",
            ),
        );
    }
    paths.insert("/health".into(), get("Registry and online-store health (503 when the store is down)", "Health JSON"));
    paths.insert("/metrics".into(), get("Prometheus metrics", "text/plain exposition format"));
    paths
        .insert("/list-feature-views".into(), get("Feature views: name, features, entities, description", "JSON list"));
    paths.insert("/openapi.json".into(), get("This document", "OpenAPI 3"));
    for kind in ["entities", "feature-views", "feature-services", "data-sources"] {
        let mut list = get(&format!("List the project's {kind}"), "JSON list");
        list["get"]["parameters"] = json!([name_param("project")]);
        paths.insert(format!("/api/v1/projects/{{project}}/{kind}"), list);
        let mut one = get(&format!("One of the project's {kind}"), "JSON object");
        one["get"]["parameters"] = json!([name_param("project"), name_param("name")]);
        paths.insert(format!("/api/v1/projects/{{project}}/{kind}/{{name}}"), one);
    }
    for (what, summary) in
        [("lineage", "Data source -> feature view -> feature service edges"), ("history", "Registry versions")]
    {
        let mut p = get(summary, "JSON");
        p["get"]["parameters"] = json!([name_param("project")]);
        paths.insert(format!("/api/v1/projects/{{project}}/{what}"), p);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "amora feature server", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Feast's feature-server HTTP API, plus amora's catalog, health and metrics"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"FeastError": {"type": "string", "description": "A JSON-encoded {module, class, message}: Feast's error body"}}
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_served_path_is_documented() {
        let doc = super::document();
        for p in [
            "/get-online-features",
            "/push",
            "/write-to-online-store",
            "/materialize",
            "/materialize-incremental",
            "/health",
            "/metrics",
            "/list-feature-views",
            "/api/v1/projects/{project}/feature-views/{name}",
            "/api/v1/projects/{project}/lineage",
            "/api/v1/projects/{project}/history",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} is not documented");
        }
    }
}
