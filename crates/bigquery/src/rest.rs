//! BigQuery's REST API (v2): query jobs with polling, load jobs (multipart
//! upload), datasets and tables, and result paging (the fallback when the
//! Storage Read API is unreachable). Blocking (ureq): callers on a runtime use
//! `spawn_blocking`.
//!
//! Retries with jittered exponential backoff on 429, 5xx and connection errors;
//! a job's error comes back with BigQuery's message and position.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amora_gauth::Credentials;
use serde_json::{json, Value};

use crate::sql::{Param, TableRef};

#[derive(Debug, thiserror::Error)]
pub enum BqError {
    /// The SQL failed: BigQuery's message, with its position when it gives one.
    #[error("BigQuery rejected the query: {message}")]
    Query { message: String },
    #[error("BigQuery {what}: HTTP {status}: {message}")]
    Http { what: String, status: u16, message: String },
    #[error("BigQuery at {endpoint} is unreachable ({what}): {message}")]
    Unreachable { endpoint: String, what: String, message: String },
    #[error(transparent)]
    Auth(#[from] amora_gauth::AuthError),
    #[error("{0}")]
    Other(String),
}

/// A BigQuery REST client for one project.
pub struct Rest {
    base: String,
    upload_base: String,
    pub project: String,
    pub location: Option<String>,
    /// Rows per page for `tabledata.list` and `getQueryResults`.
    pub page_rows: u32,
    credentials: Arc<Credentials>,
    agent: ureq::Agent,
}

/// A finished query: its job, and the bytes it processed (what it costs).
#[derive(Debug, Clone)]
pub struct Done {
    pub job_id: String,
    pub bytes_processed: u64,
    pub rows_affected: Option<u64>,
}

impl Rest {
    /// `endpoint`: `https://bigquery.googleapis.com` or an emulator's `http://host:port`.
    pub fn new(endpoint: &str, project: &str, location: Option<String>, credentials: Arc<Credentials>) -> Rest {
        let e = endpoint.trim_end_matches('/');
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build();
        Rest {
            base: format!("{e}/bigquery/v2/projects/{project}"),
            upload_base: format!("{e}/upload/bigquery/v2/projects/{project}"),
            project: project.into(),
            location,
            page_rows: 10_000,
            credentials,
            agent,
        }
    }

    pub fn endpoint(&self) -> &str {
        self.base.split("/bigquery/v2").next().unwrap_or(&self.base)
    }

