//! Helpers: run the binary, scaffold projects, read registries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use amora_proto::RegistryFile;

/// A port in `range` for a server the test starts itself, where `usable` holds
/// (the port, and any it implies, [`free`] now). Each caller's range lies below the
/// kernel's ephemeral range (32768 on), so no outgoing connection can take the port
/// meanwhile, and apart from the other callers' ranges, so no other test picks it.
pub fn port_in(range: std::ops::Range<u16>, salt: u32, usable: impl Fn(u16) -> bool) -> u16 {
    let len = range.end - range.start;
    let start = (std::process::id().wrapping_mul(31).wrapping_add(salt) % u32::from(len)) as u16;
    (0..len)
        .map(|i| range.start + (start + i) % len)
        .find(|p| usable(*p))
        .unwrap_or_else(|| panic!("no usable port in {range:?}"))
}

/// Whether nothing listens on this port now.
pub fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "amora failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
    #[track_caller]
    pub fn fails(self) -> Run {
        assert_ne!(self.code, 0, "amora should have failed:\nstdout:\n{}", self.stdout);
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn amora_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amora"));
    c.arg("--project-dir").arg(dir).args(args).env("AMORA_USER", "tester");
    for (k, _) in std::env::vars() {
        if k.starts_with("AMORA_FEATURE_STORE_") {
            c.env_remove(k);
        }
    }
    c
}

pub fn amora(dir: &Path, args: &[&str]) -> Run {
    amora_cmd(dir, args).output().expect("run amora").into()
}

/// A fresh copy of the example project (named `name`) in a temporary folder.
pub fn example(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("proj");
    let run: Run = Command::new(env!("CARGO_BIN_EXE_amora"))
        .args(["init", dir.to_str().unwrap(), "--name", name])
        .output()
        .unwrap()
        .into();
    run.ok();
    (tmp, dir)
}

pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} does not contain {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

pub fn registry(path: &Path) -> RegistryFile {
    RegistryFile::parse(&std::fs::read(path).unwrap()).unwrap()
}

pub fn json(run: Run) -> serde_json::Value {
    serde_json::from_str(&run.ok().stdout).expect("JSON output")
}

/// Runs `sql` over the tables in `tables` (name -> location) with amora's own
/// warehouse, and returns the rows as strings.
pub fn query(tables: &[(&str, amora_offline::TableLocation)], sql: &str) -> Vec<Vec<String>> {
    use amora_offline::arrow::util::display::array_value_to_string;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let w = amora_offline::Warehouse::new(1);
        for (name, loc) in tables {
            w.register_table(name, loc).await.unwrap();
        }
        let batches = w.query(sql).await.unwrap();
        let mut rows = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                rows.push(b.columns().iter().map(|c| array_value_to_string(c, r).unwrap()).collect());
            }
        }
        rows
    })
}

/// `n` copies of the example project named `{prefix}{i}`, each with little data.
pub fn example_projects(root: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let dir = root.join(format!("p{i}"));
            let run: Run = Command::new(env!("CARGO_BIN_EXE_amora"))
                .args(["init", dir.to_str().unwrap(), "--name", &format!("{prefix}{i}"), "--rows", "10"])
                .output()
                .unwrap()
                .into();
            run.ok();
            dir
        })
        .collect()
}

/// Runs `feature-store apply --json` in every project at once, all into `registry`.
pub fn concurrent_applies(dirs: &[PathBuf], registry: &str, env: &[(&str, String)]) -> Vec<Run> {
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            amora_cmd(d, &["feature-store", "apply", "--json"])
                .env("AMORA_FEATURE_STORE_REGISTRY", registry)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap().into()).collect()
}

/// A Feast repo (feature_store.yaml only) on amora's registry in `dir`.
pub fn feast_repo_on(dir: &Path, repo: &Path, project: &str, online_store: &str) {
    std::fs::create_dir_all(repo).unwrap();
    std::fs::write(
        repo.join("feature_store.yaml"),
        format!(
            "project: {project}\nregistry: {}\nprovider: local\nonline_store:\n{online_store}entity_key_serialization_version: 3\n",
            dir.join("data/registry.db").display()
        ),
    )
    .unwrap();
}

/// Adds a second feature view on `source_name` to an example project:
/// `step_peak_by_source:value_max`, the daily peak of steps per source (ttl 1d).
pub fn add_peak_view(dir: &Path) {
    std::fs::write(
        dir.join("models/step_peak_by_source.sql"),
        "SELECT source_name, date_trunc('day', start_date) AS event_timestamp, max(value) AS value_max\n\
         FROM steps GROUP BY source_name, date_trunc('day', start_date)\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("models/step_peak_by_source.yml"),
        "description: Daily peak steps per data source\nmaterialization: table\ncolumns:\n\
         \x20 - {name: source_name, type: string}\n  - {name: event_timestamp, type: timestamp}\n\
         \x20 - {name: value_max, type: float64}\nfeature_view:\n  entities: [source_name]\n\
         \x20 features: [value_max]\n  event_timestamp: event_timestamp\n  ttl: 1d\n  online: true\n",
    )
    .unwrap();
}
