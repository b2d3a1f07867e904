//! Google Cloud credentials for the REST clients (BigQuery, GCS), in the order
//! Google's own libraries look for them:
//!
//! 1. `GOOGLE_OAUTH_ACCESS_TOKEN`: a ready token (e.g. `gcloud auth print-access-token`).
//! 2. A key file: the path given in the configuration, else `GOOGLE_APPLICATION_CREDENTIALS`,
//!    else gcloud's application-default file (`~/.config/gcloud/application_default_credentials.json`).
//!    A `service_account` key signs a JWT (RS256) and exchanges it for a token;
//!    an `authorized_user` file exchanges its refresh token.
//! 3. The metadata server (on Google Cloud).
//!
//! Tokens are cached until a minute before they expire.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const METADATA_TOKEN: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("credentials file {path}: {message}")]
    File { path: String, message: String },
    #[error("getting an access token from {from}: {message}")]
    Token { from: String, message: String },
}

/// Where tokens come from.
#[derive(Debug, Clone)]
enum Source {
    /// An emulator: no Authorization header at all.
    Anonymous,
    Fixed(String),
    ServiceAccount {
        email: String,
        key_der: Vec<u8>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
    },
    Metadata,
}

/// A token provider, cheap to share between threads.
#[derive(Debug)]
pub struct Credentials {
    source: Source,
    cached: Mutex<Option<(String, SystemTime)>>,
    agent: ureq::Agent,
}

impl Credentials {
    /// No credentials (emulators ignore them).
    pub fn anonymous() -> Credentials {
        Credentials::with(Source::Anonymous)
    }

    fn with(source: Source) -> Credentials {
        let agent =
            ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).timeout(Duration::from_secs(30)).build();
        Credentials { source, cached: Mutex::new(None), agent }
    }

    /// Finds credentials as described in the crate docs; `key_file` is the path from
    /// the configuration, if any. `env` is passed in so that this is testable.
    pub fn discover(key_file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, AuthError> {
        if let Some(t) = env("GOOGLE_OAUTH_ACCESS_TOKEN").filter(|t| !t.is_empty()) {
            return Ok(Credentials::with(Source::Fixed(t)));
        }
        let explicit = key_file
            .map(Path::to_path_buf)
            .or_else(|| env("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()).map(PathBuf::from));
        if let Some(path) = explicit {
            return Credentials::from_file(&path);
        }
        let adc = env("CLOUDSDK_CONFIG")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config/gcloud")))
            .map(|d| d.join("application_default_credentials.json"));
        match adc {
            Some(p) if p.is_file() => Credentials::from_file(&p),
            _ => Ok(Credentials::with(Source::Metadata)),
        }
    }

    /// A service-account key or an authorized-user file, as gcloud writes them.
    pub fn from_file(path: &Path) -> Result<Credentials, AuthError> {
        let err = |message: String| AuthError::File { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
        let field = |k: &str| -> Result<String, AuthError> {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(String::from)
                .ok_or_else(|| err(format!("has no `{k}`; download a new key from the Cloud console")))
        };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("service_account") => {
                let pem = field("private_key")?;
                let key_der = pem_to_der(&pem).map_err(err)?;
                // Fail now, not at the first request, on a key ring cannot use.
                ring::signature::RsaKeyPair::from_pkcs8(&key_der)
                    .map_err(|e| err(format!("private_key is not a usable RSA key: {e}")))?;
                Ok(Credentials::with(Source::ServiceAccount {
                    email: field("client_email")?,
                    key_der,
                    token_uri: v
                        .get("token_uri")
                        .and_then(|x| x.as_str())
                        .unwrap_or("https://oauth2.googleapis.com/token")
                        .to_string(),
                }))
            }
            Some("authorized_user") => Ok(Credentials::with(Source::AuthorizedUser {
                client_id: field("client_id")?,
                client_secret: field("client_secret")?,
                refresh_token: field("refresh_token")?,
            })),
            other => Err(err(format!(
                "type {other:?} is not supported; use a service-account key or `gcloud auth application-default login`"
            ))),
        }
    }

    /// What kind of credentials these are, for logs (never the secret).
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Anonymous => "none (emulator)".into(),
            Source::Fixed(_) => "GOOGLE_OAUTH_ACCESS_TOKEN".into(),
            Source::ServiceAccount { email, .. } => format!("service account {email}"),
            Source::AuthorizedUser { .. } => "application-default user credentials".into(),
            Source::Metadata => "the metadata server".into(),
        }
    }

    /// The `Authorization` header value, or `None` for an emulator.
    pub fn header(&self) -> Result<Option<String>, AuthError> {
        if matches!(self.source, Source::Anonymous) {
            return Ok(None);
        }
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, until)) = cached.as_ref() {
            if SystemTime::now() < *until {
                return Ok(Some(format!("Bearer {t}")));
            }
        }
        let (token, ttl) = self.fetch()?;
        let until = SystemTime::now() + Duration::from_secs(ttl.saturating_sub(60));
        *cached = Some((token.clone(), until));
        Ok(Some(format!("Bearer {token}")))
    }

    fn fetch(&self) -> Result<(String, u64), AuthError> {
        let reply = |from: &str, r: Result<ureq::Response, ureq::Error>| -> Result<(String, u64), AuthError> {
            let terr = |message: String| AuthError::Token { from: from.to_string(), message };
            let v: serde_json::Value = match r {
                Ok(resp) => resp.into_json().map_err(|e| terr(e.to_string()))?,
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(terr(format!("HTTP {code}: {}", resp.into_string().unwrap_or_default())))
                }
                Err(e) => return Err(terr(e.to_string())),
            };
            let token = v["access_token"].as_str().ok_or_else(|| terr(format!("no access_token in {v}")))?;
            Ok((token.to_string(), v["expires_in"].as_u64().unwrap_or(3600)))
        };
        match &self.source {
            Source::Anonymous => Ok((String::new(), u64::MAX / 4)),
            Source::Fixed(t) => Ok((t.clone(), 3000)),
            Source::ServiceAccount { email, key_der, token_uri } => {
                let jwt = signed_jwt(email, key_der, token_uri, now_secs())
                    .map_err(|message| AuthError::Token { from: token_uri.clone(), message })?;
                let r = self
                    .agent
                    .post(token_uri)
                    .send_form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &jwt)]);
                reply(token_uri, r)
            }
            Source::AuthorizedUser { client_id, client_secret, refresh_token } => {
                let uri = "https://oauth2.googleapis.com/token";
                let r = self.agent.post(uri).send_form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret),
                    ("refresh_token", refresh_token),
                ]);
                reply(uri, r)
            }
            Source::Metadata => {
                let r = self.agent.get(METADATA_TOKEN).set("Metadata-Flavor", "Google").call();
                reply("the metadata server (not on Google Cloud? set GOOGLE_APPLICATION_CREDENTIALS)", r)
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCS#8 DER inside a `-----BEGIN PRIVATE KEY-----` block.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String =
        pem.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("-----")).collect::<Vec<_>>().concat();
    if !pem.contains("BEGIN PRIVATE KEY") {
        return Err("private_key is not a PKCS#8 `BEGIN PRIVATE KEY` block".into());
    }
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| format!("private_key: {e}"))
}

