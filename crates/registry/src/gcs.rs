//! A registry on Google Cloud Storage (`gs://bucket/path`), through the JSON API.
//!
//! Compare-and-swap uses object generations: every write is a multipart upload with
//! `ifGenerationMatch` (the generation read, or `0` for "must not exist"); a 412
//! means someone else wrote first. History files are created with
//! `ifGenerationMatch=0`, so two writers never claim one version number.
//!
//! Endpoint: `STORAGE_EMULATOR_HOST` (e.g. `http://127.0.0.1:4443`, as Google's
//! clients honour it) or `https://storage.googleapis.com`. Credentials for the real
//! service: `amora-gauth` (`GOOGLE_OAUTH_ACCESS_TOKEN`, a service-account key in
//! `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application-default credentials, or
//! the metadata server).

use std::time::Duration;

use crate::http;
use crate::store::{Generation, RegistryStore, StoreError, Stored};

pub struct GcsStore {
    base: String,
    bucket: String,
    object: String,
    agent: ureq::Agent,
    credentials: amora_gauth::Credentials,
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl GcsStore {
    pub fn new(bucket: &str, object: &str) -> GcsStore {
        let emulator = std::env::var("STORAGE_EMULATOR_HOST").ok().filter(|h| !h.is_empty());
        let base = match &emulator {
            Some(h) if h.starts_with("http") => h.trim_end_matches('/').to_string(),
            Some(h) => format!("http://{}", h.trim_end_matches('/')),
            None => "https://storage.googleapis.com".to_string(),
        };
        let agent =
            ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10)).timeout(Duration::from_secs(60)).build();
        let env = |k: &str| std::env::var(k).ok();
        // An emulator takes no credentials; Google Cloud's are found as Google's clients find them.
        let credentials = match emulator {
            Some(_) => amora_gauth::Credentials::anonymous(),
            // A broken credentials file is reported here; requests then get the service's 401.
            None => amora_gauth::Credentials::discover(None, &env).unwrap_or_else(|e| {
                eprintln!("warning: {e}; GCS requests will be sent without credentials");
                amora_gauth::Credentials::anonymous()
            }),
        };
        GcsStore { base, bucket: bucket.into(), object: object.into(), agent, credentials }
    }

    fn err(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError::Backend { location: self.location(), message: message.to_string() }
    }

    fn request(&self, method: &str, url: &str) -> Result<ureq::Request, StoreError> {
        let mut r = self.agent.request(method, url);
        if let Some(h) = self.credentials.header().map_err(|e| self.err(e))? {
            r = r.set("Authorization", &h);
        }
        Ok(r)
    }

    fn object_url(&self, name: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.base, encode(&self.bucket), encode(name))
    }

    /// (generation, bytes) of an object, or None if absent.
    fn get(&self, name: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let meta = match http::send(&self.request("GET", &self.object_url(name))?, None) {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let meta: serde_json::Value = serde_json::from_reader(meta.into_reader()).map_err(|e| self.err(e))?;
        let generation =
            meta["generation"].as_str().map(String::from).unwrap_or_else(|| meta["generation"].to_string());
        let url = format!("{}?alt=media&generation={generation}", self.object_url(name));
        let resp = match http::send(&self.request("GET", &url)?, None) {
            Ok(r) => r,
            // Replaced between the two requests: report it as changed.
            Err(ureq::Error::Status(404, _)) => return Err(StoreError::Conflict),
            Err(e) => return Err(self.err(e)),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).map_err(|e| self.err(e))?;
        Ok(Some((generation, bytes)))
    }

    /// A multipart upload with `ifGenerationMatch`; returns the new generation.
    fn put(&self, name: &str, if_generation: &str, bytes: &[u8]) -> Result<String, StoreError> {
        let boundary = format!("amora-{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(bytes.len() + 512);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(serde_json::json!({ "name": name }).to_string().as_bytes());
        body.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart&ifGenerationMatch={if_generation}",
            self.base,
            encode(&self.bucket)
        );
        let request =
            self.request("POST", &url)?.set("Content-Type", &format!("multipart/related; boundary={boundary}"));
        let resp = http::send(&request, Some(&body));
        match resp {
            Ok(r) => {
                let v: serde_json::Value = serde_json::from_reader(r.into_reader()).map_err(|e| self.err(e))?;
                Ok(v["generation"].as_str().map(String::from).unwrap_or_else(|| v["generation"].to_string()))
            }
            Err(ureq::Error::Status(412, _)) => Err(StoreError::Conflict),
            Err(ureq::Error::Status(404, _)) => Err(self.err(format!("bucket `{}` does not exist", self.bucket))),
            Err(e) => Err(self.err(e)),
        }
    }

    fn history_prefix(&self) -> String {
        format!("{}.history/", self.object)
    }
}

impl RegistryStore for GcsStore {
    fn location(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.object)
    }

    fn read(&self) -> Result<Option<Stored>, StoreError> {
        Ok(self.get(&self.object)?.map(|(g, bytes)| Stored { bytes, generation: Generation(g) }))
    }

    fn write(&self, expected: Option<&Generation>, bytes: &[u8]) -> Result<Generation, StoreError> {
        let if_generation = expected.map_or("0", |g| g.0.as_str());
        self.put(&self.object, if_generation, bytes).map(Generation)
    }

    fn create_history_file(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let object = format!("{}{name}", self.history_prefix());
        match self.put(&object, "0", bytes) {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict) => Err(StoreError::AlreadyExists(name.into())),
            Err(e) => Err(e),
        }
    }

    fn list_history_files(&self) -> Result<Vec<String>, StoreError> {
        let prefix = self.history_prefix();
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut url = format!("{}/storage/v1/b/{}/o?prefix={}", self.base, encode(&self.bucket), encode(&prefix));
            if let Some(p) = &page {
                url.push_str(&format!("&pageToken={}", encode(p)));
            }
            let resp = match http::send(&self.request("GET", &url)?, None) {
                Ok(r) => r,
                Err(ureq::Error::Status(404, _)) => return Ok(names),
                Err(e) => return Err(self.err(e)),
            };
            let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).map_err(|e| self.err(e))?;
            for item in v["items"].as_array().into_iter().flatten() {
                if let Some(n) = item["name"].as_str().and_then(|n| n.strip_prefix(&prefix)) {
                    names.push(n.to_string());
                }
            }
            match v["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => page = Some(t.to_string()),
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
