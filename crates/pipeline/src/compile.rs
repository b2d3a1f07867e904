//! Compiling a project: each model's SQL with its ephemeral dependencies inlined as
//! CTEs, the tables it reads, the DAG's generations, and content hashes. Pure.

use std::collections::{BTreeMap, BTreeSet};

use amora_model::hash::hash_hex;
use amora_model::{dag, Materialization, Model, ProjectDefs};

/// One model, ready to run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CompiledModel {
    pub name: String,
    pub materialization: Materialization,
    /// The SQL to run: the model's SELECT with ephemeral models inlined as CTEs.
    pub sql: String,
    /// Tables (sources and non-ephemeral models) the compiled SQL reads.
    pub reads: Vec<String>,
    /// Models it depends on, directly or through ephemeral models.
    pub upstream_models: Vec<String>,
    /// Hash of the compiled SQL.
    pub sql_hash: String,
    /// Hash of the declaration: columns, types, materialization, partitioning.
    pub decl_hash: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Compiled {
    pub models: BTreeMap<String, CompiledModel>,
    /// Topological generations of model names: each depends only on earlier ones.
    pub generations: Vec<Vec<String>>,
}

/// Compiles every model. The project must be valid (no cycles).
pub fn compile(defs: &ProjectDefs) -> Compiled {
    let graph: BTreeMap<String, Vec<String>> =
        defs.models.iter().map(|m| (m.name.clone(), m.depends_on.clone())).collect();
    let generations = dag::generations(&graph).unwrap_or_default();
    let mut models = BTreeMap::new();
    for m in &defs.models {
        let mut ctes = Vec::new();
        let mut reads = BTreeSet::new();
        collect_ephemeral(defs, m, &mut ctes, &mut reads, &mut BTreeSet::new());
        let sql = with_ctes(&m.sql, &ctes);
        let upstream_models: Vec<String> = reads.iter().filter(|r| defs.model(r).is_some()).cloned().collect();
        let decl = serde_json::to_string(&(&m.columns, m.materialization, &m.partition_by)).unwrap_or_default();
        models.insert(
            m.name.clone(),
            CompiledModel {
                name: m.name.clone(),
                materialization: m.materialization,
                sql_hash: hash_hex([sql.as_bytes()]),
                decl_hash: hash_hex([decl.as_bytes()]),
                sql,
                reads: reads.into_iter().collect(),
                upstream_models,
            },
        );
    }
    Compiled { models, generations }
}

/// Adds the ephemeral models `m` reads (depth first, dependencies before
/// dependents) to `ctes`, and every other table to `reads`.
fn collect_ephemeral(
    defs: &ProjectDefs,
    m: &Model,
    ctes: &mut Vec<(String, String)>,
    reads: &mut BTreeSet<String>,
    seen: &mut BTreeSet<String>,
) {
    for d in &m.depends_on {
        match defs.model(d) {
            Some(dep) if dep.materialization == Materialization::Ephemeral => {
                if seen.insert(dep.name.clone()) {
                    collect_ephemeral(defs, dep, ctes, reads, seen);
                    ctes.push((dep.name.clone(), dep.sql.trim().trim_end_matches(';').to_string()));
                }
            }
            _ => {
                reads.insert(d.clone());
            }
        }
    }
}

/// `WITH a AS (...), b AS (...) <sql>`, merging into the SQL's own WITH if it has one.
fn with_ctes(sql: &str, ctes: &[(String, String)]) -> String {
    let body = sql.trim().trim_end_matches(';').trim_end();
    if ctes.is_empty() {
        return body.to_string();
    }
    let defs: Vec<String> = ctes.iter().map(|(n, s)| format!("\"{n}\" AS (\n{s}\n)")).collect();
    let head = body.get(..4).unwrap_or_default();
    if head.eq_ignore_ascii_case("with") && body[4..].starts_with(char::is_whitespace) {
        format!("WITH {},\n{}", defs.join(",\n"), body[4..].trim_start())
    } else {
        format!("WITH {}\n{body}", defs.join(",\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctes_merge_into_an_existing_with() {
        let ctes = vec![("e".to_string(), "select 1 as x".to_string())];
        assert_eq!(with_ctes("select * from e;", &ctes), "WITH \"e\" AS (\nselect 1 as x\n)\nselect * from e");
        assert_eq!(
            with_ctes("WITH a AS (select * from e) select * from a", &ctes),
            "WITH \"e\" AS (\nselect 1 as x\n),\na AS (select * from e) select * from a"
        );
        assert_eq!(with_ctes(" select 2 ", &[]), "select 2");
    }
}