    /// One request with retries. `body` is JSON, or a multipart body with its content type.
    fn call(&self, what: &str, method: &str, url: &str, body: Option<Body<'_>>) -> Result<Value, BqError> {
        let mut delay = Duration::from_millis(200);
        // 429 and 5xx are retried for up to two minutes; a refused connection a few times only.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut unreachable_left = 3;
        loop {
            let mut req = self.agent.request(method, url);
            if let Some(h) = self.credentials.header()? {
                req = req.set("Authorization", &h);
            }
            let r = match &body {
                None => req.call(),
                Some(Body::Json(v)) => req.send_json(v.clone()),
                Some(Body::Bytes(content_type, bytes)) => req.set("Content-Type", content_type).send_bytes(bytes),
            };
            let retry = match r {
                Ok(resp) => {
                    let text = resp.into_string().map_err(|e| BqError::Other(format!("{what}: {e}")))?;
                    if text.trim().is_empty() {
                        return Ok(Value::Null);
                    }
                    return serde_json::from_str(&text)
                        .map_err(|e| BqError::Other(format!("{what}: the answer is not JSON: {e}")));
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    let message = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(String::from))
                        .unwrap_or(text);
                    let err = BqError::Http { what: what.into(), status, message };
                    if status == 429 || status >= 500 {
                        err
                    } else {
                        return Err(err);
                    }
                }
                Err(e) => {
                    unreachable_left -= 1;
                    BqError::Unreachable {
                        endpoint: self.endpoint().to_string(),
                        what: what.into(),
                        message: e.to_string(),
                    }
                }
            };
            if Instant::now() + delay > deadline || unreachable_left == 0 {
                return Err(retry);
            }
            tracing::warn!("{retry}; retrying in {delay:?}");
            std::thread::sleep(delay + Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0])));
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Creates the dataset if it is missing.
    pub fn ensure_dataset(&self, dataset: &str) -> Result<(), BqError> {
        let url = format!("{}/datasets/{dataset}", self.base);
        match self.call("datasets.get", "GET", &url, None) {
            Ok(_) => Ok(()),
            Err(BqError::Http { status: 404, .. }) => {
                let mut body = json!({"datasetReference": {"projectId": self.project, "datasetId": dataset}});
                if let Some(l) = &self.location {
                    body["location"] = json!(l);
                }
                match self.call("datasets.insert", "POST", &format!("{}/datasets", self.base), Some(Body::Json(body))) {
                    Ok(_) | Err(BqError::Http { status: 409, .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The table's resource, or `None` when it does not exist.
    pub fn table(&self, t: &TableRef) -> Result<Option<Value>, BqError> {
        let url =
            format!("{}/bigquery/v2/projects/{}/datasets/{}/tables/{}", self.endpoint(), t.project, t.dataset, t.table);
        match self.call("tables.get", "GET", &url, None) {
            Ok(v) => Ok(Some(v)),
            Err(BqError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn delete_table(&self, t: &TableRef) -> Result<(), BqError> {
        let url =
            format!("{}/bigquery/v2/projects/{}/datasets/{}/tables/{}", self.endpoint(), t.project, t.dataset, t.table);
        match self.call("tables.delete", "DELETE", &url, None) {
            Ok(_) | Err(BqError::Http { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn job_reference(&self) -> Value {
        let mut r = json!({"projectId": self.project, "jobId": format!("amora_{}", uuid::Uuid::new_v4().simple())});
        if let Some(l) = &self.location {
            r["location"] = json!(l);
        }
        r
    }

    /// Runs one statement as a query job (`jobs.insert`, then `jobs.get` until it is
    /// done), with named parameters and a default dataset for unqualified names.
    pub fn run(&self, sql: &str, params: &[Param], default_dataset: Option<&str>) -> Result<Done, BqError> {
        let mut query = json!({
            "query": sql,
            "useLegacySql": false,
            "parameterMode": "NAMED",
            "queryParameters": params.iter().map(|p| json!({
                "name": p.name, "parameterType": {"type": p.ty}, "parameterValue": {"value": p.value},
            })).collect::<Vec<_>>(),
        });
        if let Some(d) = default_dataset {
            query["defaultDataset"] = json!({"projectId": self.project, "datasetId": d});
        }
        let job = json!({"jobReference": self.job_reference(), "configuration": {"query": query}});
        let started = Instant::now();
        let v = self.call("jobs.insert", "POST", &format!("{}/jobs", self.base), Some(Body::Json(job)))?;
        let done = self.wait(v)?;
        tracing::info!(
            job = %done.job_id,
            bytes_processed = done.bytes_processed,
            seconds = started.elapsed().as_secs_f64(),
            "BigQuery query done"
        );
        Ok(done)
    }

    /// Runs a query whose result is small (data tests, samples): a query job
    /// (`jobs.insert`, polled), then its rows page by page through
    /// `jobs.getQueryResults`; returns the result's fields and rows (timestamps as
    /// int64 microseconds). Not `jobs.query`: the emulator ignores its `defaultDataset`.
    pub fn query_rows(&self, sql: &str, params: &[Param], default_dataset: Option<&str>) -> Result<JsonRows, BqError> {
        let done = self.run(sql, params, default_dataset)?;
        let mut url = format!(
            "{}/queries/{}?maxResults={}&timeoutMs=60000&formatOptions.useInt64Timestamp=true",
            self.base, done.job_id, self.page_rows
        );
        if let Some(l) = &self.location {
            url.push_str(&format!("&location={l}"));
        }
        self.paged("jobs.getQueryResults", &url)
    }

    /// Every page of rows from `url` (`tabledata.list` or `jobs.getQueryResults`,
    /// which take `&pageToken=`), with the schema when the answer carries one.
    fn paged(&self, what: &str, url: &str) -> Result<JsonRows, BqError> {
        let (mut fields, mut rows, mut token) = (Vec::new(), Vec::new(), None::<String>);
        loop {
            let mut page_url = url.to_string();
            if let Some(t) = &token {
                page_url.push_str(&format!("&pageToken={}", encode(t)));
            }
            let v = self.call(what, "GET", &page_url, None)?;
            job_errors(&v)?;
            if !v["jobComplete"].as_bool().unwrap_or(true) {
                continue; // getQueryResults waited timeoutMs; ask again
            }
            if fields.is_empty() {
                fields = schema_fields(&v["schema"]);
            }
            let page = v["rows"].as_array().map_or(0, Vec::len);
            for r in v["rows"].as_array().into_iter().flatten() {
                rows.push(r["f"].as_array().into_iter().flatten().map(|c| c["v"].clone()).collect());
            }
            match v["pageToken"].as_str() {
                Some(t) if !t.is_empty() && page > 0 => token = Some(t.to_string()),
                _ => return Ok((fields, rows)),
            }
        }
    }

    /// Polls a job until it is done; its error, if any, becomes [`BqError::Query`].
    fn wait(&self, mut v: Value) -> Result<Done, BqError> {
        let id = v["jobReference"]["jobId"].as_str().unwrap_or_default().to_string();
        let mut delay = Duration::from_millis(50);
        loop {
            job_errors(&v)?;
            if v["status"]["state"].as_str() == Some("DONE") {
                let stats = &v["statistics"];
                let num = |x: &Value| x.as_str().and_then(|s| s.parse().ok()).or_else(|| x.as_u64());
                return Ok(Done {
                    job_id: id,
                    bytes_processed: num(&stats["query"]["totalBytesProcessed"])
                        .or_else(|| num(&stats["totalBytesProcessed"]))
                        .unwrap_or(0),
                    rows_affected: num(&stats["query"]["numDmlAffectedRows"]),
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(2));
            let mut url = format!("{}/jobs/{id}", self.base);
            if let Some(l) = &self.location {
                url.push_str(&format!("?location={l}"));
            }
            v = self.call("jobs.get", "GET", &url, None)?;
        }
    }

    /// Loads Parquet bytes into `table` (created from `schema` if missing; replaced,
    /// or appended to with `append`) with a multipart upload.
    pub fn load_parquet(
        &self,
        table: &TableRef,
        schema: &[(String, String)],
        parquet: Vec<u8>,
        append: bool,
    ) -> Result<Done, BqError> {
        let config = json!({
            "jobReference": self.job_reference(),
            "configuration": {"load": {
                "destinationTable": {"projectId": table.project, "datasetId": table.dataset, "tableId": table.table},
                "sourceFormat": "PARQUET",
                "writeDisposition": if append { "WRITE_APPEND" } else { "WRITE_TRUNCATE" },
                "createDisposition": "CREATE_IF_NEEDED",
                "schema": {"fields": schema.iter().map(|(n, t)| json!({"name": n, "type": t, "mode": "NULLABLE"})).collect::<Vec<_>>()},
            }},
        });
        let boundary = format!("amora_{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(parquet.len() + 1024);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{config}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&parquet);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = format!("{}/jobs?uploadType=multipart", self.upload_base);
        let ct = format!("multipart/related; boundary={boundary}");
        let v = self.call("load job", "POST", &url, Some(Body::Bytes(&ct, body)))?;
        self.wait(v)
    }

    /// Every row of a table through `tabledata.list` (the slow path: JSON rows),
    /// as strings per field, with the table's schema.
    pub fn list_rows(&self, t: &TableRef) -> Result<JsonRows, BqError> {
        let meta = self.table(t)?.ok_or_else(|| BqError::Other(format!("table {t} does not exist")))?;
        let url = format!(
            "{}/bigquery/v2/projects/{}/datasets/{}/tables/{}/data?maxResults={}&formatOptions.useInt64Timestamp=true",
            self.endpoint(),
            t.project,
            t.dataset,
            t.table,
            self.page_rows
        );
        let (_, rows) = self.paged("tabledata.list", &url)?;
        Ok((schema_fields(&meta["schema"]), rows))
    }
}

/// A table's fields `(name, type)` and its rows, one JSON value per field.
pub type JsonRows = (Vec<(String, String)>, Vec<Vec<Value>>);

/// `(name, type)` of each field of a schema resource.
fn schema_fields(schema: &Value) -> Vec<(String, String)> {
    schema["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (f["name"].as_str().unwrap_or("").to_string(), f["type"].as_str().unwrap_or("").to_string()))
        .collect()
}

enum Body<'a> {
    Json(Value),
    Bytes(&'a str, Vec<u8>),
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A job's error (`status.errorResult`, or a top-level `errors` array as the
/// emulator answers; `status.errors` alone may be warnings of a job that succeeded), with BigQuery's location when it gives one.
fn job_errors(v: &Value) -> Result<(), BqError> {
    let first = v["status"]["errorResult"]
        .as_object()
        .map(|_| &v["status"]["errorResult"])
        .or_else(|| v["errors"].as_array().and_then(|a| a.first()));
    match first {
        Some(e) => {
            let mut message = e["message"].as_str().unwrap_or("unknown error").to_string();
            if let Some(l) = e["location"].as_str().filter(|l| !l.is_empty() && *l != "query") {
                message.push_str(&format!(" (at {l})"));
            }
            Err(BqError::Query { message })
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A server on 127.0.0.1 that answers each connection with the next reply.
    fn server(replies: Vec<(&'static str, &'static str)>) -> (String, std::thread::JoinHandle<usize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            for (status, body) in &replies {
                let (mut s, _) = listener.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            replies.len()
        });
        (url, h)
    }

    #[test]
    fn throttling_and_server_errors_are_retried_client_errors_are_not() {
        let (url, h) = server(vec![
            ("503 Service Unavailable", r#"{"error":{"message":"backend error"}}"#),
            ("429 Too Many Requests", r#"{"error":{"message":"rate limited"}}"#),
            ("200 OK", r#"{"id":"p:d"}"#),
        ]);
        let rest = Rest::new(&url, "p", None, Arc::new(Credentials::anonymous()));
        rest.ensure_dataset("d").unwrap();
        assert_eq!(h.join().unwrap(), 3);
        let (url, h) = server(vec![("403 Forbidden", r#"{"error":{"message":"Access Denied: dataset p:d"}}"#)]);
        let rest = Rest::new(&url, "p", None, Arc::new(Credentials::anonymous()));
        let e = rest.ensure_dataset("d").unwrap_err().to_string();
        assert!(e.contains("403") && e.contains("Access Denied"), "{e}");
        h.join().unwrap();
        // Nobody listening: a few quick attempts, then a clear error.
        let rest = Rest::new("http://127.0.0.1:9", "p", None, Arc::new(Credentials::anonymous()));
        let t0 = Instant::now();
        let e = rest.ensure_dataset("d").unwrap_err().to_string();
        assert!(e.contains("unreachable") && t0.elapsed() < Duration::from_secs(10), "{e}");
    }

    #[test]
    fn job_errors_carry_the_message_and_position() {
        let v = json!({"status": {"state": "DONE", "errorResult": {"reason": "invalidQuery", "location": "query", "message": "Unrecognized name: nope at [1:8]"}}});
        let e = job_errors(&v).unwrap_err().to_string();
        assert!(e.contains("Unrecognized name: nope at [1:8]"), "{e}");
        // Warnings in status.errors of a job that succeeded are not failures.
        let ok = json!({"status": {"state": "DONE", "errors": [{"message": "a warning"}]}});
        assert!(job_errors(&ok).is_ok());
        let emulator = json!({"errors": [{"message": "Binder Error", "location": "t.sql"}]});
        assert!(job_errors(&emulator).unwrap_err().to_string().contains("(at t.sql)"));
    }
}
