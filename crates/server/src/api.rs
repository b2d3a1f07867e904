//! Routing and handlers. Every error is an [`ApiError`]: a 4xx for the caller's
//! mistake, 503 when the online store is down, never a panic. Error bodies are
//! Feast's: a JSON string holding `{"module","class","message"}`, so Feast's
//! Python client re-raises the named exception.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use amora_core::online::{
    read_cells_async, read_keys_async, resolve_selection, MaterializeRequest, OnlineRequest, OnlineView, Target,
};
use amora_core::online_json::{self, Columns};
use amora_core::{CoreError, FeatureSelection};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::{now_micros, Service};

type Reply = Response<Full<Bytes>>;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    module: &'static str,
    class: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, class: &'static str, message: impl Into<String>) -> ApiError {
        let module = if class.ends_with("Exception") { "feast.errors" } else { "builtins" };
        ApiError { status, module, class, message: message.into() }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "ValueError", message)
    }

    fn into_response(self) -> Reply {
        let detail = json!({"module": self.module, "class": self.class, "message": self.message}).to_string();
        let body = serde_json::to_vec(&Json::String(detail)).unwrap_or_default();
        json_reply(self.status, body)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        match e {
            CoreError::NotFound { class, message } => ApiError::new(StatusCode::NOT_FOUND, class, message),
            CoreError::Invalid(m) => ApiError::bad_request(m),
            CoreError::Offline(amora_offline::OfflineError::Contract(m)) => ApiError::bad_request(m),
            CoreError::Offline(amora_offline::OfflineError::Backend(m)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ConnectionError",
                format!("the offline store is unavailable: {m}"),
            ),
            CoreError::Online(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ConnectionError",
                format!("the online store is unavailable: {e}"),
            ),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "RuntimeError", other.to_string()),
        }
    }
}

fn json_reply(status: StatusCode, body: Vec<u8>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn ok_json(v: &Json) -> Reply {
    json_reply(StatusCode::OK, serde_json::to_vec(v).unwrap_or_default())
}

/// The endpoint's name for metrics and logs (a fixed set: paths with names in
/// them are grouped).
fn endpoint(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (&Method::POST, "/get-online-features") => "get-online-features",
        (&Method::POST, "/push") => "push",
        (&Method::POST, "/write-to-online-store") => "write-to-online-store",
        (&Method::POST, "/materialize") => "materialize",
        (&Method::POST, "/materialize-incremental") => "materialize-incremental",
        (&Method::GET, "/health") => "health",
        (&Method::GET, "/metrics") => "metrics",
        (&Method::GET, "/list-feature-views") => "list-feature-views",
        (&Method::GET, "/openapi.json") => "openapi",
        (&Method::GET, p) if p.starts_with("/api/v1/projects/") => "catalog",
        _ => "other",
    }
}

pub async fn handle(service: Arc<Service>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let t0 = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let name = endpoint(&method, &path);
    let reply = match authorize(&service, &req, name) {
        Err(e) => e.into_response(),
        Ok(()) => dispatch(&service, req, name).await.unwrap_or_else(ApiError::into_response),
    };
    let took = t0.elapsed();
    service.metrics.request(name, reply.status().as_u16(), took);
    if service.config.access_log {
        // Structured fields, so log pipelines can index them.
        tracing::info!(
            target: "amora::access",
            method = %method,
            path = %path,
            status = reply.status().as_u16(),
            micros = took.as_micros() as u64,
            "request"
        );
    }
    Ok(reply)
}

fn authorize(service: &Service, req: &Request<Incoming>, name: &str) -> Result<(), ApiError> {
    match (name, service.authorized(req.headers())) {
        ("health", _) | (_, Some(true)) => Ok(()),
        (_, Some(false)) => {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "PermissionError", "the bearer token is not valid"))
        }
        (_, None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "PermissionError",
            "this server needs an `Authorization: Bearer <token>` header",
        )),
    }
}

async fn body<T: serde::de::DeserializeOwned>(service: &Service, req: Request<Incoming>) -> Result<T, ApiError> {
    let limit = service.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValueError",
            format!("the request body is larger than the server's limit of {limit} bytes"),
        )
    };
    if req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large());
    }
    let bytes = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_large()
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ValueError", format!("the request body is not valid: {e}"))
    })
}

