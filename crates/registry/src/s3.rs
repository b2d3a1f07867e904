//! A registry on S3 (`s3://bucket/key`), over the REST API with SigV4 signing.
//!
//! Compare-and-swap uses conditional writes: `If-Match: <etag read>` to replace,
//! `If-None-Match: *` to create; 412 (or 409 for a concurrent conditional write)
//! means someone else wrote first.
//!
//! Endpoint: `FEAST_S3_ENDPOINT_URL` (as Feast) or `AWS_ENDPOINT_URL` (path-style
//! requests, for emulators and S3-compatible stores), else
//! `https://<bucket>.s3.<region>.amazonaws.com`. Credentials: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`; region `AWS_REGION` /
//! `AWS_DEFAULT_REGION` (default us-east-1).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::http;
use crate::store::{Generation, RegistryStore, StoreError, Stored};

pub struct S3Store {
    bucket: String,
    key: String,
    /// Scheme and host, and whether requests are path-style.
    endpoint: String,
    path_style: bool,
    region: String,
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
    agent: ureq::Agent,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// URI-encodes per SigV4 (unreserved characters kept; `/` kept in paths).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The SigV4 `Authorization` header value for a request.
#[allow(clippy::too_many_arguments)]
pub fn sign_v4(
    method: &str,
    host: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    payload_hash: &str,
    amz_date: &str,
    region: &str,
    access_key: &str,
    secret_key: &str,
) -> String {
    let mut q: Vec<(String, String)> =
        query.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    q.sort();
    let canonical_query = q.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut h: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())).collect();
    h.push(("host".into(), host.into()));
    h.sort();
    let canonical_headers: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = h.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request =
        format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let k = hmac(format!("AWS4{secret_key}").as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, "s3");
    let k = hmac(&k, "aws4_request");
    let signature = hex(&hmac(&k, &to_sign));
    format!("AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}")
}

impl S3Store {
    pub fn new(bucket: &str, key: &str) -> S3Store {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
        let (endpoint, path_style) = match env("FEAST_S3_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT_URL")) {
            Some(e) => (e.trim_end_matches('/').to_string(), true),
            None => (format!("https://{bucket}.s3.{region}.amazonaws.com"), false),
        };
        S3Store {
            bucket: bucket.into(),
            key: key.into(),
            endpoint,
            path_style,
            region,
            access_key: env("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            secret_key: env("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            session_token: env("AWS_SESSION_TOKEN"),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
                .build(),
        }
    }

    fn err(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError::Backend { location: self.location(), message: message.to_string() }
    }

    /// A signed request for `object` ("" for the bucket itself).
    fn request(
        &self,
        method: &str,
        object: &str,
        query: &[(String, String)],
        extra: &[(&str, String)],
        payload: &[u8],
    ) -> ureq::Request {
        let path = if self.path_style { format!("/{}/{}", self.bucket, object) } else { format!("/{object}") };
        let path = uri_encode(&path, true);
        let host = self.endpoint.split("://").nth(1).unwrap_or(&self.endpoint).to_string();
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let payload_hash = sha256_hex(payload);
        let mut headers: Vec<(String, String)> =
            vec![("x-amz-content-sha256".into(), payload_hash.clone()), ("x-amz-date".into(), amz_date.clone())];
        if let Some(t) = &self.session_token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        for (k, v) in extra {
            headers.push((k.to_string(), v.clone()));
        }
        let auth = sign_v4(
            method,
            &host,
            &path,
            query,
            &headers,
            &payload_hash,
            &amz_date,
            &self.region,
            &self.access_key,
            &self.secret_key,
        );
        let qs = query
            .iter()
            .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
            .collect::<Vec<_>>()
            .join("&");
        let url =
            if qs.is_empty() { format!("{}{path}", self.endpoint) } else { format!("{}{path}?{qs}", self.endpoint) };
        let mut r = self.agent.request(method, &url).set("Authorization", &auth);
        for (k, v) in &headers {
            r = r.set(k, v);
        }
        r
    }

