//! The model dependency graph: topological generations and cycle detection.

use std::collections::{BTreeMap, BTreeSet};

/// Orders `nodes` into generations: every node comes after all of its dependencies,
/// and the nodes of one generation are independent of each other.
/// Dependencies outside `nodes` (sources) are ignored. On a cycle, returns one
/// cycle as a path `a -> b -> a`.
pub fn generations(deps: &BTreeMap<String, Vec<String>>) -> Result<Vec<Vec<String>>, Vec<String>> {
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = deps
        .iter()
        .map(|(n, ds)| {
            let inner = ds.iter().map(String::as_str).filter(|d| deps.contains_key(*d)).collect();
            (n.as_str(), inner)
        })
        .collect();
    let mut out = Vec::new();
    while !remaining.is_empty() {
        let ready: Vec<&str> = remaining.iter().filter(|(_, ds)| ds.is_empty()).map(|(n, _)| *n).collect();
        if ready.is_empty() {
            return Err(find_cycle(&remaining));
        }
        for n in &ready {
            remaining.remove(n);
        }
        for ds in remaining.values_mut() {
            for n in &ready {
                ds.remove(n);
            }
        }
        out.push(ready.into_iter().map(String::from).collect());
    }
    Ok(out)
}

fn find_cycle(remaining: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    // Every remaining node has a remaining dependency: walk until a node repeats.
    let start = *remaining.keys().next().expect("non-empty");
    let mut path = vec![start];
    let mut current = start;
    loop {
        let next = *remaining[current].iter().next().expect("a dependency");
        if let Some(pos) = path.iter().position(|n| *n == next) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(next.to_string());
            return cycle;
        }
        path.push(next);
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges.iter().map(|(n, ds)| (n.to_string(), ds.iter().map(|d| d.to_string()).collect())).collect()
    }

    #[test]
    fn orders_generations() {
        let g = graph(&[("c", &["a", "b"]), ("b", &["a", "health"]), ("a", &[]), ("d", &[])]);
        assert_eq!(
            generations(&g).unwrap(),
            vec![vec!["a".to_string(), "d".into()], vec!["b".into()], vec!["c".into()]]
        );
    }

    #[test]
    fn reports_a_cycle() {
        let g = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("x", &[])]);
        let cycle = generations(&g).unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
    }
}
