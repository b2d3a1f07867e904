//! `amora.yaml`: the project settings, with `${VAR}` expansion and Amora's
//! `AMORA_FEATURE_STORE_*` environment overrides.

use std::path::{Path, PathBuf};

use amora_model::{Diagnostic, Diagnostics};
use serde::Deserialize;

/// The parsed `amora.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub project: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_models_path")]
    pub models_path: PathBuf,
    #[serde(default = "default_sources_path")]
    pub sources_path: PathBuf,
    #[serde(default = "default_feature_store_path")]
    pub feature_store_path: PathBuf,
    #[serde(default = "default_target_path")]
    pub target_path: PathBuf,
    #[serde(default)]
    pub feature_store: FeatureStoreConfig,
}

fn default_models_path() -> PathBuf {
    "models".into()
}
fn default_sources_path() -> PathBuf {
    "sources".into()
}
fn default_feature_store_path() -> PathBuf {
    "feature_store".into()
}
fn default_target_path() -> PathBuf {
    "target".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureStoreConfig {
    #[serde(default = "default_registry")]
    pub registry: String,
    #[serde(default)]
    pub online_store: OnlineStoreConfig,
    #[serde(default)]
    pub offline_store: OfflineStoreConfig,
    #[serde(default = "default_eksv")]
    pub entity_key_serialization_version: u32,
}

impl Default for FeatureStoreConfig {
    fn default() -> Self {
        FeatureStoreConfig {
            registry: default_registry(),
            online_store: OnlineStoreConfig::default(),
            offline_store: OfflineStoreConfig::default(),
            entity_key_serialization_version: default_eksv(),
        }
    }
}

fn default_registry() -> String {
    "data/registry.db".into()
}
fn default_eksv() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisType {
    Redis,
    RedisCluster,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OnlineStoreConfig {
    Embedded {
        #[serde(default = "default_online_path")]
        path: PathBuf,
    },
    Redis {
        #[serde(default = "default_redis")]
        connection_string: String,
        #[serde(default = "default_redis_type")]
        redis_type: RedisType,
        #[serde(default)]
        key_ttl_seconds: Option<u64>,
        /// Connect and per-command timeout; an unreachable Redis fails within it.
        #[serde(default = "default_redis_timeout_ms")]
        timeout_ms: u64,
    },
}

impl Default for OnlineStoreConfig {
    fn default() -> Self {
        OnlineStoreConfig::Embedded { path: default_online_path() }
    }
}

fn default_online_path() -> PathBuf {
    "data/online.redb".into()
}
fn default_redis() -> String {
    "127.0.0.1:6379".into()
}
fn default_redis_type() -> RedisType {
    RedisType::Redis
}
fn default_redis_timeout_ms() -> u64 {
    5000
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OfflineStoreConfig {
    #[default]
    Embedded,
    Bigquery {
        project_id: String,
        #[serde(default = "default_dataset")]
        dataset: String,
        #[serde(default)]
        location: Option<String>,
        /// REST endpoint override (an emulator); also `BIGQUERY_EMULATOR_HOST`.
        #[serde(default)]
        endpoint: Option<String>,
        /// Storage Read API endpoint override; also `BIGQUERY_STORAGE_EMULATOR_HOST`.
        #[serde(default)]
        storage_endpoint: Option<String>,
        /// A service-account key file (else `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
        /// application-default credentials, or the metadata server).
        #[serde(default)]
        credentials: Option<PathBuf>,
        /// `storage` (default: the Storage Read API, REST paging as a fallback) or `rest`.
        #[serde(default)]
        read_api: Option<String>,
    },
}

fn default_dataset() -> String {
    "amora".into()
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    Local(PathBuf),
    Gcs { bucket: String, path: String },
    S3 { bucket: String, key: String },
}

impl Config {
    /// Reads `root/amora.yaml`, expanding `${VAR}` and applying the
    /// `AMORA_FEATURE_STORE_*` overrides from `env`.
    pub fn load(root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, crate::ProjectError> {
        let path = root.join("amora.yaml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(crate::ProjectError::NotAProject(root.to_path_buf()))
            }
            Err(source) => return Err(crate::ProjectError::Io { path, source }),
        };
        Ok(Config::parse(&text, env)?)
    }

    /// Parses the text of `amora.yaml`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Diagnostics> {
        let file = Path::new("amora.yaml");
        let one = |d: Diagnostic| Diagnostics(vec![d.in_file(file)]);
        let expanded = expand_vars(text, env).map_err(|m| one(Diagnostic::new("amora.yaml", m)))?;
        let mut doc: serde_yaml::Value =
            serde_yaml::from_str(&expanded).map_err(|e| one(yaml_diag("amora.yaml", &e)))?;
        apply_env_overrides(&mut doc, env).map_err(|m| one(Diagnostic::new("environment", m)))?;
        let config: Config = serde_yaml::from_value(doc).map_err(|e| {
            one(Diagnostic::new("amora.yaml", e.to_string()).fix(
                "see the README for the keys of amora.yaml (project, models_path, feature_store: registry, online_store, offline_store)",
            ))
        })?;
        if ![2, 3].contains(&config.feature_store.entity_key_serialization_version) {
            return Err(one(Diagnostic::new(
                "feature_store.entity_key_serialization_version",
                format!("version {} is not supported", config.feature_store.entity_key_serialization_version),
            )
            .fix("use 3 (Feast's default) or 2 (what Amora used)")));
        }
        Ok(config)
    }

    pub fn registry_location(&self, root: &Path) -> RegistryLocation {
        let r = self.feature_store.registry.trim();
        let split = |rest: &str| {
            let (bucket, path) = rest.split_once('/').unwrap_or((rest, "registry.db"));
            (bucket.to_string(), path.to_string())
        };
        if let Some(rest) = r.strip_prefix("gs://") {
            let (bucket, path) = split(rest);
            RegistryLocation::Gcs { bucket, path }
        } else if let Some(rest) = r.strip_prefix("s3://") {
            let (bucket, key) = split(rest);
            RegistryLocation::S3 { bucket, key }
        } else {
            let p = Path::new(r.strip_prefix("file://").unwrap_or(r));
            RegistryLocation::Local(if p.is_absolute() { p.to_path_buf() } else { root.join(p) })
        }
    }
}

/// A serde_yaml error as a diagnostic with its line and column.
pub(crate) fn yaml_diag(object: &str, e: &serde_yaml::Error) -> Diagnostic {
    let msg = e.to_string();
    let mut d = Diagnostic::new(object, msg).fix("fix the YAML syntax at that position");
    if let Some(loc) = e.location() {
        d = d.at(loc.line(), loc.column());
    }
    d
}

/// Expands `${VAR}` and `${VAR:-default}`. An unset variable without a default is an error.
fn expand_vars(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unterminated `${` in amora.yaml".to_string())?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match env(name).or_else(|| default.map(String::from)) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable `{name}` is not set (used as `${{{expr}}}`); set it or write `${{{name}:-default}}`")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Amora's overrides: `AMORA_FEATURE_STORE_REGISTRY`, `..._ONLINE_STORE_TYPE`,
/// `..._ONLINE_STORE_CONFIG` (a JSON object merged into the store's settings), and
/// the same two for the offline store.
fn apply_env_overrides(doc: &mut serde_yaml::Value, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    use serde_yaml::Value;
    let root = doc.as_mapping_mut().ok_or("amora.yaml must be a mapping")?;
    let fs = root.entry(Value::from("feature_store")).or_insert_with(|| Value::Mapping(Default::default()));
    if fs.is_null() {
        *fs = Value::Mapping(Default::default());
    }
    let fs = fs.as_mapping_mut().ok_or("`feature_store` must be a mapping")?;
    if let Some(r) = env("AMORA_FEATURE_STORE_REGISTRY") {
        fs.insert("registry".into(), r.into());
    }
    for (store, prefix) in
        [("online_store", "AMORA_FEATURE_STORE_ONLINE_STORE"), ("offline_store", "AMORA_FEATURE_STORE_OFFLINE_STORE")]
    {
        let ty = env(&format!("{prefix}_TYPE"));
        let cfg = env(&format!("{prefix}_CONFIG"));
        if ty.is_none() && cfg.is_none() {
            continue;
        }
        let entry = fs.entry(store.into()).or_insert_with(|| Value::Mapping(Default::default()));
        if !entry.is_mapping() {
            *entry = Value::Mapping(Default::default());
        }
        let m = entry.as_mapping_mut().expect("mapping");
        if let Some(t) = ty {
            if m.get("type").and_then(Value::as_str) != Some(t.as_str()) {
                m.clear(); // another store type: its settings do not carry over
            }
            m.insert("type".into(), t.into());
        }
        if let Some(c) = cfg {
            let json: serde_json::Value =
                serde_json::from_str(&c).map_err(|e| format!("{prefix}_CONFIG is not valid JSON: {e}"))?;
            let serde_json::Value::Object(obj) = json else {
                return Err(format!("{prefix}_CONFIG must be a JSON object"));
            };
            for (k, v) in obj {
                let v: Value = serde_yaml::to_value(v).map_err(|e| e.to_string())?;
                m.insert(k.into(), v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_embedded() {
        let c = Config::parse("project: demo\n", &env_of(&[])).unwrap();
        assert_eq!(c.feature_store.online_store, OnlineStoreConfig::Embedded { path: "data/online.redb".into() });
        assert_eq!(c.feature_store.offline_store, OfflineStoreConfig::Embedded);
        assert_eq!(c.feature_store.entity_key_serialization_version, 3);
        assert_eq!(c.registry_location(Path::new("/p")), RegistryLocation::Local("/p/data/registry.db".into()));
    }

    #[test]
    fn expands_variables_and_overrides() {
        let text = "project: demo\nfeature_store:\n  registry: gs://${BUCKET}/r.db\n  online_store: {type: embedded}\n";
        let env = env_of(&[
            ("BUCKET", "b1"),
            ("AMORA_FEATURE_STORE_ONLINE_STORE_TYPE", "redis"),
            (
                "AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG",
                r#"{"connection_string": "127.0.0.1:7000", "key_ttl_seconds": 60}"#,
            ),
        ]);
        let c = Config::parse(text, &env).unwrap();
        assert_eq!(
            c.registry_location(Path::new("/p")),
            RegistryLocation::Gcs { bucket: "b1".into(), path: "r.db".into() }
        );
        assert_eq!(
            c.feature_store.online_store,
            OnlineStoreConfig::Redis {
                connection_string: "127.0.0.1:7000".into(),
                redis_type: RedisType::Redis,
                key_ttl_seconds: Some(60),
                timeout_ms: 5000,
            }
        );
        let env = env_of(&[("AMORA_FEATURE_STORE_REGISTRY", "s3://bk/x/y.db")]);
        let c = Config::parse(text.replace("${BUCKET}", "b").as_str(), &env).unwrap();
        assert_eq!(
            c.registry_location(Path::new("/p")),
            RegistryLocation::S3 { bucket: "bk".into(), key: "x/y.db".into() }
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Config::parse("project: demo\nfeature_store: {registry: '${NOPE}'}\n", &env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("`NOPE` is not set"), "{e}");
        let e = Config::parse("project: demo\n  bad: [\n", &env_of(&[])).unwrap_err();
        assert!(e.0[0].position.is_some(), "{e}");
        let e = Config::parse("project: demo\nfeature_store: {online_store: {type: redis, hots: x}}\n", &env_of(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("hots"), "{e}");
        let e = Config::parse("project: demo\nfeature_store: {entity_key_serialization_version: 1}\n", &env_of(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("use 3"), "{e}");
    }
}