    fn get(&self, object: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        match http::send(&self.request("GET", object, &[], &[], b""), None) {
            Ok(r) => {
                let etag = r.header("ETag").unwrap_or_default().to_string();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).map_err(|e| self.err(e))?;
                Ok(Some((etag, bytes)))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, r)) => {
                Err(self.err(format!("HTTP {code}: {}", r.into_string().unwrap_or_default())))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn put(&self, object: &str, condition: (&str, String), bytes: &[u8]) -> Result<String, StoreError> {
        let extra = [condition, ("Content-Type", "application/octet-stream".into())];
        match http::send(&self.request("PUT", object, &[], &extra, bytes), Some(bytes)) {
            Ok(r) => Ok(r.header("ETag").unwrap_or_default().to_string()),
            Err(ureq::Error::Status(412 | 409, _)) => Err(StoreError::Conflict),
            Err(ureq::Error::Status(code, r)) => {
                Err(self.err(format!("HTTP {code}: {}", r.into_string().unwrap_or_default())))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn history_prefix(&self) -> String {
        format!("{}.history/", self.key)
    }
}

/// The text of every `<tag>…</tag>` in an XML document (enough for ListObjectsV2).
fn xml_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

impl RegistryStore for S3Store {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn read(&self) -> Result<Option<Stored>, StoreError> {
        Ok(self.get(&self.key)?.map(|(etag, bytes)| Stored { bytes, generation: Generation(etag) }))
    }

    fn write(&self, expected: Option<&Generation>, bytes: &[u8]) -> Result<Generation, StoreError> {
        let condition = match expected {
            Some(g) => ("If-Match", g.0.clone()),
            None => ("If-None-Match", "*".to_string()),
        };
        self.put(&self.key, condition, bytes).map(Generation)
    }

    fn create_history_file(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match self.put(&format!("{}{name}", self.history_prefix()), ("If-None-Match", "*".into()), bytes) {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict) => Err(StoreError::AlreadyExists(name.into())),
            Err(e) => Err(e),
        }
    }

    fn list_history_files(&self) -> Result<Vec<String>, StoreError> {
        let prefix = self.history_prefix();
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type".to_string(), "2".to_string()), ("prefix".to_string(), prefix.clone())];
            if let Some(t) = &token {
                query.push(("continuation-token".into(), t.clone()));
            }
            let body = match http::send(&self.request("GET", "", &query, &[], b""), None) {
                Ok(r) => r.into_string().map_err(|e| self.err(e))?,
                Err(ureq::Error::Status(404, _)) => return Ok(names),
                Err(e) => return Err(self.err(e)),
            };
            for k in xml_values(&body, "Key") {
                if let Some(n) = k.strip_prefix(&prefix) {
                    names.push(n.to_string());
                }
            }
            match xml_values(&body, "NextContinuationToken").first() {
                Some(t) if xml_values(&body, "IsTruncated").first() == Some(&"true") => token = Some(t.to_string()),
                _ => return Ok(names),
            }
        }
    }

    fn read_history_file(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        match self.get(&format!("{}{name}", self.history_prefix()))? {
            Some((_, bytes)) => Ok(bytes),
            None => Err(StoreError::NotFound(format!("history file {name}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented SigV4 example for S3 (GET /test.txt with a Range header,
    /// examplebucket, 20130524T000000Z, the documentation's example keys).
    #[test]
    fn signs_like_the_aws_documentation_example() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let auth = sign_v4(
            "GET",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            &[],
            &[
                ("range".into(), "bytes=0-9".into()),
                ("x-amz-content-sha256".into(), empty.into()),
                ("x-amz-date".into(), "20130524T000000Z".into()),
            ],
            empty,
            "20130524T000000Z",
            "us-east-1",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn list_parsing() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a/v1</Key></Contents><Contents><Key>a/v2</Key></Contents></ListBucketResult>";
        assert_eq!(xml_values(xml, "Key"), vec!["a/v1", "a/v2"]);
    }
}
