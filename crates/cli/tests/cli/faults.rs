//! Faults: the online store fails in the middle of a materialization. A private
//! redis-server (never the shared one) whose memory runs out part-way makes the
//! failure land mid-write, deterministically.

use std::process::Command;

use amora_proto::{FeatureView, ObjectKind};
use prost::Message;

use crate::support::*;

struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        let dir = tempfile::tempdir().unwrap();
        let port = 30_000 + (std::process::id() % 20_000) as u16;
        let ok = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--daemonize",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--pidfile")
            .arg(dir.path().join("redis.pid"))
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert_ne!(std::env::var("TEST_INTEGRATION").as_deref(), Ok("1"), "redis-server is required");
            return None;
        }
        let r = PrivateRedis { port, dir };
        for _ in 0..200 {
            if r.cli(&["ping"]).trim() == "PONG" {
                return Some(r);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("private redis-server did not start");
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("redis.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn intervals(dir: &std::path::Path) -> usize {
    let reg = registry(&dir.join("data/registry.db"));
    let (_, f) = reg.objects(ObjectKind::FeatureView, "health").next().unwrap();
    FeatureView::decode(f.payload()).unwrap().meta.unwrap_or_default().materialization_intervals.len()
}

#[test]
fn a_store_failure_mid_materialization_records_nothing_and_a_rerun_converges() {
    let Some(redis) = PrivateRedis::start() else { return };
    let (_tmp, dir) = example("health");
    // Many entities: 30,000 sources, so the write spans several batches.
    let run: Run = Command::new(env!("CARGO_BIN_EXE_amora"))
        .args(["generate-health", "--rows", "120000", "--sources", "30000", "--output"])
        .arg(dir.join("data/health.csv"))
        .output()
        .unwrap()
        .into();
    run.ok();
    amora(&dir, &["materialize"]).ok();
    amora(&dir, &["feature-store", "apply"]).ok();
    let with_redis = |args: &[&str]| -> Run {
        amora_cmd(&dir, args)
            .env("AMORA_FEATURE_STORE_ONLINE_STORE_TYPE", "redis")
            .env(
                "AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG",
                format!("{{\"connection_string\": \"127.0.0.1:{}\"}}", redis.port),
            )
            .output()
            .unwrap()
            .into()
    };
    // The server runs out of memory part-way through the write.
    redis.cli(&["config", "set", "maxmemory", "1500000"]);
    redis.cli(&["config", "set", "maxmemory-policy", "noeviction"]);
    let failed = with_redis(&["feature-store", "materialize", "2024-01-01", "2024-03-01"]).fails();
    assert!(
        failed.stderr.contains("nothing recorded") && failed.stderr.contains("redis 127.0.0.1"),
        "{}",
        failed.stderr
    );
    let partial: u64 = redis.cli(&["dbsize"]).trim().parse().unwrap();
    assert!(partial > 0, "the failure should come mid-write");
    assert_eq!(intervals(&dir), 0, "no interval is recorded after a failure");
    // The server recovers; the same command converges to the full state.
    redis.cli(&["config", "set", "maxmemory", "0"]);
    with_redis(&["feature-store", "materialize", "2024-01-01", "2024-03-01"]).ok();
    assert_eq!(intervals(&dir), 1);
    let after_rerun = redis.cli(&["dbsize"]);
    // An uninterrupted run into an empty server gives the same data: DEBUG DIGEST
    // hashes every key and value.
    let rerun = redis.cli(&["debug", "digest"]);
    redis.cli(&["flushall"]);
    with_redis(&["feature-store", "materialize", "2024-01-01", "2024-03-01"]).ok();
    assert_eq!(redis.cli(&["dbsize"]), after_rerun);
    assert_eq!(redis.cli(&["debug", "digest"]), rerun);
    let keys: u64 = after_rerun.trim().parse().unwrap();
    assert!(keys > 20_000 && keys > partial, "{keys} keys, {partial} before the failure");
}
