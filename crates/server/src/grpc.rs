//! Feast's gRPC `feast.serving.ServingService` (`GetFeastServingInfo`,
//! `GetOnlineFeatures`) on its own port: unary gRPC over HTTP/2, framed by hand
//! (5-byte prefix, protobuf body, `grpc-status` trailers), with the semantics of
//! the HTTP endpoint: the same resolution, reads and statuses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use amora_core::online::{read_keys_async, Status, Target};
use amora_core::{CoreError, FeatureSelection};
use amora_proto::online::{serialize_entity_key, value::Val, KeyValue, Value};
use amora_proto::serving::{
    FeatureList, FeatureVector, FeatureViewMetadata, GetFeastServingInfoResponse, GetOnlineFeaturesRequest,
    GetOnlineFeaturesResponse, GetOnlineFeaturesResponseMetadata, Kind,
};
use amora_proto::Timestamp;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Request, Response};
use prost::Message;

use crate::{now_micros, Service};

type GrpcBody = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// gRPC status codes used here.
#[derive(Debug, Clone, Copy)]
enum Code {
    Ok = 0,
    InvalidArgument = 3,
    NotFound = 5,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

struct GrpcError(Code, String);

impl From<CoreError> for GrpcError {
    fn from(e: CoreError) -> GrpcError {
        match e {
            CoreError::NotFound { message, .. } => GrpcError(Code::NotFound, message),
            CoreError::Invalid(m) => GrpcError(Code::InvalidArgument, m),
            CoreError::Online(e) => GrpcError(Code::Unavailable, format!("the online store is unavailable: {e}")),
            other => GrpcError(Code::Internal, other.to_string()),
        }
    }
}

fn trailers(code: Code, message: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", (code as i32).into());
    if !message.is_empty() {
        // grpc-message is percent-encoded.
        let enc: String = message
            .bytes()
            .map(|b| if (0x20..0x7f).contains(&b) && b != b'%' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        if let Ok(v) = enc.parse() {
            h.insert("grpc-message", v);
        }
    }
    h
}

fn reply(result: Result<Vec<u8>, GrpcError>) -> Response<GrpcBody> {
    let mut frames = Vec::new();
    let trailer = match result {
        Ok(msg) => {
            let mut framed = BytesMut::with_capacity(5 + msg.len());
            framed.put_u8(0);
            framed.put_u32(msg.len() as u32);
            framed.extend_from_slice(&msg);
            frames.push(Ok(Frame::data(framed.freeze())));
            trailers(Code::Ok, "")
        }
        Err(GrpcError(code, message)) => trailers(code, &message),
    };
    frames.push(Ok(Frame::trailers(trailer)));
    Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .unwrap_or_else(|_| Response::new(StreamBody::new(futures::stream::iter(Vec::new()))))
}

pub async fn handle(service: Arc<Service>, req: Request<Incoming>) -> Result<Response<GrpcBody>, Infallible> {
    let t0 = Instant::now();
    let path = req.uri().path().to_string();
    let name: &'static str = match path.as_str() {
        "/feast.serving.ServingService/GetOnlineFeatures" => "grpc-get-online-features",
        "/feast.serving.ServingService/GetFeastServingInfo" => "grpc-get-feast-serving-info",
        _ => "grpc-other",
    };
    let result = call(&service, req, name).await;
    let code = match &result {
        Ok(_) => 0,
        Err(GrpcError(c, _)) => *c as u16,
    };
    service.metrics.request(name, code, t0.elapsed());
    Ok(reply(result))
}

async fn call(service: &Service, req: Request<Incoming>, name: &str) -> Result<Vec<u8>, GrpcError> {
    if service.authorized(req.headers()) != Some(true) {
        return Err(GrpcError(Code::Unauthenticated, "a valid `authorization: Bearer <token>` is required".into()));
    }
    let limit = service.config.max_body_bytes;
    let body = Limited::new(req.into_body(), limit + 5)
        .collect()
        .await
        .map_err(|e| GrpcError(Code::ResourceExhausted, format!("cannot read the request (limit {limit} bytes): {e}")))?
        .to_bytes();
    if body.len() < 5 || body[0] != 0 {
        return Err(GrpcError(Code::InvalidArgument, "expected one uncompressed gRPC message".into()));
    }
    let msg = &body[5..];
    match name {
        "grpc-get-feast-serving-info" => {
            Ok(GetFeastServingInfoResponse { version: format!("amora {}", env!("CARGO_PKG_VERSION")) }.encode_to_vec())
        }
        "grpc-get-online-features" => {
            let req = GetOnlineFeaturesRequest::decode(msg)
                .map_err(|e| GrpcError(Code::InvalidArgument, format!("not a GetOnlineFeaturesRequest: {e}")))?;
            get_online_features(service, req).await.map(|r| r.encode_to_vec())
        }
        _ => Err(GrpcError(Code::Unimplemented, "amora serves feast.serving.ServingService only".into())),
    }
}

fn key_value(column: &str, value_type: i32, v: &Value) -> Result<KeyValue, GrpcError> {
    let wrong =
        || GrpcError(Code::InvalidArgument, format!("entity column `{column}` holds a value of the wrong type: {v:?}"));
    Ok(match (value_type, &v.val) {
        (4, Some(Val::Int64Val(i))) => KeyValue::Int64(*i),
        (4, Some(Val::Int32Val(i))) => KeyValue::Int64(i64::from(*i)),
        (3, Some(Val::Int32Val(i))) => KeyValue::Int32(*i),
        (3, Some(Val::Int64Val(i))) => KeyValue::Int32(i32::try_from(*i).map_err(|_| wrong())?),
        (2, Some(Val::StringVal(s))) => KeyValue::String(s.clone()),
        (1, Some(Val::BytesVal(b))) => KeyValue::Bytes(b.clone()),
        (8, Some(Val::UnixTimestampVal(t))) => KeyValue::UnixTimestamp(*t),
        _ => return Err(wrong()),
    })
}

async fn get_online_features(
    service: &Service,
    req: GetOnlineFeaturesRequest,
) -> Result<GetOnlineFeaturesResponse, GrpcError> {
    let selection = match req.kind {
        Some(Kind::Features(f)) if !f.val.is_empty() => FeatureSelection::Refs(f.val),
        Some(Kind::FeatureService(s)) => FeatureSelection::Service(s),
        _ => return Err(GrpcError(Code::InvalidArgument, "no features requested".into())),
    };
    let request = crate::api::resolved(service, selection, req.full_feature_names)
        .map_err(|e| GrpcError(Code::from_api(&e), e.message().to_string()))?;
    let n = req.entities.values().next().map_or(0, |c| c.val.len());
    if n == 0 {
        return Err(GrpcError(Code::InvalidArgument, "no entities given".into()));
    }
    if req.entities.values().any(|c| c.val.len() != n) {
        return Err(GrpcError(Code::InvalidArgument, "every entity column must have the same number of values".into()));
    }
    if n > service.config.max_entities {
        return Err(GrpcError(
            Code::ResourceExhausted,
            format!("{n} entity rows is more than the server's limit of {}", service.config.max_entities),
        ));
    }
    for name in req.entities.keys() {
        if !request.join_keys.iter().any(|(k, _)| k == name) {
            return Err(GrpcError(
                Code::InvalidArgument,
                format!("entity column `{name}` is not a join key of the requested feature views"),
            ));
        }
    }
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let mut pairs = Vec::with_capacity(request.join_keys.len());
        for (k, t) in &request.join_keys {
            let col = req
                .entities
                .get(k)
                .ok_or_else(|| GrpcError(Code::InvalidArgument, format!("missing entity column `{k}` (a join key)")))?;
            pairs.push((k.as_str(), key_value(k, *t, &col.val[i])?));
        }
        keys.push(serialize_entity_key(&pairs, service.entity_key_version));
    }
    let target =
        Target { store: service.store.as_ref(), project: &service.project, version: service.entity_key_version };
    let t0 = Instant::now();
    let rows = read_keys_async(target, &request, &keys, now_micros()).await;
    service.metrics.store_read(t0.elapsed(), n, rows.is_ok());
    let rows = rows?;
    let epoch = Timestamp { seconds: 0, nanos: 0 };
    let mut names: Vec<String> = req.entities.keys().cloned().collect();
    let mut results: Vec<FeatureVector> = req
        .entities
        .values()
        .map(|c| FeatureVector { values: c.val.clone(), statuses: vec![1; n], event_timestamps: vec![epoch; n] })
        .collect();
    for (f, name) in request.names.iter().enumerate() {
        names.push(name.clone());
        results.push(FeatureVector {
            values: rows.iter().map(|r| r[f].value.clone().unwrap_or_default()).collect(),
            statuses: rows
                .iter()
                .map(|r| match r[f].status {
                    Status::Present => 1,
                    Status::NullValue => 2,
                    Status::NotFound => 3,
                    Status::OutsideMaxAge => 4,
                })
                .collect(),
            event_timestamps: rows
                .iter()
                .map(|r| {
                    r[f].event_ts.map_or(epoch, |t| Timestamp {
                        seconds: t.div_euclid(1_000_000),
                        nanos: (t.rem_euclid(1_000_000) * 1000) as i32,
                    })
                })
                .collect(),
        });
    }
    Ok(GetOnlineFeaturesResponse {
        metadata: Some(GetOnlineFeaturesResponseMetadata {
            feature_names: Some(FeatureList { val: names }),
            feature_view_metadata: if req.include_feature_view_version_metadata {
                request
                    .view_versions()
                    .map(|(name, version)| FeatureViewMetadata { name: name.to_string(), version })
                    .collect()
            } else {
                Vec::new()
            },
        }),
        results,
        status: false,
    })
}

impl Code {
    fn from_api(e: &crate::api::ApiError) -> Code {
        match e.status().as_u16() {
            404 => Code::NotFound,
            401 => Code::Unauthenticated,
            413 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            400..=499 => Code::InvalidArgument,
            _ => Code::Internal,
        }
    }
}

/// Serves gRPC (HTTP/2 without TLS) until `shutdown` resolves.
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(
                        TokioIo::new(stream),
                        hyper::service::service_fn(move |req| handle(service.clone(), req)),
                    );
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => return,
        }
    }
}