async fn dispatch(service: &Arc<Service>, req: Request<Incoming>, name: &'static str) -> Result<Reply, ApiError> {
    let query = req.uri().query().unwrap_or_default().to_string();
    match name {
        "get-online-features" => get_online_features(service, body(service, req).await?).await,
        "write-to-online-store" => write_to_online_store(service, body(service, req).await?),
        "push" => push(service, body(service, req).await?).await,
        "materialize" | "materialize-incremental" => {
            let b: MaterializeBody = body(service, req).await?;
            materialize(service, b, name == "materialize", &query).await
        }
        "health" => Ok(health(service)),
        "metrics" => {
            let snap = service.snapshot();
            let (_, errors) = service.registry_error();
            let text = service.metrics.render((&snap.version_id, snap.loaded.elapsed().as_secs_f64(), errors));
            Ok(Response::builder()
                .header("content-type", "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(text)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
        }
        "list-feature-views" => list_feature_views(service),
        "openapi" => Ok(ok_json(&crate::openapi::document())),
        "catalog" => catalog(service, req.uri().path()),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ValueError",
            format!("no endpoint {} {}; see /openapi.json", req.method(), req.uri().path()),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetOnlineBody {
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    feature_service: Option<String>,
    entities: Columns,
    #[serde(default)]
    full_feature_names: bool,
    #[serde(default)]
    include_feature_view_version_metadata: bool,
    /// Feast's Go server's field; request data for on-demand views (none here).
    #[serde(default)]
    #[allow(dead_code)]
    request_context: Option<Json>,
}

pub(crate) fn resolved(
    service: &Service,
    selection: FeatureSelection,
    full: bool,
) -> Result<Arc<OnlineRequest>, ApiError> {
    let snap = service.snapshot();
    let key = match &selection {
        FeatureSelection::Refs(r) => format!("{full}|f|{}", r.join("\n")),
        FeatureSelection::Service(s) => format!("{full}|s|{s}"),
    };
    if let Some(r) = snap.resolved.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(r);
    }
    let r = Arc::new(resolve_selection(&snap.file, &service.project, &service.root, &selection, full)?);
    if let Ok(mut m) = snap.resolved.lock() {
        if m.len() < 10_000 {
            m.insert(key, r.clone());
        }
    }
    Ok(r)
}

async fn get_online_features(service: &Service, b: GetOnlineBody) -> Result<Reply, ApiError> {
    let selection = match (b.features, b.feature_service) {
        (Some(f), None) if !f.is_empty() => FeatureSelection::Refs(f),
        (None, Some(s)) => FeatureSelection::Service(s),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give either `features` or `feature_service`, not both"))
        }
        _ => return Err(ApiError::bad_request("no features requested: give `features` or `feature_service`")),
    };
    let rows = b.entities.rows()?;
    if b.entities.0.is_empty() || rows == 0 {
        return Err(ApiError::bad_request("no entities given: `entities` maps each join key to a list of values"));
    }
    if rows > service.config.max_entities {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValueError",
            format!("{rows} entity rows is more than the server's limit of {}", service.config.max_entities),
        ));
    }
    let request = resolved(service, selection, b.full_feature_names)?;
    let keys = online_json::entity_keys(&request.join_keys, &b.entities, service.entity_key_version)?;
    let target =
        Target { store: service.store.as_ref(), project: &service.project, version: service.entity_key_version };
    let t0 = Instant::now();
    if !b.include_feature_view_version_metadata {
        let result = read_cells_async(target, &request, &keys).await;
        service.metrics.store_read(t0.elapsed(), keys.len(), result.is_ok());
        let body = online_json::response_from_cells(&request, &b.entities, &result?, now_micros());
        return Ok(json_reply(StatusCode::OK, body));
    }
    let result = read_keys_async(target, &request, &keys, now_micros()).await;
    service.metrics.store_read(t0.elapsed(), keys.len(), result.is_ok());
    let values = result?;
    let mut out = online_json::response(&request, &b.entities, &values);
    // As Feast's JSON: one entry per view, `version` left out when 0.
    let views: Vec<Json> = request
        .view_versions()
        .map(
            |(name, version)| {
                if version == 0 {
                    json!({"name": name})
                } else {
                    json!({"name": name, "version": version})
                }
            },
        )
        .collect();
    out["metadata"]["feature_view_metadata"] = Json::Array(views);
    Ok(ok_json(&out))
}

