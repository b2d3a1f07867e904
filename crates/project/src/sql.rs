//! What a model's SQL reads: the tables it depends on and, where the SQL says so
//! plainly, which upstream columns feed each output column.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// What the SQL of one model reads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqlInfo {
    /// Tables referenced in FROM/JOIN (CTE names excluded), in first-seen order.
    pub tables: Vec<String>,
    /// Output column -> upstream `table.column`s.
    pub column_lineage: BTreeMap<String, Vec<String>>,
}

/// Parses a model's SELECT. The error is the parser's message with its position.
pub fn analyze(sql: &str) -> Result<SqlInfo, String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| e.to_string())?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(format!(
            "a model is one SELECT statement; found {} statement(s){}",
            statements.len(),
            if statements.is_empty() { "" } else { " or a statement that is not a query" }
        ));
    };
    let mut collector = Relations::default();
    let _ = query.visit(&mut collector);
    let tables = collector.tables.into_iter().filter(|t| !collector.ctes.contains(t)).fold(Vec::new(), |mut acc, t| {
        if !acc.contains(&t) {
            acc.push(t);
        }
        acc
    });
    Ok(SqlInfo { column_lineage: column_lineage(query, &collector.ctes), tables })
}

#[derive(Default)]
struct Relations {
    tables: Vec<String>,
    ctes: BTreeSet<String>,
}

fn last_part(name: &ObjectName) -> Option<String> {
    name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.clone())
}

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let Some(name) = last_part(relation) {
            self.tables.push(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.clone());
            }
        }
        ControlFlow::Continue(())
    }
}

#[derive(Default)]
struct Columns(Vec<(Option<String>, String)>);

impl Visitor for Columns {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(i) => self.0.push((None, i.value.clone())),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let n = parts.len();
                self.0.push((Some(parts[n - 2].value.clone()), parts[n - 1].value.clone()));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn column_lineage(query: &Query, ctes: &BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let SetExpr::Select(select) = query.body.as_ref() else {
        return out;
    };
    // alias or table name -> table, for plain tables in FROM/JOIN.
    let mut tables: BTreeMap<String, String> = BTreeMap::new();
    let mut count = 0;
    for twj in &select.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            count += 1;
            if let TableFactor::Table { name, alias, .. } = factor {
                if let Some(t) = last_part(name).filter(|t| !ctes.contains(t)) {
                    if let Some(a) = alias {
                        tables.insert(a.name.value.clone(), t.clone());
                    }
                    tables.insert(t.clone(), t);
                }
            }
        }
    }
    let single = (count == 1).then(|| tables.values().next().cloned()).flatten();
    for item in &select.projection {
        let (name, expr) = match item {
            SelectItem::UnnamedExpr(e @ Expr::Identifier(i)) => (i.value.clone(), e),
            SelectItem::UnnamedExpr(e @ Expr::CompoundIdentifier(p)) => (p.last().expect("parts").value.clone(), e),
            SelectItem::ExprWithAlias { expr, alias } => (alias.value.clone(), expr),
            _ => continue,
        };
        let mut cols = Columns::default();
        let _ = expr.visit(&mut cols);
        let mut upstream: Vec<String> = cols
            .0
            .into_iter()
            .filter_map(|(q, c)| {
                let table = match q {
                    Some(q) => tables.get(&q).cloned(),
                    None => single.clone(),
                }?;
                Some(format!("{table}.{c}"))
            })
            .collect();
        upstream.sort();
        upstream.dedup();
        out.insert(name, upstream);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tables_not_ctes() {
        let info = analyze(
            "with recent as (select * from steps where x > 1)
             select r.a, u.b from recent r join users u on r.id = u.id join other.schema.events e on e.id = r.id",
        )
        .unwrap();
        assert_eq!(info.tables, vec!["steps", "users", "events"]);
    }

    #[test]
    fn column_lineage_of_a_simple_select() {
        let info = analyze(
            "SELECT source_name, date_trunc('hour', start_date) AS event_timestamp, AVG(value) AS value_avg,
                    COUNT(*) AS value_count FROM steps GROUP BY 1, 2",
        )
        .unwrap();
        assert_eq!(info.tables, vec!["steps"]);
        assert_eq!(info.column_lineage["value_avg"], vec!["steps.value"]);
        assert_eq!(info.column_lineage["event_timestamp"], vec!["steps.start_date"]);
        assert_eq!(info.column_lineage["source_name"], vec!["steps.source_name"]);
        assert!(info.column_lineage["value_count"].is_empty());
    }

    #[test]
    fn qualified_columns_resolve_through_aliases() {
        let info = analyze("select a.x + b.y as s from t1 a join t2 b on a.id = b.id").unwrap();
        assert_eq!(info.column_lineage["s"], vec!["t1.x", "t2.y"]);
    }

    #[test]
    fn errors_carry_the_position() {
        let e = analyze("select a from t\n where a = )").unwrap_err();
        assert!(e.contains("Line: 2"), "{e}");
        assert!(analyze("select 1; select 2").unwrap_err().contains("2 statement"));
        assert!(analyze("delete from t").is_err());
    }
}
