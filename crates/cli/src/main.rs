//! `amora`: the one binary. Glue that parses arguments, loads the project, picks
//! the backends named in `amora.yaml`, and prints results.

mod catalog;
mod generate;
mod init;
mod online_cmd;
mod pipeline_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use amora_project::{Config, Project, ProjectError, RegistryLocation};
use amora_proto::convert::{feast_objects, FeastObjects, TableRef};
use amora_registry::history;
use amora_registry::lineage::lineage;
use amora_registry::ops::{self, ApplyOutcome};
use amora_registry::store::{LocalStore, RegistryStore};
use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "amora",
    version,
    about = "amora: a feature store. SQL models -> feature views -> training data and online serving."
)]
struct Cli {
    /// The project folder (the one holding amora.yaml).
    #[arg(long, global = true, default_value = ".")]
    project_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scaffold the health-data example project in DIR.
    Init {
        dir: PathBuf,
        /// Rows of generated health data.
        #[arg(long, default_value_t = init::SEED_ROWS)]
        rows: u64,
        #[arg(long, default_value_t = init::SEED)]
        seed: u64,
        /// Project name (default: health).
        #[arg(long)]
        name: Option<String>,
    },
    /// Check the project's definitions and report every problem.
    Validate,
    /// Write deterministic synthetic health data (CSV) for benchmarks.
    GenerateHealth {
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = init::SEED)]
        seed: u64,
        #[arg(long, default_value_t = init::SEED_DAYS)]
        days: u64,
        #[arg(long, default_value_t = init::SEED_SOURCES)]
        sources: usize,
        #[arg(long)]
        output: PathBuf,
    },
    /// Resolve dependencies; write compiled SQL and the manifest to target/.
    Compile,
    /// Run the models, in dependency order, into warehouse tables.
    Materialize {
        /// Only these models (repeatable).
        #[arg(long = "model")]
        models: Vec<String>,
        /// With --model: also run what the models depend on.
        #[arg(long)]
        depends: bool,
        /// Re-run even unchanged models.
        #[arg(long)]
        force: bool,
        /// Models run at once within a generation (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// A model's table, from the offline store: printed, or written to a .csv or
    /// .parquet file, sorted by every column (so two stores' tables compare as files).
    Show {
        model: String,
        /// Write every row here (.csv or .parquet) instead of printing the first rows.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Rows printed without --output.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Run the data tests declared in the models' YAML.
    Test {
        #[arg(long = "model")]
        models: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The models: dependencies, materialization, rows, bytes, last run, status.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// The feature store: registry, definitions and (later) serving.
    #[command(subcommand, name = "feature-store")]
    FeatureStore(FsCommand),
    /// Print the lineage graph: sources -> models -> feature views -> feature services.
    Lineage {
        #[arg(long, value_enum, default_value_t = LineageFormat::Text)]
        format: LineageFormat,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FsCommand {
    /// Show what apply would change.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Write the project's definitions to the registry.
    Apply {
        #[arg(long)]
        json: bool,
    },
    /// List registry objects of the project.
    List {
        #[arg(value_enum)]
        kind: catalog::Kind,
        #[arg(long)]
        json: bool,
    },
    /// Show one object (feature view, entity, feature service or data source).
    Describe { name: String },
    /// The registry's versions: when, who, what changed.
    History {
        #[arg(long)]
        json: bool,
    },
    /// What changed in the project between two registry versions.
    Diff { from: u64, to: u64 },
    /// Re-apply the project as it was in an earlier version (as a new version).
    Rollback { version: u64 },
    /// The project's registry objects as JSON.
    RegistryDump,
    /// Load the latest value per entity with START <= event_ts <= END into the online store.
    Materialize {
        start: String,
        end: String,
        /// Only these views (repeatable).
        #[arg(long = "view", short = 'v')]
        views: Vec<String>,
        #[arg(long)]
        quiet: bool,
    },
    /// Materialize from each view's last recorded end (or now - ttl) to END (default: now).
    MaterializeIncremental {
        end: Option<String>,
        #[arg(long = "view", short = 'v')]
        views: Vec<String>,
        #[arg(long)]
        quiet: bool,
    },
    /// Remove the project's values from the online store (every view, or --view ones).
    Teardown {
        #[arg(long = "view", short = 'v')]
        views: Vec<String>,
    },
    /// Measure online read latency through the library (for benchmarks): read
    /// `--batch` entities (ids from a Parquet file's first column) per call.
    #[command(hide = true)]
    ReadLatency {
        #[arg(long, value_delimiter = ',', required = true)]
        features: Vec<String>,
        #[arg(long)]
        join_key: String,
        #[arg(long)]
        ids: PathBuf,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
    /// Read the latest feature values of entities from the online store.
    /// Serve Feast's feature-server HTTP API (a drop-in for `feast serve` and for
    /// Feast's `remote` online store), with catalog, health and metrics endpoints.
    Serve {
        /// Address to bind; 0.0.0.0 in a container.
        #[arg(long, short = 'H', default_value = "127.0.0.1")]
        host: String,
        #[arg(long, short = 'p', default_value_t = 6566)]
        port: u16,
        /// Also serve Feast's gRPC ServingService on this port.
        #[arg(long)]
        grpc_port: Option<u16>,
        /// How often the registry is re-read in the background (e.g. 5s, 1m).
        #[arg(long, default_value = "5s")]
        registry_ttl: String,
        /// HTTP worker threads, each running its own connections (default: one
        /// per CPU; reads are async, so more threads only add context switches).
        #[arg(long, short = 'w')]
        workers: Option<usize>,
        /// Largest request body accepted, in bytes.
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Most entity rows accepted in one request.
        #[arg(long, default_value_t = 10_000)]
        max_entities: usize,
        /// A file of bearer tokens, one per line; with it (or AMORA_SERVER_TOKENS,
        /// comma-separated) every endpoint but /health needs `Authorization: Bearer`.
        #[arg(long)]
        auth_tokens_file: Option<PathBuf>,
        /// Log every request.
        #[arg(long)]
        access_log: bool,
    },
    GetOnlineFeatures {
        /// Comma-separated `view:feature` references.
        #[arg(long, value_delimiter = ',', required = true)]
        features: Vec<String>,
        /// `join_key=value` (repeat for more entities; comma-separate keys of one entity).
        #[arg(long = "entity", required = true)]
        entities: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Point-in-time correct training data for the entity rows in a file.
    GetHistoricalFeatures {
        /// Entity rows (.parquet or .csv): join keys, event_timestamp, any labels.
        #[arg(long)]
        entities: PathBuf,
        /// Comma-separated `view:feature` references.
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "feature_service",
            required_unless_present = "feature_service"
        )]
        features: Vec<String>,
        #[arg(long)]
        feature_service: Option<String>,
        /// Name features `view__feature`.
        #[arg(long)]
        full_feature_names: bool,
        /// Where to write the training set (.parquet or .csv).
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LineageFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// glibc gives a thread that allocates an arena of its own, up to eight per core,
/// and keeps what one arena frees for that arena. Across the runtime's, the
/// readers' and the encoders' threads, that left a fifth of a 1M-row training
/// set's peak memory idle (290 -> 233 MB) and cost time. One
/// arena per core; `MALLOC_ARENA_MAX` in the environment still decides.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: mallopt only sets a parameter of the allocator (M_ARENA_MAX is read
    // when a thread first needs an arena); it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cores).unwrap_or(i32::MAX));
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    limit_malloc_arenas();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ProjectError>() {
                Some(p) => eprint!("{p}"),
                None => eprintln!("error: {e:#}"),
            }
            if !format!("{e}").ends_with('\n') && e.downcast_ref::<ProjectError>().is_some() {
                eprintln!();
            }
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.project_dir.as_path();
    match cli.command {
        Command::Init { dir: target, rows, seed, name } => {
            init::init(&target, rows, seed, name.as_deref())?;
            println!("Created the example project in {} ({rows} rows of health data).", target.display());
            println!("Next: cd {} && amora feature-store plan && amora feature-store apply", target.display());
            Ok(())
        }
        Command::Validate => {
            let p = load(dir)?;
            println!(
                "{}: {} sources, {} models, {} entities, {} feature views, {} feature services: OK",
                p.defs.name,
                p.defs.sources.len(),
                p.defs.models.len(),
                p.defs.entities.len(),
                p.defs.feature_views().count(),
                p.defs.all_feature_services().len()
            );
            Ok(())
        }
        Command::GenerateHealth { rows, seed, days, sources, output } => {
            let parquet = output.extension().is_some_and(|e| e == "parquet");
            let csv = if parquet { output.with_extension("tmp.csv") } else { output.clone() };
            let f = std::fs::File::create(&csv).with_context(|| format!("writing {}", csv.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            generate::write_health_csv(&mut w, rows, seed, days, sources)?;
            std::io::Write::flush(&mut w)?;
            drop(w);
            if parquet {
                let result = pipeline_cmd::runtime()?.block_on(generate::csv_to_parquet(&csv, &output));
                let _ = std::fs::remove_file(&csv);
                result?;
            }
            Ok(())
        }
        Command::Lineage { format } => {
            let p = load(dir)?;
            let l = lineage(&p.defs);
            print!(
                "{}",
                match format {
                    LineageFormat::Text => l.to_text(),
                    LineageFormat::Json => l.to_json() + "\n",
                    LineageFormat::Dot => l.to_dot(),
                    LineageFormat::Mermaid => l.to_mermaid(),
                }
            );
            Ok(())
        }
        Command::FeatureStore(cmd) => feature_store(dir, cmd),
        Command::Compile => pipeline_cmd::compile_cmd(&load(dir)?),
        Command::Materialize { models, depends, force, threads, json } => {
            let opts = amora_pipeline::RunOptions { select: models, depends, force, threads };
            pipeline_cmd::materialize_cmd(&load(dir)?, opts, json)
        }
        Command::Test { models, json } => pipeline_cmd::test_cmd(&load(dir)?, &models, json),
        Command::Show { model, output, limit } => pipeline_cmd::show_cmd(&load(dir)?, &model, output.as_deref(), limit),
        Command::Models(ModelsCommand::List { json }) => pipeline_cmd::models_list(&load(dir)?, json),
    }
}

fn load(dir: &Path) -> anyhow::Result<Project> {
    Ok(amora_project::load_project(dir, &env)?)
}

/// The one place that picks the registry store from the configuration.
fn open_store(root: &Path, config: &Config) -> anyhow::Result<Box<dyn RegistryStore>> {
    match config.registry_location(root) {
        RegistryLocation::Local(path) => Ok(Box::new(LocalStore::new(path))),
        RegistryLocation::Gcs { bucket, path } => Ok(Box::new(amora_registry::gcs::GcsStore::new(&bucket, &path))),
        RegistryLocation::S3 { bucket, key } => Ok(Box::new(amora_registry::s3::S3Store::new(&bucket, &key))),
    }
}

/// Where the embedded offline store keeps model tables: `<target>/tables`.
fn tables_dir(root: &Path, config: &Config) -> PathBuf {
    root.join(&config.target_path).join("tables")
}

/// The one place that picks the offline store from the configuration.
pub fn open_offline(root: &Path, config: &Config) -> anyhow::Result<Box<dyn amora_offline::OfflineStore>> {
    match &config.feature_store.offline_store {
        amora_project::OfflineStoreConfig::Embedded => {
            Ok(Box::new(amora_offline::EmbeddedStore::new(tables_dir(root, config))))
        }
        amora_project::OfflineStoreConfig::Bigquery {
            project_id,
            dataset,
            location,
            endpoint,
            storage_endpoint,
            credentials,
            read_api,
        } => {
            let read_api = match read_api.as_deref() {
                None | Some("storage") => amora_bigquery::ReadApi::Storage,
                Some("rest") => amora_bigquery::ReadApi::Rest,
                Some(other) => anyhow::bail!(
                    "amora.yaml: feature_store.offline_store.read_api is `{other}`; use `storage` (default) or `rest`"
                ),
            };
            let bq = amora_bigquery::BigQueryConfig {
                project_id: project_id.clone(),
                dataset: dataset.clone(),
                location: location.clone(),
                endpoint: endpoint.clone(),
                storage_endpoint: storage_endpoint.clone(),
                credentials: credentials.as_ref().map(|c| if c.is_absolute() { c.clone() } else { root.join(c) }),
                read_api,
            };
            Ok(Box::new(amora_bigquery::BigQueryStore::new(&bq, &env)?))
        }
    }
}

/// The one place that picks the online store from the configuration.
pub fn open_online(root: &Path, config: &Config) -> anyhow::Result<Box<dyn amora_online::OnlineStore>> {
    use amora_project::config::RedisType;
    match &config.feature_store.online_store {
        amora_project::OnlineStoreConfig::Embedded { path } => {
            let path = if path.is_absolute() { path.clone() } else { root.join(path) };
            Ok(Box::new(amora_online::embedded::EmbeddedStore::open(&path)?))
        }
        amora_project::OnlineStoreConfig::Redis {
            connection_string,
            redis_type: RedisType::Redis,
            key_ttl_seconds,
            timeout_ms,
        } => {
            let timeout = std::time::Duration::from_millis(*timeout_ms);
            Ok(Box::new(amora_online::redis_store::RedisStore::new(connection_string, *key_ttl_seconds, timeout)?))
        }
        amora_project::OnlineStoreConfig::Redis {
            connection_string,
            redis_type: RedisType::RedisCluster,
            key_ttl_seconds,
            timeout_ms,
        } => {
            let timeout = std::time::Duration::from_millis(*timeout_ms);
            Ok(Box::new(amora_online::redis_store::RedisStore::new_cluster(
                connection_string,
                *key_ttl_seconds,
                timeout,
            )?))
        }
    }
}

fn desired_objects(p: &Project) -> FeastObjects {
    let table = |m: &amora_model::Model| match &p.config.feature_store.offline_store {
        amora_project::OfflineStoreConfig::Embedded => {
            let loc = amora_offline::store::table_location(
                &tables_dir(&p.root, &p.config),
                &m.name,
                m.partition_by.as_deref(),
            );
            TableRef::File(loc.path().display().to_string())
        }
        amora_project::OfflineStoreConfig::Bigquery { project_id, dataset, .. } => {
            TableRef::BigQuery(format!("{project_id}.{dataset}.{}", m.name))
        }
    };
    feast_objects(&p.defs, &table)
}

fn user() -> String {
    env("AMORA_USER").or_else(|| env("USER")).or_else(|| env("LOGNAME")).unwrap_or_else(|| "unknown".into())
}

fn feature_store(dir: &Path, cmd: FsCommand) -> anyhow::Result<()> {
    match cmd {
        FsCommand::Plan { json } => {
            let p = load(dir)?;
            let store = open_store(&p.root, &p.config)?;
            let plan = ops::plan(store.as_ref(), &desired_objects(&p), &p.defs.name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{plan}");
            }
            Ok(())
        }
        FsCommand::Apply { json } => {
            let p = load(dir)?;
            let store = open_store(&p.root, &p.config)?;
            // The registry before: to know the join keys and features of views this apply removes.
            let before = read_settled(store.as_ref())?;
            let outcome = ops::apply(store.as_ref(), &desired_objects(&p), &p.defs.name, &user())?;
            if let ApplyOutcome::Applied { plan, .. } = &outcome {
                let removed: Vec<String> = plan
                    .changes
                    .iter()
                    .filter(|c| {
                        c.kind == amora_proto::ObjectKind::FeatureView
                            && c.action == amora_registry::plan::Action::Delete
                    })
                    .map(|c| c.name.clone())
                    .collect();
                if !removed.is_empty() {
                    if let Err(e) = online_cmd::remove_views(&p.root, &p.config, &before, &removed) {
                        eprintln!(
                            "warning: the registry is updated, but removing the online values of {} failed: {e:#}\n  run `amora feature-store teardown --view NAME` for them when the online store is back",
                            removed.join(", ")
                        );
                    }
                }
            }
            match (outcome, json) {
                (ApplyOutcome::NoChanges, false) => println!("No changes to registry"),
                (ApplyOutcome::NoChanges, true) => {
                    println!("{}", serde_json::json!({"changed": false}))
                }
                (ApplyOutcome::Applied { plan, version, version_id, .. }, false) => {
                    println!("Applying changes for project {}", p.defs.name);
                    print!("{plan}");
                    println!("Registry version {version} ({version_id}) written to {}", store.location());
                }
                (ApplyOutcome::Applied { plan, version, version_id, attempts }, true) => println!(
                    "{}",
                    serde_json::json!({"changed": true, "version": version, "version_id": version_id, "attempts": attempts, "plan": plan})
                ),
            }
            Ok(())
        }
        FsCommand::List { kind, json } => {
            let (config, file) = read_registry(dir)?;
            catalog::list(&file, &config.project, kind, json)
        }
        FsCommand::Describe { name } => {
            let (config, file) = read_registry(dir)?;
            catalog::describe(&file, &config.project, &name)
        }
        FsCommand::GetHistoricalFeatures { entities, features, feature_service, full_feature_names, output } => {
            let (root, config) = config(dir)?;
            let (config2, file) = read_registry(dir)?;
            debug_assert_eq!(config.project, config2.project);
            let selection = match feature_service {
                Some(s) => amora_core::FeatureSelection::Service(s),
                None => amora_core::FeatureSelection::Refs(features),
            };
            let started = std::time::Instant::now();
            let rt = pipeline_cmd::runtime()?;
            let rows = rt.block_on(async {
                let w = amora_offline::Warehouse::new(0);
                let timings = std::env::var_os("AMORA_TIMINGS").is_some();
                let t0 = std::time::Instant::now();
                let frame = amora_offline::frames::read_frame(&entities).await?;
                if timings {
                    eprintln!("timing: read entities {:.3}s", t0.elapsed().as_secs_f64());
                }
                let t0 = std::time::Instant::now();
                let offline = open_offline(&root, &config)?;
                let out = amora_core::get_historical_features(
                    offline.as_ref(),
                    &file,
                    &config.project,
                    &root,
                    &frame,
                    &selection,
                    full_feature_names,
                )
                .await?;
                let rows = out.num_rows();
                if timings {
                    eprintln!("timing: join {:.3}s", t0.elapsed().as_secs_f64());
                }
                let t0 = std::time::Instant::now();
                amora_offline::frames::write_frame(&w, out, &output).await?;
                if timings {
                    eprintln!("timing: write {:.3}s", t0.elapsed().as_secs_f64());
                }
                anyhow::Ok(rows)
            })?;
            eprintln!("{rows} rows written to {} in {:.3}s", output.display(), started.elapsed().as_secs_f64());
            Ok(())
        }
        FsCommand::Materialize { start, end, views, quiet } => {
            let (root, config) = config(dir)?;
            let store = open_store(&root, &config)?;
            online_cmd::materialize(&root, &config, store.as_ref(), Some(&start), Some(&end), &views, quiet)
        }
        FsCommand::MaterializeIncremental { end, views, quiet } => {
            let (root, config) = config(dir)?;
            let store = open_store(&root, &config)?;
            online_cmd::materialize(&root, &config, store.as_ref(), None, end.as_deref(), &views, quiet)
        }
        FsCommand::Teardown { views } => {
            let (root, config) = config(dir)?;
            let (_, file) = read_registry(dir)?;
            let names: Vec<String> = if views.is_empty() {
                amora_core::online::online_views(&file, &config.project, &root)?.into_iter().map(|v| v.name).collect()
            } else {
                views
            };
            online_cmd::remove_views(&root, &config, &file, &names)?;
            println!("Removed the online values of {} feature view(s) of project {}", names.len(), config.project);
            Ok(())
        }
        FsCommand::ReadLatency { features, join_key, ids, batch, iterations } => {
            let (root, config) = config(dir)?;
            let (_, file) = read_registry(dir)?;
            online_cmd::read_latency(&root, &config, &file, &features, &join_key, &ids, batch, iterations)
        }
        FsCommand::Serve {
            host,
            port,
            grpc_port,
            registry_ttl,
            workers,
            max_body_bytes,
            max_entities,
            auth_tokens_file,
            access_log,
        } => {
            let (root, config) = config(dir)?;
            let ttl = amora_model::duration::parse_duration(&registry_ttl)
                .map_err(|e| anyhow!("--registry-ttl {registry_ttl}: {e}"))?;
            let mut tokens = std::collections::HashSet::new();
            if let Some(f) = &auth_tokens_file {
                let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
                tokens.extend(
                    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from),
                );
                if tokens.is_empty() {
                    anyhow::bail!("{} holds no tokens; write one per line", f.display());
                }
            }
            if let Ok(env) = std::env::var("AMORA_SERVER_TOKENS") {
                tokens.extend(env.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from));
            }
            let addr: std::net::SocketAddr = format!("{host}:{port}")
                .parse()
                .or_else(|_| {
                    use std::net::ToSocketAddrs;
                    format!("{host}:{port}")
                        .to_socket_addrs()?
                        .next()
                        .ok_or_else(|| std::io::Error::other("no address"))
                })
                .with_context(|| format!("cannot bind to {host}:{port}: not an address"))?;
            let server_config = amora_server::ServerConfig {
                addr,
                grpc_addr: grpc_port.map(|p| std::net::SocketAddr::new(addr.ip(), p)),
                registry_ttl: std::time::Duration::from_secs(ttl.max(1)),
                max_body_bytes,
                max_entities,
                tokens,
                access_log,
                workers: workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1),
            };
            init_logging();
            let store: std::sync::Arc<dyn amora_online::OnlineStore> = open_online(&root, &config)?.into();
            let registry: std::sync::Arc<dyn RegistryStore> = open_store(&root, &config)?.into();
            let offline: std::sync::Arc<dyn amora_offline::OfflineStore> = open_offline(&root, &config)?.into();
            let service = amora_server::Service::new(
                config.project.clone(),
                root,
                config.feature_store.entity_key_serialization_version,
                store,
                offline,
                registry,
                server_config,
            )
            .map_err(|e| anyhow!("{e}"))?;
            // Accepting, gRPC and materialization; HTTP requests run on `workers` threads of their own.
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
            rt.block_on(amora_server::serve(std::sync::Arc::new(service)))?;
            Ok(())
        }
        FsCommand::GetOnlineFeatures { features, entities, json } => {
            let (root, config) = config(dir)?;
            let (_, file) = read_registry(dir)?;
            online_cmd::get_online_features(&root, &config, &file, &features, &entities, json)
        }
        FsCommand::RegistryDump => {
            let (config, file) = read_registry(dir)?;
            catalog::dump(&file, &config.project)
        }
        FsCommand::History { json } => {
            let (root, config) = config(dir)?;
            let store = open_store(&root, &config)?;
            let versions = history::list(store.as_ref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&versions)?);
                return Ok(());
            }
            if versions.is_empty() {
                println!("No registry versions yet at {}; run `amora feature-store apply`.", store.location());
            }
            for v in versions {
                let kind = match v.kind {
                    history::VersionKind::Apply => "apply",
                    history::VersionKind::Rollback => "rollback",
                    history::VersionKind::Materialize => "materialize",
                    history::VersionKind::External => "external",
                };
                println!("v{}  {}  {}  {kind}  project {}  ({})", v.number, v.time, v.user, v.project, v.version_id);
                for s in &v.summary {
                    println!("    {s}");
                }
            }
            Ok(())
        }
        FsCommand::Diff { from, to } => {
            let (root, config) = config(dir)?;
            let store = open_store(&root, &config)?;
            let plan = ops::diff_versions(store.as_ref(), &config.project, from, to)?;
            if plan.is_empty() {
                println!("No changes to project {} between v{from} and v{to}", config.project);
            } else {
                print!("{plan}");
            }
            Ok(())
        }
        FsCommand::Rollback { version } => {
            let (root, config) = config(dir)?;
            let store = open_store(&root, &config)?;
            match ops::rollback(store.as_ref(), &config.project, version, &user())? {
                ApplyOutcome::NoChanges => {
                    println!("Project {} is already as in v{version}; nothing written", config.project)
                }
                ApplyOutcome::Applied { plan, version: new, .. } => {
                    print!("{plan}");
                    println!("Rolled back project {} to v{version}, written as v{new}", config.project);
                }
            }
            Ok(())
        }
    }
}

/// Reads the registry, re-reading if it is replaced mid-read by a concurrent writer.
fn read_settled(store: &dyn RegistryStore) -> anyhow::Result<amora_proto::RegistryFile> {
    let mut attempts = 0;
    loop {
        match ops::read(store) {
            Ok((_, file)) => return Ok(file),
            Err(amora_registry::RegistryError::Store(amora_registry::store::StoreError::Conflict)) if attempts < 10 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 * attempts));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Logs to stderr; `RUST_LOG`-style level from AMORA_LOG (default info).
fn init_logging() {
    let level = match std::env::var("AMORA_LOG").unwrap_or_default().to_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_ansi(false).try_init();
}

fn config(dir: &Path) -> anyhow::Result<(PathBuf, Config)> {
    let root = std::path::absolute(dir)?;
    let config = Config::load(&root, &env)?;
    Ok((root, config))
}

fn read_registry(dir: &Path) -> anyhow::Result<(Config, amora_proto::RegistryFile)> {
    let (root, config) = config(dir)?;
    let store = open_store(&root, &config)?;
    let file = read_settled(store.as_ref())?;
    if file.fields.is_empty() && store.read().map(|s| s.is_none()).unwrap_or(false) {
        return Err(anyhow!("no registry at {}; run `amora feature-store apply` first", store.location()));
    }
    Ok((config, file))
}
