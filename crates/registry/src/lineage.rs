//! Lineage: sources -> models -> feature views -> feature services, and, where the
//! SQL says so, which source columns feed each feature. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use amora_model::ProjectDefs;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

/// The lineage graph; its JSON form is stable for tools.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lineage {
    pub project: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// `table.column -> table.column` edges read from the models' SQL.
    pub columns: Vec<Edge>,
    /// Each feature (`view:feature`) and the source columns it is computed from.
    pub features: BTreeMap<String, Vec<String>>,
}

fn id(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

pub fn lineage(defs: &ProjectDefs) -> Lineage {
    let mut nodes = Vec::new();
    let mut edges = BTreeSet::new();
    for s in &defs.sources {
        nodes.push(Node { id: id("source", &s.name), kind: "source", name: s.name.clone() });
    }
    for m in &defs.models {
        nodes.push(Node { id: id("model", &m.name), kind: "model", name: m.name.clone() });
        for d in &m.depends_on {
            let from = if defs.source(d).is_some() { id("source", d) } else { id("model", d) };
            edges.insert(Edge { from, to: id("model", &m.name) });
        }
    }
    for v in defs.feature_views() {
        nodes.push(Node { id: id("feature_view", &v.decl.name), kind: "feature_view", name: v.decl.name.clone() });
        edges.insert(Edge { from: id("model", &v.model.name), to: id("feature_view", &v.decl.name) });
    }
    for s in defs.all_feature_services() {
        nodes.push(Node { id: id("feature_service", &s.name), kind: "feature_service", name: s.name.clone() });
        for item in &s.items {
            edges.insert(Edge { from: id("feature_view", &item.view), to: id("feature_service", &s.name) });
        }
    }
    // Column edges and, by walking them upstream, each feature's source columns.
    let mut columns = BTreeSet::new();
    let mut upstream: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &defs.models {
        for (col, from) in &m.column_lineage {
            let to = format!("{}.{col}", m.name);
            for f in from {
                columns.insert(Edge { from: f.clone(), to: to.clone() });
                upstream.entry(to.clone()).or_default().push(f.clone());
            }
        }
    }
    let mut features = BTreeMap::new();
    for v in defs.feature_views() {
        for f in &v.decl.features {
            let mut found = BTreeSet::new();
            let mut stack = vec![format!("{}.{f}", v.model.name)];
            let mut seen = BTreeSet::new();
            while let Some(c) = stack.pop() {
                if !seen.insert(c.clone()) {
                    continue;
                }
                let table = c.split('.').next().unwrap_or_default();
                if defs.source(table).is_some() {
                    found.insert(c.clone());
                }
                stack.extend(upstream.get(&c).into_iter().flatten().cloned());
            }
            features.insert(format!("{}:{f}", v.decl.name), found.into_iter().collect());
        }
    }
    Lineage {
        project: defs.name.clone(),
        nodes,
        edges: edges.into_iter().collect(),
        columns: columns.into_iter().collect(),
        features,
    }
}

impl Lineage {
    fn upstream_of(&self, node: &str) -> Vec<&str> {
        self.edges.iter().filter(|e| e.to == node).map(|e| e.from.as_str()).collect()
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("lineage of project {}\n", self.project);
        for (kind, title) in [
            ("source", "sources"),
            ("model", "models"),
            ("feature_view", "feature views"),
            ("feature_service", "feature services"),
        ] {
            let nodes: Vec<&Node> = self.nodes.iter().filter(|n| n.kind == kind).collect();
            if nodes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}:");
            for n in nodes {
                let up = self.upstream_of(&n.id);
                if up.is_empty() {
                    let _ = writeln!(out, "  {}", n.name);
                } else {
                    let _ = writeln!(out, "  {} <- {}", n.name, up.join(", "));
                }
            }
        }
        if !self.features.is_empty() {
            let _ = writeln!(out, "\nfeatures (source columns):");
            for (f, cols) in &self.features {
                let from = if cols.is_empty() { "(not traceable from the SQL)".to_string() } else { cols.join(", ") };
                let _ = writeln!(out, "  {f} <- {from}");
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serializable")
    }

    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", self.project);
        for n in &self.nodes {
            let shape = match n.kind {
                "source" => "cylinder",
                "model" => "box",
                "feature_view" => "component",
                _ => "ellipse",
            };
            let _ = writeln!(out, "  \"{}\" [label=\"{}\", shape={shape}];", n.id, n.name);
        }
        for e in &self.edges {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", e.from, e.to);
        }
        out.push_str("}\n");
        out
    }

    pub fn to_mermaid(&self) -> String {
        let safe = |s: &str| s.replace([':', '.', '-'], "_");
        let mut out = String::from("flowchart LR\n");
        for n in &self.nodes {
            let (open, close) = match n.kind {
                "source" => ("[(", ")]"),
                "model" => ("[", "]"),
                "feature_view" => ("[[", "]]"),
                _ => ("([", "])"),
            };
            let _ = writeln!(out, "  {}{open}\"{}\"{close}", safe(&n.id), n.name);
        }
        for e in &self.edges {
            let _ = writeln!(out, "  {} --> {}", safe(&e.from), safe(&e.to));
        }
        out
    }
}