/// The JWT a service account exchanges for a token (RFC 7523), signed RS256.
pub fn signed_jwt(email: &str, key_der: &[u8], audience: &str, now: u64) -> Result<String, String> {
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": email, "scope": SCOPE, "aud": audience, "iat": now, "exp": now + 3600,
    });
    let input = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
    let key = ring::signature::RsaKeyPair::from_pkcs8(key_der).map_err(|e| format!("bad RSA key: {e}"))?;
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
        .map_err(|e| format!("signing the JWT: {e}"))?;
    Ok(format!("{input}.{}", b64url(&sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_token_wins_and_missing_files_name_themselves() {
        let env = |k: &str| (k == "GOOGLE_OAUTH_ACCESS_TOKEN").then(|| "tok".to_string());
        let c = Credentials::discover(None, &env).unwrap();
        assert_eq!(c.header().unwrap().as_deref(), Some("Bearer tok"));
        let none = |_: &str| None;
        let e = Credentials::discover(Some(Path::new("/nope/key.json")), &none).unwrap_err().to_string();
        assert!(e.contains("/nope/key.json"), "{e}");
        assert!(Credentials::anonymous().header().unwrap().is_none());
    }

    #[test]
    fn unsupported_key_types_say_what_to_use() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        std::fs::write(&p, r#"{"type":"external_account"}"#).unwrap();
        let e = Credentials::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("service-account key"), "{e}");
        std::fs::write(&p, r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#).unwrap();
        let e = Credentials::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("not a usable RSA key"), "{e}");
    }
}

#[cfg(test)]
mod service_account_tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    /// A service-account key (made by openssl), a token endpoint on 127.0.0.1 that
    /// checks the JWT's RS256 signature and claims: the token comes back, and is cached.
    #[test]
    fn a_service_account_key_signs_a_jwt_that_the_token_endpoint_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("key.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&pem)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return eprintln!("skipping: openssl is not installed");
        }
        let pem = std::fs::read_to_string(&pem).unwrap();
        let der = pem_to_der(&pem).unwrap();
        let public = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap().public().as_ref().to_vec();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}/token", listener.local_addr().unwrap());
        let key = serde_json::json!({
            "type": "service_account", "client_email": "amora@p.iam.gserviceaccount.com",
            "private_key": pem, "token_uri": uri,
        });
        let file = dir.path().join("sa.json");
        std::fs::write(&file, key.to_string()).unwrap();
        let audience = uri.clone();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            let jwt = body.split('&').find_map(|kv| kv.strip_prefix("assertion=")).unwrap().to_string();
            let (signed, sig) = jwt.rsplit_once('.').unwrap();
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap();
            let verified =
                ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &public)
                    .verify(signed.as_bytes(), &sig)
                    .is_ok();
            let claims = signed.split('.').nth(1).unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap())
                    .unwrap();
            let good = verified
                && claims["iss"] == "amora@p.iam.gserviceaccount.com"
                && claims["aud"] == audience.as_str()
                && claims["scope"] == SCOPE;
            let (status, reply) = if good {
                ("200 OK", r#"{"access_token":"tok-123","expires_in":3600}"#)
            } else {
                ("401 Unauthorized", r#"{"error":"invalid_grant"}"#)
            };
            write!(s, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len()).unwrap();
        });
        let c = Credentials::discover(Some(&file), &|_| None).unwrap();
        assert!(c.describe().contains("amora@p.iam"));
        assert_eq!(c.header().unwrap().as_deref(), Some("Bearer tok-123"));
        server.join().unwrap();
        // Cached: the endpoint (now gone) is not asked again.
        assert_eq!(c.header().unwrap().as_deref(), Some("Bearer tok-123"));
    }
}
