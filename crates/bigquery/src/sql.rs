//! The one SQL generator for BigQuery (pure): identifiers validated and quoted,
//! model SQL translated from amora's dialect, and the statements for model
//! tables, point-in-time joins and materialization. Values never enter the SQL
//! text: they are query parameters (`@name`), see [`Param`].

use std::ops::ControlFlow;

use amora_model::{Scalar, ValueType};
use sqlparser::ast::{
    visit_expressions_mut, visit_relations_mut, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SqlError(pub String);

/// A query parameter: name, BigQuery type, value as BigQuery's REST API takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: &'static str,
    pub value: String,
}

impl Param {
    pub fn timestamp(name: &str, micros: i64) -> Param {
        Param { name: name.into(), ty: "TIMESTAMP", value: format_micros(micros) }
    }
    pub fn int64(name: &str, v: i64) -> Param {
        Param { name: name.into(), ty: "INT64", value: v.to_string() }
    }
}

/// `2024-01-01 00:00:00.000000+00:00`, the form BigQuery parses as a TIMESTAMP parameter.
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000);
    let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    format!("{}.{sub:06}+00:00", t.format("%Y-%m-%d %H:%M:%S"))
}

/// A column, field or table name: letters, digits and underscores, not starting
/// with a digit, at most 300 characters (BigQuery's rule for column names).
pub fn ident(name: &str) -> Result<String, SqlError> {
    let ok = !name.is_empty()
        && name.len() <= 300
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(format!("`{name}`"))
    } else {
        Err(SqlError(format!(
            "`{name}` is not a valid BigQuery name: use letters, digits and underscores, not starting with a digit"
        )))
    }
}

/// A project id: lowercase letters, digits, hyphens (and `domain:` prefixes, dots in legacy ids).
fn project_ok(p: &str) -> bool {
    !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'))
}

/// A table: `project.dataset.table`, each part checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub project: String,
    pub dataset: String,
    pub table: String,
}

impl TableRef {
    pub fn new(project: &str, dataset: &str, table: &str) -> Result<TableRef, SqlError> {
        if !project_ok(project) {
            return Err(SqlError(format!("`{project}` is not a valid Google Cloud project id")));
        }
        ident(dataset)?;
        ident(table)?;
        Ok(TableRef { project: project.into(), dataset: dataset.into(), table: table.into() })
    }

    /// Parses `project.dataset.table` (or `project:dataset.table`, as Feast writes it).
    pub fn parse(s: &str) -> Result<TableRef, SqlError> {
        let s = s.trim().trim_matches('`');
        let (project, rest) = match s.split_once(':') {
            Some((p, rest)) => (p.to_string(), rest.to_string()),
            None => match s.split_once('.') {
                Some((p, rest)) => (p.to_string(), rest.to_string()),
                None => return Err(SqlError(format!("`{s}` is not a table reference `project.dataset.table`"))),
            },
        };
        let Some((dataset, table)) = rest.split_once('.') else {
            return Err(SqlError(format!("`{s}` is not a table reference `project.dataset.table`")));
        };
        TableRef::new(&project, dataset, table)
    }

    pub fn sql(&self) -> String {
        format!("`{}.{}.{}`", self.project, self.dataset, self.table)
    }
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table)
    }
}

/// BigQuery's name of a declared type.
pub fn bq_type(t: ValueType) -> String {
    let s = |s: Scalar| match s {
        Scalar::Bytes => "BYTES",
        Scalar::String => "STRING",
        Scalar::Int32 | Scalar::Int64 => "INT64",
        Scalar::Float32 | Scalar::Float64 => "FLOAT64",
        Scalar::Bool => "BOOL",
        Scalar::UnixTimestamp => "TIMESTAMP",
    };
    match t {
        ValueType::Scalar(x) => s(x).to_string(),
        ValueType::List(x) => format!("ARRAY<{}>", s(x)),
    }
}

/// BigQuery's name for a type written in amora's (DataFusion/PostgreSQL) dialect.
fn translate_type(t: &DataType) -> Option<&'static str> {
    let name = t.to_string().to_ascii_uppercase();
    let base = name.split('(').next().unwrap_or("").trim();
    Some(match base {
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" | "FLOAT" | "FLOAT4" | "REAL" | "FLOAT64" => "FLOAT64",
        "BIGINT" | "INT" | "INTEGER" | "INT8" | "INT4" | "SMALLINT" | "INT2" | "TINYINT" | "INT64" => "INT64",
        "VARCHAR" | "TEXT" | "STRING" | "CHAR" | "CHARACTER VARYING" => "STRING",
        "BOOLEAN" | "BOOL" => "BOOL",
        "BYTEA" | "BLOB" | "BINARY" | "VARBINARY" | "BYTES" => "BYTES",
        "TIMESTAMP" | "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => "TIMESTAMP",
        "DATE" => "DATE",
        _ => return None,
    })
}

