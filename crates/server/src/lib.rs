//! The feature server: Feast's HTTP API (a drop-in for `feast serve` and for
//! Feast's `remote` online store), plus amora's catalog, metrics and health.
//!
//! Requests never wait on the registry: a background thread re-reads it every
//! `registry_ttl` and swaps the parsed snapshot in atomically; a broken registry
//! keeps the last good one (reported by `/health`, `/metrics` and the log).
//! Online reads run on the request's HTTP worker thread (microseconds embedded,
//! one pipelined round trip for Redis); materialization runs off those threads.

mod api;
mod grpc;
pub mod metrics;
mod openapi;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use amora_core::online::OnlineRequest;
use amora_online::OnlineStore;
use amora_proto::RegistryFile;
use amora_registry::store::RegistryStore;

/// What `amora feature-store serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Where Feast's gRPC `ServingService` listens, if anywhere.
    pub grpc_addr: Option<SocketAddr>,
    pub registry_ttl: Duration,
    /// Request bodies larger than this are refused (413).
    pub max_body_bytes: usize,
    /// Entity rows per request above this are refused (413).
    pub max_entities: usize,
    /// Bearer tokens; empty means no authentication.
    pub tokens: HashSet<String>,
    pub access_log: bool,
    /// HTTP worker threads, each with a runtime of its own (thread per core).
    pub workers: usize,
}

/// Everything a request needs, shared by all connections.
pub struct Service {
    pub project: String,
    pub root: PathBuf,
    pub entity_key_version: u32,
    pub store: Arc<dyn OnlineStore>,
    /// Where `/materialize` reads from.
    pub offline: Arc<dyn amora_offline::OfflineStore>,
    pub registry: Arc<dyn RegistryStore>,
    pub config: ServerConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    registry_status: Mutex<RegistryStatus>,
    materializing: Mutex<HashSet<String>>,
    pub metrics: metrics::Metrics,
    /// The multi-threaded runtime `serve` runs on: heavy work (materialization)
    /// goes there, never onto an HTTP worker's own runtime.
    background: std::sync::OnceLock<tokio::runtime::Handle>,
}

/// One parsed registry and the online requests resolved against it.
pub struct Snapshot {
    pub file: RegistryFile,
    pub version_id: String,
    pub loaded: Instant,
    fingerprint: u64,
    resolved: Mutex<HashMap<String, Arc<OnlineRequest>>>,
}

#[derive(Default)]
struct RegistryStatus {
    /// The last refresh's error, while the registry stays broken.
    error: Option<String>,
    refresh_errors: u64,
}

fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn load(registry: &dyn RegistryStore) -> Result<(RegistryFile, u64), String> {
    let (stored, file) = amora_registry::ops::read(registry).map_err(|e| e.to_string())?;
    let Some(stored) = stored else {
        return Err(format!("no registry at {}; run `amora feature-store apply` first", registry.location()));
    };
    Ok((file, fingerprint(&stored.bytes)))
}

impl Snapshot {
    fn new(file: RegistryFile, fingerprint: u64) -> Snapshot {
        let version_id = file.version_id();
        Snapshot { file, version_id, loaded: Instant::now(), fingerprint, resolved: Mutex::new(HashMap::new()) }
    }
}

impl Service {
    /// Loads the registry once (a server without a registry does not start).
    pub fn new(
        project: String,
        root: PathBuf,
        entity_key_version: u32,
        store: Arc<dyn OnlineStore>,
        offline: Arc<dyn amora_offline::OfflineStore>,
        registry: Arc<dyn RegistryStore>,
        config: ServerConfig,
    ) -> Result<Service, String> {
        let (file, fp) = load(registry.as_ref())?;
        Ok(Service {
            project,
            root,
            entity_key_version,
            store,
            offline,
            registry,
            config,
            snapshot: RwLock::new(Arc::new(Snapshot::new(file, fp))),
            registry_status: Mutex::new(RegistryStatus::default()),
            materializing: Mutex::new(HashSet::new()),
            metrics: metrics::Metrics::default(),
            background: std::sync::OnceLock::new(),
        })
    }

    /// Where heavy work runs: `serve`'s runtime (the current one before `serve`).
    pub(crate) fn background(&self) -> tokio::runtime::Handle {
        self.background.get().cloned().unwrap_or_else(tokio::runtime::Handle::current)
    }

