//! Faults: the online store fails in the middle of a materialization, on a private
//! redis-server (never the shared one): its memory runs out part-way (deterministic),
//! or the process is killed with SIGKILL while amora writes and then restarted from
//! its append-only file, keeping what it had acknowledged.

use std::process::Command;

use amora_proto::{FeatureView, ObjectKind};
use prost::Message;

use crate::support::*;

struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
}

/// A port for a private server, free when checked.
fn private_port(salt: u32) -> u16 {
    port_in(23_000..30_000, salt, free)
}

/// The first of three ports for a private cluster: they and their bus ports
/// (port + 10000, so 20000..22000) free when checked.
fn private_cluster_base() -> u16 {
    port_in(10_000..11_998, 0, |b| (b..b + 3).all(|p| free(p) && free(p + 10_000)))
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        let port = private_port(0);
        PrivateRedis::start_on(port, tempfile::tempdir().unwrap(), &["--appendonly", "no"])
    }

    fn start_on(port: u16, dir: tempfile::TempDir, extra: &[&str]) -> Option<PrivateRedis> {
        let r = PrivateRedis { port, dir };
        if !r.launch(extra) {
            assert_ne!(std::env::var("TEST_INTEGRATION").as_deref(), Ok("1"), "redis-server is required");
            return None;
        }
        r.wait_ready();
        Some(r)
    }

    /// Starts redis-server on this port and folder (daemonized, pid file inside).
    fn launch(&self, extra: &[&str]) -> bool {
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--daemonize", "yes", "--save", ""])
            .args(["--enable-debug-command", "yes"])
            .args(extra)
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--pidfile")
            .arg(self.dir.path().join("redis.pid"))
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&self) {
        for _ in 0..500 {
            if self.cli(&["ping"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("private redis-server did not answer");
    }

    /// SIGKILL: no shutdown, no final save; then a new server on the same port
    /// and folder, which loads the append-only file.
    fn kill_and_restart(&self, extra: &[&str]) {
        let pidfile = self.dir.path().join("redis.pid");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        assert!(Command::new("kill").args(["-9", pid.trim()]).status().unwrap().success());
        while Command::new("kill").args(["-0", pid.trim()]).output().is_ok_and(|o| o.status.success()) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&pidfile);
        assert!(self.launch(extra), "redis-server did not restart");
        self.wait_ready();
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

/// The example project with generated data (`rows` rows over `sources` sources),
/// its models run and its feature store applied.
fn applied_with_data(dir: &std::path::Path, rows: u32, sources: u32) {
    let run: Run = Command::new(env!("CARGO_BIN_EXE_amora"))
        .args(["generate-health", "--rows", &rows.to_string(), "--sources", &sources.to_string(), "--output"])
        .arg(dir.join("data/health.csv"))
        .output()
        .unwrap()
        .into();
    run.ok();
    amora(dir, &["materialize"]).ok();
    amora(dir, &["feature-store", "apply"]).ok();
}

/// Materialization intervals recorded, over every feature view of the project.
fn intervals(dir: &std::path::Path) -> usize {
    let reg = registry(&dir.join("data/registry.db"));
    reg.objects(ObjectKind::FeatureView, "health")
        .map(|(_, f)| {
            FeatureView::decode(f.payload()).unwrap().meta.unwrap_or_default().materialization_intervals.len()
        })
        .sum()
}

#[test]
fn a_store_failure_mid_materialization_records_nothing_and_a_rerun_converges() {
    let Some(redis) = PrivateRedis::start() else { return };
    let (_tmp, dir) = example("health");
    // Two views on one entity, written together (one hash per entity for both).
    add_peak_view(&dir);
    // Many entities: 30,000 sources, so the write spans several batches.
    applied_with_data(&dir, 120_000, 30_000);
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
    assert_eq!(intervals(&dir), 2, "one interval per view");
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

/// Reads `DBSIZE` over one raw connection (fast enough to catch a write in progress).
fn dbsize(conn: &mut std::net::TcpStream) -> u64 {
    use std::io::{BufRead, Write};
    conn.write_all(b"DBSIZE\r\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&*conn).read_line(&mut line).unwrap();
    line.trim().trim_start_matches(':').parse().unwrap()
}

#[test]
fn redis_killed_mid_materialization_exits_cleanly_and_a_rerun_converges() {
    // Durable: every acknowledged write survives the SIGKILL, so the rerun starts
    // from the partial state, as it would against a production Redis.
    let aof = ["--appendonly", "yes", "--appendfsync", "always"];
    let port = private_port(7_919);
    let Some(redis) = PrivateRedis::start_on(port, tempfile::tempdir().unwrap(), &aof) else { return };
    let (_tmp, dir) = example("health");
    // 200,000 sources: dozens of write batches, so the kill lands mid-write.
    applied_with_data(&dir, 400_000, 200_000);
    let with_redis = |cmd: &mut Command| {
        cmd.env("AMORA_FEATURE_STORE_ONLINE_STORE_TYPE", "redis").env(
            "AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG",
            format!("{{\"connection_string\": \"127.0.0.1:{port}\", \"timeout_ms\": 2000}}"),
        );
    };
    let window = ["feature-store", "materialize", "2024-01-01", "2024-03-01"];
    let mut cmd = amora_cmd(&dir, &window);
    with_redis(&mut cmd);
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Wait for the first keys, freeze writes so the kill cannot come after the last
    // batch, then SIGKILL the server.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while dbsize(&mut conn) == 0 {
        assert!(std::time::Instant::now() < deadline, "materialization never wrote");
    }
    std::io::Write::write_all(&mut conn, b"CLIENT PAUSE 60000 WRITE\r\n").unwrap();
    let partial = redis.cli(&["dbsize"]).trim().parse::<u64>().unwrap();
    redis.kill_and_restart(&aof);
    let failed: Run = child.wait_with_output().unwrap().into();
    let failed = failed.fails();
    assert!(
        failed.stderr.contains("nothing recorded") && failed.stderr.contains(&format!("redis 127.0.0.1:{port}")),
        "{}",
        failed.stderr
    );
    assert_eq!(intervals(&dir), 0, "no interval is recorded after a failure");
    let kept: u64 = redis.cli(&["dbsize"]).trim().parse().unwrap();
    assert!(kept >= partial && kept > 0, "the append-only file keeps the partial write ({kept} keys, {partial} seen)");
    // The rerun converges to exactly what an uninterrupted run writes into an empty server.
    let mut cmd = amora_cmd(&dir, &window);
    with_redis(&mut cmd);
    let rerun: Run = cmd.output().unwrap().into();
    rerun.ok();
    assert_eq!(intervals(&dir), 1);
    let keys: u64 = redis.cli(&["dbsize"]).trim().parse().unwrap();
    assert!(keys > kept && keys > 100_000, "{keys} keys after the rerun, {kept} after the kill");
    let digest = redis.cli(&["debug", "digest"]);
    redis.cli(&["flushall"]);
    let mut cmd = amora_cmd(&dir, &window);
    with_redis(&mut cmd);
    let fresh: Run = cmd.output().unwrap().into();
    fresh.ok();
    assert_eq!(redis.cli(&["debug", "digest"]), digest, "rerun after the kill differs from an uninterrupted run");
}

/// Starts a private 3-node Redis Cluster (no replicas; `cluster-require-full-coverage
/// no`, so the live nodes keep serving their slots while one is down).
fn private_cluster(base: u16) -> Option<Vec<PrivateRedis>> {
    let mut nodes = Vec::new();
    for port in base..base + 3 {
        let e = cluster_node_args(port);
        let e: Vec<&str> = e.iter().map(String::as_str).collect();
        nodes.push(PrivateRedis::start_on(port, tempfile::tempdir().unwrap(), &e)?);
    }
    let addrs: Vec<String> = (base..base + 3).map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    for n in &nodes {
        wait_cluster_ok(n);
    }
    Some(nodes)
}

/// A cluster node's settings: quick failure detection, partial coverage served, durable.
fn cluster_node_args(port: u16) -> Vec<String> {
    [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &format!("nodes-{port}.conf"),
        "--cluster-node-timeout",
        "1000",
        "--cluster-require-full-coverage",
        "no",
        "--appendonly",
        "yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn wait_cluster_ok(n: &PrivateRedis) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !n.cli(&["cluster", "info"]).contains("cluster_state:ok") {
        assert!(std::time::Instant::now() < deadline, "cluster on {} never became ok", n.port);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_dead_cluster_node_fails_only_its_slots_clearly_and_reads_recover_when_it_returns() {
    let base = private_cluster_base();
    let Some(nodes) = private_cluster(base) else { return };
    let (_tmp, dir) = example("health");
    // 40 sources: their keys spread over the three nodes.
    applied_with_data(&dir, 4_000, 40);
    let connection = (base..base + 3).map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let cmd = |args: &[&str]| {
        let mut c = amora_cmd(&dir, args);
        c.env("AMORA_FEATURE_STORE_ONLINE_STORE_TYPE", "redis").env(
            "AMORA_FEATURE_STORE_ONLINE_STORE_CONFIG",
            format!(
                "{{\"connection_string\": \"{connection}\", \"redis_type\": \"redis_cluster\", \"timeout_ms\": 1000}}"
            ),
        );
        let r: Run = c.output().unwrap().into();
        r
    };
    cmd(&["feature-store", "materialize", "2024-01-01", "2025-01-01"]).ok();
    let names: Vec<String> = std::fs::read_to_string(dir.join("data/health.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1).map(String::from))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(names.len() >= 20, "{names:?}");
    let read = |name: &str| {
        cmd(&[
            "feature-store",
            "get-online-features",
            "--features",
            "step_count_by_source:value_sum",
            "--entity",
            &format!("source_name={name}"),
            "--json",
        ])
    };
    let before: Vec<String> = names.iter().map(|n| read(n).ok().stdout).collect();
    let victim = nodes.iter().max_by_key(|n| n.cli(&["dbsize"]).trim().parse::<u64>().unwrap_or(0)).unwrap();
    assert!(victim.cli(&["dbsize"]).trim().parse::<u64>().unwrap() > 0);

    // SIGKILL one master; the others mark it failed and keep serving their slots.
    let pid = std::fs::read_to_string(victim.dir.path().join("redis.pid")).unwrap();
    assert!(Command::new("kill").args(["-9", pid.trim()]).status().unwrap().success());
    let other = nodes.iter().find(|n| n.port != victim.port).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !other
        .cli(&["cluster", "nodes"])
        .lines()
        .any(|l| l.contains(&format!(":{}@", victim.port)) && l.contains("fail"))
    {
        assert!(std::time::Instant::now() < deadline, "the cluster never marked the dead node failed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let t0 = std::time::Instant::now();
    let during: Vec<Run> = names.iter().map(|n| read(n)).collect();
    let failed: Vec<&Run> = during.iter().filter(|r| r.code != 0).collect();
    assert!(!failed.is_empty(), "no read touched the dead node");
    assert!(failed.len() < names.len(), "the live nodes' slots must still be served");
    for f in &failed {
        assert!(f.stderr.contains("redis") && !f.stderr.contains("panicked"), "{}", f.stderr);
    }
    for (r, b) in during.iter().zip(&before) {
        if r.code == 0 {
            assert_eq!(&r.stdout, b, "a live node's value changed");
        }
    }
    assert!(t0.elapsed().as_secs() < 120, "failures must be quick, took {:?}", t0.elapsed());

    // The node returns (its append-only file and cluster config): every read works again, values intact.
    let _ = std::fs::remove_file(victim.dir.path().join("redis.pid"));
    let e = cluster_node_args(victim.port);
    assert!(victim.launch(&e.iter().map(String::as_str).collect::<Vec<_>>()));
    victim.wait_ready();
    for n in &nodes {
        wait_cluster_ok(n);
    }
    let after: Vec<String> = names.iter().map(|n| read(n).ok().stdout).collect();
    assert_eq!(after, before, "values after the node returned differ");
}
