//! The BigQuery Storage Read API: a table read as Arrow record batches over gRPC
//! (`google.cloud.bigquery.storage.v1.BigQueryRead`: `CreateReadSession`, then
//! `ReadRows` on each stream, streams read concurrently over one HTTP/2
//! connection). gRPC is framed by hand over hyper; the messages are written here
//! from the API's field numbers. TLS (rustls, ALPN h2) for `https://` endpoints,
//! plaintext for emulators.

use std::io::Cursor;
use std::sync::Arc;

use amora_gauth::Credentials;
use amora_offline::arrow::ipc::reader::StreamReader;
use amora_offline::arrow::record_batch::RecordBatch;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use prost::Message;

use crate::rest::BqError;
use crate::sql::TableRef;

#[derive(Clone, PartialEq, prost::Message)]
struct CreateReadSessionRequest {
    #[prost(string, tag = "1")]
    parent: String,
    #[prost(message, optional, tag = "2")]
    read_session: Option<ReadSession>,
    #[prost(int32, tag = "3")]
    max_stream_count: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadSession {
    #[prost(string, tag = "1")]
    name: String,
    /// 2 = ARROW.
    #[prost(int32, tag = "3")]
    data_format: i32,
    #[prost(message, optional, tag = "5")]
    arrow_schema: Option<ArrowSchema>,
    #[prost(string, tag = "6")]
    table: String,
    #[prost(message, optional, tag = "8")]
    read_options: Option<TableReadOptions>,
    #[prost(message, repeated, tag = "10")]
    streams: Vec<ReadStream>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TableReadOptions {
    #[prost(string, repeated, tag = "1")]
    selected_fields: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ArrowSchema {
    #[prost(bytes = "vec", tag = "1")]
    serialized_schema: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadStream {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadRowsRequest {
    #[prost(string, tag = "1")]
    read_stream: String,
    #[prost(int64, tag = "2")]
    offset: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadRowsResponse {
    #[prost(message, optional, tag = "4")]
    arrow_record_batch: Option<ArrowRecordBatch>,
    #[prost(int64, tag = "6")]
    row_count: i64,
    #[prost(message, optional, tag = "8")]
    arrow_schema: Option<ArrowSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ArrowRecordBatch {
    #[prost(bytes = "vec", tag = "1")]
    serialized_record_batch: Vec<u8>,
}

const SERVICE: &str = "google.cloud.bigquery.storage.v1.BigQueryRead";

/// A Storage Read API endpoint: `https://bigquerystorage.googleapis.com` or an emulator's `http://host:port`.
pub struct StorageRead {
    endpoint: String,
    credentials: Arc<Credentials>,
    /// Streams asked for per session (the server may give fewer).
    pub max_streams: i32,
}

fn unreachable(endpoint: &str, e: impl std::fmt::Display) -> BqError {
    BqError::Unreachable { endpoint: endpoint.into(), what: "Storage Read API".into(), message: e.to_string() }
}

impl StorageRead {
    pub fn new(endpoint: &str, credentials: Arc<Credentials>) -> StorageRead {
        StorageRead { endpoint: endpoint.trim_end_matches('/').to_string(), credentials, max_streams: 4 }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, BqError> {
        let (tls, rest) = match self.endpoint.split_once("://") {
            Some(("https", r)) => (true, r),
            Some((_, r)) => (false, r),
            None => (false, self.endpoint.as_str()),
        };
        let host = rest.split('/').next().unwrap_or(rest);
        let (name, addr) = match host.rsplit_once(':') {
            Some((n, _)) => (n.to_string(), host.to_string()),
            None => (host.to_string(), format!("{host}:{}", if tls { 443 } else { 80 })),
        };
        let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| unreachable(&self.endpoint, e))?;
        let _ = tcp.set_nodelay(true);
        if tls {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| unreachable(&self.endpoint, e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let server = tokio_rustls::rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| unreachable(&self.endpoint, e))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server, tcp)
                .await
                .map_err(|e| unreachable(&self.endpoint, e))?;
            self.handshake(stream).await
        } else {
            self.handshake(tcp).await
        }
    }

    /// HTTP/2 over a connected stream (TLS or not); the connection is driven by a task.
    async fn handshake<T>(&self, io: T) -> Result<SendRequest<Full<Bytes>>, BqError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let exec = hyper_util::rt::TokioExecutor::new();
        let (send, conn) = hyper::client::conn::http2::handshake(exec, hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| unreachable(&self.endpoint, e))?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// One gRPC call; returns every message of the response (unary: one).
    async fn call(
        &self,
        send: &mut SendRequest<Full<Bytes>>,
        method: &str,
        routing: &str,
        message: Vec<u8>,
    ) -> Result<Vec<Bytes>, BqError> {
        let mut framed = BytesMut::with_capacity(message.len() + 5);
        framed.extend_from_slice(&[0]);
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let mut req = hyper::Request::post(format!("{}/{SERVICE}/{method}", self.endpoint))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-goog-request-params", routing);
        if let Some(h) = self.credentials.header()? {
            req = req.header("authorization", h);
        }
        let req = req.body(Full::new(framed.freeze())).map_err(|e| BqError::Other(e.to_string()))?;
        send.ready().await.map_err(|e| unreachable(&self.endpoint, e))?;
        let resp = send.send_request(req).await.map_err(|e| unreachable(&self.endpoint, e))?;
        let (parts, mut body) = resp.into_parts();
        if parts.status != hyper::StatusCode::OK {
            return Err(unreachable(&self.endpoint, format!("{method}: HTTP {}", parts.status)));
        }
        let mut status = grpc_status(&parts.headers);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unreachable(&self.endpoint, e))?;
            if let Some(t) = frame.trailers_ref() {
                status = grpc_status(t);
            }
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                while buf.len() >= 5 {
                    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                    if buf[0] != 0 {
                        return Err(BqError::Other(format!("{method}: compressed gRPC messages are not supported")));
                    }
                    if buf.len() < 5 + len {
                        break;
                    }
                    buf.advance(5);
                    out.push(buf.split_to(len).freeze());
                }
            }
        }
        match status {
            Some((0, _)) | None => Ok(out),
            Some((code, message)) => Err(BqError::Http {
                what: format!("Storage Read API {method}"),
                status: grpc_to_http(code),
                message: format!("gRPC status {code}: {message}"),
            }),
        }
    }

    /// Reads a whole table (the given columns, all when empty) as Arrow batches.
    pub async fn read_table(&self, table: &TableRef, columns: &[String]) -> Result<Vec<RecordBatch>, BqError> {
        let path = format!("projects/{}/datasets/{}/tables/{}", table.project, table.dataset, table.table);
        let mut send = self.connect().await?;
        let req = CreateReadSessionRequest {
            parent: format!("projects/{}", table.project),
            read_session: Some(ReadSession {
                data_format: 2,
                table: path.clone(),
                read_options: Some(TableReadOptions { selected_fields: columns.to_vec() }),
                ..Default::default()
            }),
            max_stream_count: self.max_streams,
        };
        let routing = format!("read_session.table={}", path.replace('/', "%2F"));
        let reply = self.call(&mut send, "CreateReadSession", &routing, req.encode_to_vec()).await?;
        let session = reply
            .first()
            .map(|b| ReadSession::decode(b.as_ref()))
            .transpose()
            .map_err(|e| BqError::Other(format!("CreateReadSession: {e}")))?
            .ok_or_else(|| BqError::Other("CreateReadSession: empty answer".into()))?;
        let schema = session.arrow_schema.map(|s| s.serialized_schema).unwrap_or_default();
        let reads = session.streams.iter().map(|s| {
            let mut send = send.clone();
            let schema = schema.clone();
            let stream_name = s.name.clone();
            async move {
                let routing = format!("read_stream={}", stream_name.replace('/', "%2F"));
                let req = ReadRowsRequest { read_stream: stream_name, offset: 0 };
                let messages = self.call(&mut send, "ReadRows", &routing, req.encode_to_vec()).await?;
                let mut batches = Vec::new();
                let mut schema = schema;
                for m in messages {
                    let r =
                        ReadRowsResponse::decode(m.as_ref()).map_err(|e| BqError::Other(format!("ReadRows: {e}")))?;
                    if let Some(s) = r.arrow_schema.filter(|s| !s.serialized_schema.is_empty()) {
                        schema = s.serialized_schema;
                    }
                    if let Some(b) = r.arrow_record_batch {
                        batches.extend(decode(&schema, &b.serialized_record_batch)?);
                    }
                }
                Ok::<_, BqError>(batches)
            }
        });
        let parts = futures::future::try_join_all(reads).await?;
        Ok(parts.into_iter().flatten().collect())
    }
}

/// The end-of-stream marker of Arrow IPC.
const EOS: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/// Arrow IPC: the schema message, then the batch message, read as one stream.
/// A schema sent as a whole stream (ending in the end-of-stream marker, as the
/// emulator does) is cut before the marker.
fn decode(schema: &[u8], batch: &[u8]) -> Result<Vec<RecordBatch>, BqError> {
    let schema = schema.strip_suffix(&EOS).unwrap_or(schema);
    let mut bytes = Vec::with_capacity(schema.len() + batch.len());
    bytes.extend_from_slice(schema);
    bytes.extend_from_slice(batch);
    let reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| BqError::Other(format!("ReadRows: bad Arrow schema: {e}")))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| BqError::Other(format!("ReadRows: bad Arrow batch: {e}")))
}

fn grpc_status(h: &hyper::HeaderMap) -> Option<(u32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = h.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("").to_string();
    Some((code, message))
}

fn grpc_to_http(code: u32) -> u16 {
    match code {
        3 | 9 | 11 => 400,
        5 => 404,
        7 => 403,
        16 => 401,
        8 => 429,
        14 | 4 => 503,
        _ => 500,
    }
}
