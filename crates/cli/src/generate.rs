//! A deterministic generator of Apple-Health-like rows for the example project and
//! for benchmarks: the same seed and size always give the same bytes.

use std::io::Write;

/// xorshift64*: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SOURCES: [(&str, &str); 6] = [
    ("Mi Fit", "5.2.1"),
    ("iPhone", "17.1"),
    ("Apple Watch", "10.1"),
    ("Garmin Connect", "4.70"),
    ("Fitbit", "3.91"),
    ("Strava", "345.0"),
];

/// The start of the generated period: 2024-01-01T00:00:00Z.
const EPOCH_2024: i64 = 1_704_067_200;

fn timestamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = amora_model::calendar::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Writes `rows` health records as CSV (timestamps are UTC, written without a zone).
pub fn write_health_csv(out: &mut dyn Write, rows: u64, seed: u64, days: u64, sources: usize) -> std::io::Result<()> {
    let mut rng = Rng::new(seed);
    let span = (days.max(1) * 86_400) as i64;
    writeln!(out, "type,source_name,source_version,unit,creation_date,start_date,end_date,value")?;
    for _ in 0..rows {
        let s = rng.below(sources.max(1) as u64) as usize;
        let (name, version) = match SOURCES.get(s) {
            Some((n, v)) => ((*n).to_string(), *v),
            None => (format!("Device {s}"), "1.0"),
        };
        let start = EPOCH_2024 + rng.below(span as u64) as i64;
        let duration = 60 + rng.below(600) as i64;
        let created = start + duration + rng.below(3600) as i64;
        let (kind, unit, value) = match rng.below(10) {
            0..=6 => ("HKQuantityTypeIdentifierStepCount", "count", format!("{}", 1 + rng.below(2000))),
            7 | 8 => ("HKQuantityTypeIdentifierHeartRate", "count/min", format!("{}", 50 + rng.below(130))),
            _ => (
                "HKQuantityTypeIdentifierDistanceWalkingRunning",
                "km",
                format!("{:.3}", rng.below(2000) as f64 / 1000.0),
            ),
        };
        let name = if name.contains(',') { format!("\"{name}\"") } else { name };
        writeln!(
            out,
            "{kind},{name},{version},{unit},{},{},{},{value}",
            timestamp(created),
            timestamp(start),
            timestamp(start + duration)
        )?;
    }
    Ok(())
}

/// Converts a generated CSV file into one Parquet file, with the example source's types.
pub async fn csv_to_parquet(csv: &std::path::Path, parquet: &std::path::Path) -> anyhow::Result<()> {
    use amora_model::{Column, FileFormat, Source, ValueType};
    let col = |name: &str, ty: &str| Column {
        name: name.into(),
        ty: ValueType::parse(ty).expect("valid"),
        doc: String::new(),
        tests: vec![],
    };
    let source = Source {
        name: "health".into(),
        description: String::new(),
        owner: String::new(),
        tags: Default::default(),
        location: csv.display().to_string(),
        format: FileFormat::Csv,
        columns: vec![
            col("type", "string"),
            col("source_name", "string"),
            col("source_version", "string"),
            col("unit", "string"),
            col("creation_date", "timestamp"),
            col("start_date", "timestamp"),
            col("end_date", "timestamp"),
            col("value", "float64"),
        ],
        file: Default::default(),
    };
    let w = amora_offline::Warehouse::new(0);
    w.register_source(&source, std::path::Path::new("/")).await?;
    let df = w.context().table("health").await?;
    let options = datafusion_write_options();
    df.write_parquet(&parquet.display().to_string(), options, None).await?;
    Ok(())
}

fn datafusion_write_options() -> amora_offline::DataFrameWriteOptions {
    amora_offline::DataFrameWriteOptions::new().with_single_file_output(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(timestamp(EPOCH_2024), "2024-01-01 00:00:00");
        assert_eq!(timestamp(EPOCH_2024 + 59 * 86_400 + 3661), "2024-02-29 01:01:01");
        assert_eq!(timestamp(0), "1970-01-01 00:00:00");
    }

    #[test]
    fn deterministic() {
        let gen = |seed| {
            let mut v = Vec::new();
            write_health_csv(&mut v, 100, seed, 7, 6).unwrap();
            v
        };
        assert_eq!(gen(1), gen(1));
        assert_ne!(gen(1), gen(2));
        assert_eq!(String::from_utf8(gen(1)).unwrap().lines().count(), 101);
    }
}