#[derive(Deserialize)]
struct WriteBody {
    feature_view_name: String,
    df: Columns,
    #[serde(default)]
    #[allow(dead_code)]
    allow_registry_cache: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    transform_on_write: Option<bool>,
}

/// A written frame over the server's row limit is the caller's mistake (413).
fn check_row_limit(service: &Service, df: &Columns) -> Result<(), ApiError> {
    if df.rows()? > service.config.max_entities {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValueError",
            format!("more rows than the server's limit of {}", service.config.max_entities),
        ));
    }
    Ok(())
}

fn write_rows(service: &Service, view_name: &str, df: &Columns) -> Result<(), ApiError> {
    let snap = service.snapshot();
    let views = amora_core::online::online_views(&snap.file, &service.project, &service.root)?;
    let view = views.iter().find(|v| v.name == view_name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "FeatureViewNotFoundException",
            format!("Feature view {view_name} does not exist in project {}", service.project),
        )
    })?;
    check_row_limit(service, df)?;
    write_view_rows(service, view, df)
}

fn write_view_rows(service: &Service, view: &OnlineView, df: &Columns) -> Result<(), ApiError> {
    let rows = online_json::write_rows(view, df, service.entity_key_version)?;
    let names: Vec<String> = view.features.iter().map(|f| f.0.clone()).collect();
    service.store.write(&service.project, &view.name, &names, &rows).map_err(|e| ApiError::from(CoreError::Online(e)))
}

fn write_to_online_store(service: &Service, b: WriteBody) -> Result<Reply, ApiError> {
    write_rows(service, &b.feature_view_name, &b.df)?;
    Ok(ok_json(&Json::Null))
}

#[derive(Deserialize)]
struct PushBody {
    push_source_name: String,
    df: Columns,
    #[serde(default = "online")]
    to: String,
    #[serde(default)]
    #[allow(dead_code)]
    allow_registry_cache: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    transform_on_write: Option<bool>,
}

fn online() -> String {
    "online".into()
}

/// `/push`: rows for every feature view whose stream source is the push source,
/// to the online store (`to: online`, the default), to the views' offline tables
/// (`offline`), or both (`online_and_offline`: offline first, so a frame the
/// offline table rejects writes nothing online).
async fn push(service: &Arc<Service>, b: PushBody) -> Result<Reply, ApiError> {
    let (online, offline) = match b.to.as_str() {
        "online" => (true, false),
        "offline" => (false, true),
        "online_and_offline" => (true, true),
        other => {
            return Err(ApiError::bad_request(format!(
                "`to` is `{other}`; send `online`, `offline` or `online_and_offline`"
            )))
        }
    };
    let snap = service.snapshot();
    let objects = amora_registry::current_objects(&snap.file, &service.project).map_err(CoreError::from)?;
    let names: Vec<&str> = objects
        .feature_views
        .values()
        .filter_map(|v| v.spec.as_ref())
        .filter(|s| s.stream_source.as_ref().is_some_and(|d| d.name == b.push_source_name))
        .map(|s| s.name.as_str())
        .collect();
    if names.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PushSourceNotFoundException",
            format!("Unable to find push source '{}'.", b.push_source_name),
        ));
    }
    check_row_limit(service, &b.df)?;
    let all = amora_core::online::online_views(&snap.file, &service.project, &service.root)?;
    let views: Vec<&OnlineView> = all.iter().filter(|v| names.contains(&v.name.as_str())).collect();
    if offline {
        // Views that share a push source share its batch source: one append per table.
        let mut tables: Vec<(String, String, amora_offline::arrow::array::RecordBatch)> = Vec::new();
        for v in &views {
            if tables.iter().any(|(l, _, _)| *l == v.location) {
                continue;
            }
            let rows = amora_core::online_json::offline_rows(v, &b.df)?;
            tables.push((v.location.clone(), v.event_timestamp.clone(), rows));
        }
        let svc = service.clone();
        service
            .background()
            .spawn(async move {
                for (location, ts, rows) in tables {
                    svc.offline.append(&location, &ts, rows).await.map_err(CoreError::Offline)?;
                }
                Ok::<(), CoreError>(())
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "RuntimeError", e.to_string()))??;
    }
    if online {
        for v in views {
            write_view_rows(service, v, &b.df)?;
        }
    }
    Ok(json_reply(StatusCode::OK, Vec::new()))
}