    /// The registry being served (a cheap clone of an `Arc`).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Re-reads the registry; an unchanged one keeps its resolved requests, a
    /// broken one keeps the last good snapshot and is reported.
    pub fn refresh(&self) {
        match load(self.registry.as_ref()) {
            Ok((file, fp)) => {
                if let Ok(mut s) = self.registry_status.lock() {
                    if s.error.take().is_some() {
                        tracing::info!("registry {} readable again", self.registry.location());
                    }
                }
                if fp != self.snapshot().fingerprint {
                    let next = Arc::new(Snapshot::new(file, fp));
                    tracing::info!("registry refreshed: version {}", next.version_id);
                    if let Ok(mut s) = self.snapshot.write() {
                        *s = next;
                    }
                }
            }
            Err(e) => {
                tracing::warn!("registry refresh failed, serving the last good version: {e}");
                if let Ok(mut s) = self.registry_status.lock() {
                    s.error = Some(e);
                    s.refresh_errors += 1;
                }
            }
        }
    }

    /// Whether the request may pass: no tokens configured, or `authorization:
    /// Bearer <token>` with one of them (HTTP and gRPC alike).
    fn authorized(&self, headers: &hyper::HeaderMap) -> Option<bool> {
        if self.config.tokens.is_empty() {
            return Some(true);
        }
        let token = headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        Some(self.config.tokens.contains(token))
    }

    fn registry_error(&self) -> (Option<String>, u64) {
        self.registry_status.lock().map(|s| (s.error.clone(), s.refresh_errors)).unwrap_or((None, 0))
    }
}

/// A connection handed to an HTTP worker, with its graceful-shutdown watcher.
type Accepted = (std::net::TcpStream, hyper_util::server::graceful::Watcher);

/// Serves until SIGINT or SIGTERM, then finishes in-flight requests (up to 30 s).
///
/// Runs on a multi-threaded runtime that accepts connections, serves gRPC and
/// does heavy work; HTTP connections are handed round-robin to
/// `config.workers` threads that each run a single-threaded runtime, so a
/// request's wake-ups (socket, Redis reply) stay on one thread.
pub async fn serve(service: Arc<Service>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(service.config.addr).await?;
    tracing::info!("serving project {} on http://{}", service.project, listener.local_addr()?);
    let _ = service.background.set(tokio::runtime::Handle::current());
    // The registry refresher: a plain thread, since registry stores block.
    let refresher = Arc::downgrade(&service);
    let ttl = service.config.registry_ttl;
    std::thread::spawn(move || loop {
        std::thread::sleep(ttl);
        match refresher.upgrade() {
            Some(s) => s.refresh(),
            None => return,
        }
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let grpc = match service.config.grpc_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!("serving feast.serving.ServingService (gRPC) on {}", l.local_addr()?);
            let mut rx = stopped.clone();
            Some(tokio::spawn(grpc::serve(service.clone(), l, async move {
                let _ = rx.changed().await;
            })))
        }
        None => None,
    };
    let (finished, finish) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    let mut handoff = Vec::new();
    for i in 0..service.config.workers.max(1) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let (service, finish) = (service.clone(), finish.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        workers.push(
            std::thread::Builder::new()
                .name(format!("amora-http-{i}"))
                .spawn(move || rt.block_on(http_worker(service, rx, finish)))?,
        );
        handoff.push(tx);
    }
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut next = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted.and_then(|(s, _)| s.into_std()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                next = (next + 1) % handoff.len();
                if handoff[next].send((stream, graceful.watcher())).is_err() {
                    tracing::warn!("HTTP worker {next} is gone; dropping a connection");
                }
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    drop(listener);
    drop(handoff);
    let _ = stop.send(true);
    if let Some(g) = grpc {
        let _ = g.await;
    }
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(Duration::from_secs(30)) => tracing::warn!("gave up waiting for connections after 30 s"),
    }
    let _ = finished.send(true);
    for w in workers {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    Ok(())
}

/// One HTTP worker: serves the connections it is handed until the acceptor is
/// done, then keeps running them until `finish` says all have closed.
async fn http_worker(
    service: Arc<Service>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    mut finish: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::TokioIo;
    while let Some((stream, watcher)) = rx.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot serve a connection: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| api::handle(service.clone(), req)),
        );
        tokio::spawn(watcher.watch(conn));
    }
    let _ = finish.wait_for(|done| *done).await;
}

async fn shutdown_signal() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Seconds since the epoch, for request timestamps.
fn now_micros() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