const TRUNC_UNITS: &[&str] =
    &["microsecond", "millisecond", "second", "minute", "hour", "day", "week", "month", "quarter", "year"];

fn to_backticks(i: &mut Ident) {
    if i.quote_style == Some('"') {
        i.quote_style = Some('`');
    }
}

/// Translates a model's SELECT from amora's dialect (the embedded engine's:
/// DataFusion, PostgreSQL-like) into BigQuery's, so one project runs on both:
/// `date_trunc('unit', ts)` becomes `TIMESTAMP_TRUNC(ts, UNIT)`, `x::T` and
/// `CAST(x AS DOUBLE|BIGINT|VARCHAR|BOOLEAN…)` use BigQuery's type names, and
/// `"quoted"` identifiers become `` `quoted` ``. Everything else passes through:
/// BigQuery functions written directly work too.
pub fn translate(sql: &str) -> Result<String, SqlError> {
    let mut statements =
        Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| SqlError(format!("cannot parse the SQL: {e}")))?;
    let mut problem: Option<String> = None;
    let _ = visit_expressions_mut(&mut statements, |e| {
        match e {
            Expr::Identifier(i) => to_backticks(i),
            Expr::CompoundIdentifier(parts) => parts.iter_mut().for_each(to_backticks),
            Expr::Cast { kind, data_type, .. } => {
                if *kind == CastKind::DoubleColon {
                    *kind = CastKind::Cast;
                }
                match translate_type(data_type) {
                    Some(t) => *data_type = DataType::Custom(ObjectName::from(vec![Ident::new(t)]), vec![]),
                    None => {
                        problem.get_or_insert(format!("type {data_type} has no BigQuery equivalent amora knows"));
                    }
                }
            }
            Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("date_trunc") => {
                if let FunctionArguments::List(list) = &mut f.args {
                    let unit = match list.args.first() {
                        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
                            Value::SingleQuotedString(s) => Some(s.to_ascii_lowercase()),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let (Some(unit), 2) = (unit, list.args.len()) {
                        if !TRUNC_UNITS.contains(&unit.as_str()) {
                            problem.get_or_insert(format!("date_trunc unit '{unit}' is not one BigQuery knows"));
                        } else {
                            let ts = list.args.remove(1);
                            list.args = vec![
                                ts,
                                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(Ident::new(
                                    unit.to_ascii_uppercase(),
                                )))),
                            ];
                            f.name = ObjectName::from(vec![Ident::new("TIMESTAMP_TRUNC")]);
                        }
                    }
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_relations_mut(&mut statements, |name| {
        for p in name.0.iter_mut() {
            if let ObjectNamePart::Identifier(i) = p {
                to_backticks(i);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(p) = problem {
        return Err(SqlError(p));
    }
    Ok(statements.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(";\n"))
}

/// A model's table: the model's SELECT (translated), each declared column cast
/// to its declared type, in declared order, partitioned by day and clustered when declared.
pub fn create_table(
    table: &TableRef,
    select: &str,
    columns: &[(String, ValueType)],
    partition_by: Option<&str>,
    cluster_by: &[String],
) -> Result<String, SqlError> {
    let mut sql = format!("CREATE OR REPLACE TABLE {}", table.sql());
    if let Some(p) = partition_by {
        sql.push_str(&format!("\nPARTITION BY DATE({})", ident(p)?));
    }
    if !cluster_by.is_empty() {
        let c: Result<Vec<_>, _> = cluster_by.iter().take(4).map(|c| ident(c)).collect();
        sql.push_str(&format!("\nCLUSTER BY {}", c?.join(", ")));
    }
    sql.push_str(&format!("\nAS {}", model_select(select, columns)?));
    Ok(sql)
}

/// A model's view.
pub fn create_view(table: &TableRef, select: &str, columns: &[(String, ValueType)]) -> Result<String, SqlError> {
    Ok(format!("CREATE OR REPLACE VIEW {} AS {}", table.sql(), model_select(select, columns)?))
}

fn model_select(select: &str, columns: &[(String, ValueType)]) -> Result<String, SqlError> {
    let inner = translate(select)?;
    let cols: Result<Vec<String>, SqlError> = columns
        .iter()
        .map(|(n, t)| {
            let q = ident(n)?;
            Ok(format!("CAST(amora_model.{q} AS {}) AS {q}", bq_type(*t)))
        })
        .collect();
    Ok(format!("SELECT {}\nFROM (\n{inner}\n) AS amora_model", cols?.join(", ")))
}

/// One feature view in a point-in-time join.
#[derive(Debug, Clone, PartialEq)]
pub struct PitView {
    pub table: TableRef,
    pub join_keys: Vec<String>,
    pub event_timestamp: String,
    pub created_timestamp: Option<String>,
    pub ttl_seconds: u64,
    /// `(column in the table, output name)`.
    pub features: Vec<(String, String)>,
}

/// The column that numbers the entity rows, added on upload and removed on read.
pub const ROW_ID: &str = "amora_row_id";

/// The point-in-time join as one statement, with exactly the embedded engine's
/// semantics: per entity row and view, the candidates share the join keys and
/// satisfy `entity_ts - ttl <= feature_ts <= entity_ts` (ttl 0: unbounded); the
/// latest `feature_ts` wins, ties to the latest created timestamp; no candidate
/// gives nulls and the row is kept. The result has [`ROW_ID`] and the features:
/// the caller restores the input order by the former and keeps its own entity columns.
///
/// Parameters: `@min_ts` and `@max_ts` (the entity timestamps' range) bound each
/// view's scan, so a partitioned table reads only the partitions needed.
pub fn point_in_time(
    result: &TableRef,
    entities: &TableRef,
    timestamp: &str,
    views: &[PitView],
) -> Result<String, SqlError> {
    let ts = ident(timestamp)?;
    let row = ident(ROW_ID)?;
    let mut ctes = Vec::new();
    let mut outer = Vec::new();
    let mut joins = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let ev = ident(&v.event_timestamp)?;
        let on: Result<Vec<String>, SqlError> =
            v.join_keys.iter().map(|k| ident(k).map(|k| format!("f.{k} = e.{k}"))).collect();
        let mut on = on?;
        on.push(format!("f.{ev} <= e.{ts}"));
        let mut scan = vec![format!("{ev} <= @max_ts")];
        if v.ttl_seconds > 0 {
            let micros = v.ttl_seconds.saturating_mul(1_000_000);
            on.push(format!("f.{ev} >= TIMESTAMP_SUB(e.{ts}, INTERVAL {micros} MICROSECOND)"));
            scan.push(format!("{ev} >= TIMESTAMP_SUB(@min_ts, INTERVAL {micros} MICROSECOND)"));
        }
        let mut order = vec![format!("f.{ev} DESC")];
        if let Some(c) = &v.created_timestamp {
            order.push(format!("f.{} DESC", ident(c)?));
        }
        let mut picked = Vec::new();
        for (j, (col, out)) in v.features.iter().enumerate() {
            picked.push(format!("f.{} AS f{j}", ident(col)?));
            outer.push(format!("v{i}.f{j} AS {}", ident(out)?));
        }
        // Only the columns the join needs are read from the view's table.
        let mut needed: Vec<String> = v.join_keys.iter().map(|k| ident(k)).collect::<Result<_, _>>()?;
        needed.push(ev.clone());
        if let Some(c) = &v.created_timestamp {
            needed.push(ident(c)?);
        }
        for (col, _) in &v.features {
            let c = ident(col)?;
            if !needed.contains(&c) {
                needed.push(c);
            }
        }
        ctes.push(format!(
            "v{i} AS (\n  SELECT e.{row}{picked}\n  FROM entities AS e\n  JOIN (SELECT {needed} FROM {table} WHERE {scan}) AS f\n    ON {on}\n  QUALIFY ROW_NUMBER() OVER (PARTITION BY e.{row} ORDER BY {order}) = 1\n)",
            picked = picked.iter().map(|p| format!(", {p}")).collect::<String>(),
            needed = needed.join(", "),
            table = v.table.sql(),
            scan = scan.join(" AND "),
            on = on.join("\n    AND "),
            order = order.join(", "),
        ));
        joins.push(format!("LEFT JOIN v{i} ON v{i}.{row} = e.{row}"));
    }
    let mut select: Vec<String> = vec![format!("e.{row}")];
    select.extend(outer);
    Ok(format!(
        "CREATE OR REPLACE TABLE {result} AS\nWITH entities AS (SELECT * FROM {entities}),\n{ctes}\nSELECT {select}\nFROM entities AS e\n{joins}",
        result = result.sql(),
        entities = entities.sql(),
        ctes = ctes.join(",\n"),
        select = select.join(", "),
        joins = joins.join("\n"),
    ))
}

/// The latest row per entity with `@start <= event_ts <= @end` (ties to the latest
/// created timestamp), for materialization, written to `result`.
pub fn latest_rows(
    result: &TableRef,
    table: &TableRef,
    join_keys: &[String],
    event_timestamp: &str,
    created_timestamp: Option<&str>,
    features: &[String],
) -> Result<String, SqlError> {
    let keys: Vec<String> = join_keys.iter().map(|k| ident(k)).collect::<Result<_, _>>()?;
    let ev = ident(event_timestamp)?;
    let mut cols = keys.clone();
    cols.push(ev.clone());
    let mut order = vec![format!("{ev} DESC")];
    if let Some(c) = created_timestamp {
        let c = ident(c)?;
        order.push(format!("{c} DESC"));
        cols.push(c);
    }
    for f in features {
        let f = ident(f)?;
        if !cols.contains(&f) {
            cols.push(f);
        }
    }
    Ok(format!(
        "CREATE OR REPLACE TABLE {} AS\nSELECT {}\nFROM {}\nWHERE {ev} >= @start AND {ev} <= @end\nQUALIFY ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {}) = 1",
        result.sql(),
        cols.join(", "),
        table.sql(),
        keys.join(", "),
        order.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_so_nothing_can_be_injected() {
        assert_eq!(ident("value_avg").unwrap(), "`value_avg`");
        for bad in ["a`b", "x; DROP TABLE t", "", "1abc", "a b", "a.b"] {
            assert!(ident(bad).is_err(), "{bad}");
        }
        assert!(TableRef::parse("my-project.amora.steps").is_ok());
        assert_eq!(TableRef::parse("p:d.t").unwrap().sql(), "`p.d.t`");
        assert!(TableRef::parse("p.d.t`; --").is_err());
        assert!(TableRef::parse("steps").is_err());
    }

    #[test]
    fn model_sql_is_translated_to_bigquery() {
        let out = translate(
            "SELECT source_name, date_trunc('hour', start_date) AS h, CAST(value AS DOUBLE) AS v, x::bigint AS n, \"Weird\" FROM \"steps\" GROUP BY source_name, date_trunc('hour', start_date)",
        )
        .unwrap();
        assert!(out.contains("TIMESTAMP_TRUNC(start_date, HOUR) AS h"), "{out}");
        assert!(out.contains("CAST(value AS FLOAT64)"), "{out}");
        assert!(out.contains("CAST(x AS INT64)"), "{out}");
        assert!(out.contains("`Weird`") && out.contains("FROM `steps`"), "{out}");
        assert!(out.contains("GROUP BY source_name, TIMESTAMP_TRUNC(start_date, HOUR)"), "{out}");
        assert!(translate("SELECT date_trunc('fortnight', t) FROM x").unwrap_err().0.contains("fortnight"));
    }

    #[test]
    fn point_in_time_sql_has_the_ttl_window_and_tie_break() {
        let v = PitView {
            table: TableRef::parse("p.d.step_count_by_source").unwrap(),
            join_keys: vec!["source_name".into()],
            event_timestamp: "event_timestamp".into(),
            created_timestamp: Some("created_at".into()),
            ttl_seconds: 3600,
            features: vec![("value_avg".into(), "step_count_by_source__value_avg".into())],
        };
        let sql = point_in_time(
            &TableRef::parse("p.d.result").unwrap(),
            &TableRef::parse("p.d.entities").unwrap(),
            "event_timestamp",
            std::slice::from_ref(&v),
        )
        .unwrap();
        assert!(sql.contains("f.`event_timestamp` <= e.`event_timestamp`"), "{sql}");
        assert!(sql.contains("INTERVAL 3600000000 MICROSECOND"), "{sql}");
        assert!(sql.contains("ORDER BY f.`event_timestamp` DESC, f.`created_at` DESC"), "{sql}");
        assert!(sql.contains("AS `step_count_by_source__value_avg`"), "{sql}");
        let unbounded = PitView { ttl_seconds: 0, ..v };
        let sql = point_in_time(
            &TableRef::parse("p.d.result").unwrap(),
            &TableRef::parse("p.d.entities").unwrap(),
            "event_timestamp",
            &[unbounded],
        )
        .unwrap();
        assert!(!sql.contains("INTERVAL"), "{sql}");
    }

    #[test]
    fn timestamps_format_for_parameters() {
        assert_eq!(format_micros(0), "1970-01-01 00:00:00.000000+00:00");
        assert_eq!(format_micros(-1), "1969-12-31 23:59:59.999999+00:00");
        assert_eq!(Param::timestamp("t", 1_704_067_200_000_001).value, "2024-01-01 00:00:00.000001+00:00");
    }
}