#[derive(Deserialize)]
struct MaterializeBody {
    #[serde(default)]
    start_ts: Option<Json>,
    #[serde(default)]
    end_ts: Option<Json>,
    #[serde(default)]
    feature_views: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    disable_event_timestamp: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    full_feature_names: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<Json>,
}

/// Releases the views' "materializing" marks however the run ends.
struct Running(Arc<Service>, Vec<String>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.materializing.lock() {
            for v in &self.1 {
                m.remove(v);
            }
        }
    }
}

async fn materialize(service: &Arc<Service>, b: MaterializeBody, ranged: bool, query: &str) -> Result<Reply, ApiError> {
    let ts = |v: &Option<Json>, what: &str| -> Result<Option<i64>, ApiError> {
        match v {
            None | Some(Json::Null) => Ok(None),
            Some(j) => online_json::parse_ts(j)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("`{what}` is not a timestamp: {j}"))),
        }
    };
    let now = now_micros();
    let start = ts(&b.start_ts, "start_ts")?;
    if ranged && start.is_none() {
        return Err(ApiError::bad_request("`start_ts` is required for /materialize"));
    }
    let request = MaterializeRequest {
        start: if ranged { start } else { None },
        end: ts(&b.end_ts, "end_ts")?.unwrap_or(now),
        views: b.feature_views.unwrap_or_default(),
        now,
        user: "amora-server".into(),
    };
    let snap = service.snapshot();
    let plan = amora_core::online::materialize_plan(&snap.file, &service.project, &service.root, &request)?;
    let names: Vec<String> = plan.iter().map(|(v, _)| v.name.clone()).collect();
    let running = {
        let mut m = service.materializing.lock().map_err(|_| ApiError::bad_request("internal lock poisoned"))?;
        let busy: Vec<&String> = names.iter().filter(|n| m.contains(*n)).collect();
        if !busy.is_empty() && !query.split('&').any(|p| p == "force=true") {
            let body = json!({"error": format!("already materializing: {}", busy.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")), "feature_views": busy});
            return Ok(json_reply(StatusCode::CONFLICT, serde_json::to_vec(&body).unwrap_or_default()));
        }
        m.extend(names.iter().cloned());
        Running(service.clone(), names.clone())
    };
    let svc = service.clone();
    // Materialization runs on the server's multi-threaded runtime, off the HTTP workers.
    let runtime = service.background();
    let background = runtime.clone();
    let job = move || -> Result<(), ApiError> {
        let _running = running;
        let target = Target { store: svc.store.as_ref(), project: &svc.project, version: svc.entity_key_version };
        let outcomes = amora_core::online::materialize(
            &runtime,
            svc.offline.as_ref(),
            svc.registry.as_ref(),
            target,
            &plan,
            &request.user,
            &|_, _| {},
        )?;
        svc.refresh();
        let failures: Vec<String> =
            outcomes.iter().filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.view))).collect();
        for o in &outcomes {
            if let Ok(rows) = o.result {
                tracing::info!("materialized {}: {rows} rows in {:.3}s", o.view, o.seconds);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "RuntimeError",
                format!("materializing failed (nothing recorded for these views): {}", failures.join("; ")),
            ))
        }
    };
    if query.split('&').any(|p| p == "async=true") {
        background.spawn_blocking(move || {
            if let Err(e) = job() {
                tracing::warn!("asynchronous materialization failed: {}", e.message);
            }
        });
        let body = json!({"status": "accepted", "feature_views": names});
        return Ok(json_reply(StatusCode::ACCEPTED, serde_json::to_vec(&body).unwrap_or_default()));
    }
    background
        .spawn_blocking(job)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "RuntimeError", e.to_string()))??;
    Ok(ok_json(&Json::Null))
}

fn health(service: &Service) -> Reply {
    let snap = service.snapshot();
    let (registry_error, _) = service.registry_error();
    let store = service.store.health();
    let status = match (&store, &registry_error) {
        (Err(_), _) => "unavailable",
        (Ok(()), Some(_)) => "degraded",
        (Ok(()), None) => "ok",
    };
    let body = json!({
        "status": status,
        "project": service.project,
        "registry": {
            "location": service.registry.location(),
            "version_id": snap.version_id,
            "age_seconds": snap.loaded.elapsed().as_secs_f64(),
            "error": registry_error,
        },
        "online_store": {
            "name": service.store.name(),
            "error": store.err().map(|e| e.to_string()),
        },
    });
    let code = if status == "unavailable" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    json_reply(code, serde_json::to_vec(&body).unwrap_or_default())
}

