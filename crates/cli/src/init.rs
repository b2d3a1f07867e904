//! `amora init`: scaffolds the health-data example project.

use std::path::Path;

use anyhow::{bail, Context};

/// The example project's files, embedded from `examples/health`.
const FILES: &[(&str, &str)] = &[
    ("amora.yaml", include_str!("../../../examples/health/amora.yaml")),
    ("sources/health.yml", include_str!("../../../examples/health/sources/health.yml")),
    ("feature_store/entities.yml", include_str!("../../../examples/health/feature_store/entities.yml")),
    ("feature_store/feature_services.yml", include_str!("../../../examples/health/feature_store/feature_services.yml")),
    ("models/steps.sql", include_str!("../../../examples/health/models/steps.sql")),
    ("models/steps.yml", include_str!("../../../examples/health/models/steps.yml")),
    ("models/step_count_by_source.sql", include_str!("../../../examples/health/models/step_count_by_source.sql")),
    ("models/step_count_by_source.yml", include_str!("../../../examples/health/models/step_count_by_source.yml")),
    (".gitignore", "target/\ndata/registry.db*\ndata/online.redb*\n"),
];

/// The seed dataset's size and seed; `examples/health/data/health.csv` is exactly this.
pub const SEED_ROWS: u64 = 2000;
pub const SEED: u64 = 42;
pub const SEED_DAYS: u64 = 30;
pub const SEED_SOURCES: usize = 6;

pub fn init(dir: &Path, rows: u64, seed: u64, project: Option<&str>) -> anyhow::Result<()> {
    if dir.join("amora.yaml").exists() {
        bail!("{} already holds an amora project (amora.yaml exists); pick another folder", dir.display());
    }
    for (path, text) in FILES {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().expect("has a parent"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let text = match (path, project) {
            (&"amora.yaml", Some(name)) => text.replacen("project: health", &format!("project: {name}"), 1),
            _ => text.to_string(),
        };
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    let data = dir.join("data/health.csv");
    std::fs::create_dir_all(data.parent().expect("has a parent"))?;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&data).with_context(|| format!("writing {}", data.display()))?);
    crate::generate::write_health_csv(&mut out, rows, seed, SEED_DAYS, SEED_SOURCES)?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}
