//! `amora test`: the data tests declared on models and columns, run as SQL in the
//! warehouse. Each test is a query for the failing rows; none means it passes.

use amora_model::{DataTest, Materialization};
use amora_offline::{Dialect, OfflineStore};
use amora_project::Project;

use crate::compile::compile;

/// The result of one data test.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TestResult {
    pub model: String,
    pub column: Option<String>,
    /// e.g. `not_null`, `accepted_values`.
    pub test: String,
    pub passed: bool,
    pub failing_rows: u64,
    /// A few failing rows, formatted as a table.
    pub sample: String,
    /// Why the test could not run (missing table, bad expression), if it could not.
    pub error: Option<String>,
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn test_name(t: &DataTest) -> &'static str {
    match t {
        DataTest::NotNull => "not_null",
        DataTest::Unique => "unique",
        DataTest::AcceptedValues { .. } => "accepted_values",
        DataTest::Relationships { .. } => "relationships",
        DataTest::ExpressionIsTrue { .. } => "expression_is_true",
        DataTest::UniqueTogether { .. } => "unique_together",
        DataTest::RowCount { .. } => "row_count",
    }
}

/// The query returning the failing rows of `test` on `table` (and `column`), in the store's dialect.
pub fn failing_rows_sql(dialect: Dialect, table: &str, column: Option<&str>, test: &DataTest) -> String {
    let q = |n: &str| dialect.quote(n);
    let t = q(table);
    let c = column.map(q).unwrap_or_default();
    match test {
        DataTest::NotNull => format!("SELECT * FROM {t} WHERE {c} IS NULL"),
        DataTest::Unique => {
            format!(
                "SELECT {c}, COUNT(*) AS occurrences FROM {t} WHERE {c} IS NOT NULL GROUP BY {c} HAVING COUNT(*) > 1"
            )
        }
        DataTest::AcceptedValues { values } => format!(
            "SELECT * FROM {t} WHERE {c} IS NOT NULL AND CAST({c} AS {}) NOT IN ({})",
            dialect.string_type(),
            values.iter().map(|v| lit(v)).collect::<Vec<_>>().join(", ")
        ),
        DataTest::Relationships { to, field } => format!(
            "SELECT * FROM {t} WHERE {c} IS NOT NULL AND {c} NOT IN (SELECT {f} FROM {to} WHERE {f} IS NOT NULL)",
            f = q(field),
            to = q(to)
        ),
        DataTest::ExpressionIsTrue { expression } => format!("SELECT * FROM {t} WHERE NOT ({expression})"),
        DataTest::UniqueTogether { columns } => {
            let cols = columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
            format!("SELECT {cols}, COUNT(*) AS occurrences FROM {t} GROUP BY {cols} HAVING COUNT(*) > 1")
        }
        DataTest::RowCount { min, max } => {
            let mut cond = Vec::new();
            if let Some(lo) = min {
                cond.push(format!("n < {lo}"));
            }
            if let Some(hi) = max {
                cond.push(format!("n > {hi}"));
            }
            format!("SELECT n AS row_count FROM (SELECT COUNT(*) AS n FROM {t}) AS counted WHERE {}", cond.join(" OR "))
        }
    }
}

/// Runs every data test of the selected models (all when `select` is empty).
pub async fn run_tests(project: &Project, warehouse: &dyn OfflineStore, select: &[String]) -> Vec<TestResult> {
    let defs = &project.defs;
    let compiled = compile(defs);
    let dialect = warehouse.dialect();
    let mut setup_errors = Vec::new();
    for s in &defs.sources {
        if let Err(e) = warehouse.prepare_source(s, &project.root).await {
            setup_errors.push((s.name.clone(), e.to_string()));
        }
    }
    for name in compiled.generations.iter().flatten() {
        let m = defs.model(name).expect("compiled");
        let r = match m.materialization {
            Materialization::Table => {
                if !warehouse.has_table(m).await.unwrap_or(false) {
                    setup_errors.push((name.clone(), "no table yet; run `amora materialize` first".into()));
                    continue;
                }
                warehouse.use_table(m).await
            }
            // Views are made readable; ephemeral models are tested through a view of their SQL.
            Materialization::View | Materialization::Ephemeral => {
                warehouse.build_view(m, &compiled.models[name].sql).await
            }
        };
        if let Err(e) = r {
            setup_errors.push((name.clone(), e.to_string()));
        }
    }
    let mut out = Vec::new();
    for m in defs.models.iter().filter(|m| select.is_empty() || select.contains(&m.name)) {
        let tests = m
            .columns
            .iter()
            .flat_map(|c| c.tests.iter().map(move |t| (Some(c.name.as_str()), t)))
            .chain(m.tests.iter().map(|t| (None, t)));
        for (column, test) in tests {
            let mut result = TestResult {
                model: m.name.clone(),
                column: column.map(String::from),
                test: test_name(test).into(),
                passed: false,
                failing_rows: 0,
                sample: String::new(),
                error: None,
            };
            if let Some((_, e)) = setup_errors.iter().find(|(n, _)| *n == m.name) {
                result.error = Some(e.clone());
                out.push(result);
                continue;
            }
            let sql = failing_rows_sql(dialect, &m.name, column, test);
            match count(warehouse, &sql).await {
                Ok(0) => result.passed = true,
                Ok(n) => {
                    result.failing_rows = n;
                    if let Ok(batches) = warehouse.query(&format!("{sql} LIMIT 5")).await {
                        result.sample = amora_offline::arrow::util::pretty::pretty_format_batches(&batches)
                            .map(|t| t.to_string())
                            .unwrap_or_default();
                    }
                }
                Err(e) => result.error = Some(format!("{}: {e}", m.yaml_file.display())),
            }
            out.push(result);
        }
    }
    out
}

/// `SELECT COUNT(*)` over `sql`.
async fn count(warehouse: &dyn OfflineStore, sql: &str) -> Result<u64, amora_offline::OfflineError> {
    use amora_offline::arrow::array::{Array, Int64Array};
    use amora_offline::arrow::compute::cast;
    use amora_offline::arrow::datatypes::DataType;
    let batches = warehouse.query(&format!("SELECT COUNT(*) AS n FROM ({sql}) AS amora_q")).await?;
    // COUNT(*) always gives one row: none back is the store failing, never a pass.
    let Some(col) = batches.iter().find(|b| b.num_rows() > 0).map(|b| b.column(0).clone()) else {
        return Err(amora_offline::OfflineError::Backend("the row count came back empty".into()));
    };
    let n = cast(&col, &DataType::Int64)?;
    let n = n.as_any().downcast_ref::<Int64Array>().map_or(0, |a| if a.is_null(0) { 0 } else { a.value(0) });
    Ok(u64::try_from(n).unwrap_or(0))
}