fn list_feature_views(service: &Service) -> Result<Reply, ApiError> {
    use amora_core::catalog::{records, Kind};
    let snap = service.snapshot();
    let views: Vec<Json> = records(&snap.file, &service.project, Kind::FeatureViews)?
        .into_iter()
        .filter(|r| r["type"] == "feature_view")
        .map(|r| {
            let features: Vec<&Json> = r["features"].as_array().into_iter().flatten().map(|f| &f["name"]).collect();
            json!({"name": r["name"], "features": features, "entities": r["entities"], "description": r["description"]})
        })
        .collect();
    Ok(ok_json(&json!(views)))
}

/// `/api/v1/projects/{p}/(entities|feature-views|feature-services|data-sources)[/{name}]`,
/// `/api/v1/projects/{p}/lineage`, `/api/v1/projects/{p}/history`.
fn catalog(service: &Service, path: &str) -> Result<Reply, ApiError> {
    use amora_core::catalog::{records, registry_lineage, Kind};
    let rest = path.trim_start_matches("/api/v1/projects/");
    let parts: Vec<String> = rest.split('/').filter(|p| !p.is_empty()).map(percent_decode).collect();
    let not_found = |what: String| ApiError::new(StatusCode::NOT_FOUND, "FeastObjectNotFoundException", what);
    let Some(project) = parts.first() else { return Err(not_found("no project in the path".into())) };
    let snap = service.snapshot();
    if !snap.file.project_names().contains(project) && *project != service.project {
        return Err(not_found(format!("Project {project} does not exist")));
    }
    let kind = match parts.get(1).map(String::as_str) {
        Some("entities") => Kind::Entities,
        Some("feature-views") => Kind::FeatureViews,
        Some("feature-services") => Kind::FeatureServices,
        Some("data-sources") => Kind::DataSources,
        Some("lineage") if parts.len() == 2 => return Ok(ok_json(&registry_lineage(&snap.file, project)?)),
        Some("history") if parts.len() == 2 => {
            let versions = amora_registry::history::list(service.registry.as_ref())
                .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "RuntimeError", e.to_string()))?;
            let v: Vec<&amora_registry::history::VersionInfo> =
                versions.iter().filter(|v| v.project == *project).collect();
            return Ok(ok_json(&json!(v)));
        }
        _ => {
            return Err(not_found(format!(
                "unknown catalog path {path}; use entities, feature-views, feature-services, data-sources, lineage or history"
            )))
        }
    };
    let all = records(&snap.file, project, kind)?;
    match parts.get(2) {
        None if parts.len() == 2 => Ok(ok_json(&json!(all))),
        Some(name) if parts.len() == 3 => all
            .into_iter()
            .find(|r| r["name"] == **name)
            .map(|r| ok_json(&r))
            .ok_or_else(|| not_found(format!("{} {name} does not exist in project {project}", parts[1]))),
        _ => Err(not_found(format!("unknown catalog path {path}"))),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_feasts_json_string() {
        let e = ApiError::new(StatusCode::NOT_FOUND, "FeatureViewNotFoundException", "Feature view x does not exist");
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let body = futures_body(r);
        let outer: Json = serde_json::from_slice(&body).unwrap();
        let inner: Json = serde_json::from_str(outer.as_str().unwrap()).unwrap();
        assert_eq!(inner["module"], "feast.errors");
        assert_eq!(inner["class"], "FeatureViewNotFoundException");
    }

    fn futures_body(r: Reply) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async { r.into_body().collect().await.unwrap().to_bytes().to_vec() })
    }

    #[test]
    fn paths_name_their_endpoint_and_decode() {
        assert_eq!(endpoint(&Method::POST, "/get-online-features"), "get-online-features");
        assert_eq!(endpoint(&Method::GET, "/get-online-features"), "other");
        assert_eq!(endpoint(&Method::GET, "/api/v1/projects/p/entities"), "catalog");
        assert_eq!(percent_decode("Mi%20Fit"), "Mi Fit");
    }
}
