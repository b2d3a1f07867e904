//! Identifier rules: what names amora accepts for objects and projects.

/// Object names (models, columns, views, entities, services, sources):
/// a letter or `_`, then letters, digits or `_`; at most 128 characters.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if ok_first && name.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    Err(format!(
        "`{name}` is not a valid name; use a letter or `_` followed by letters, digits or `_` (at most 128), e.g. `{}`",
        suggest_identifier(name)
    ))
}

/// Project names follow Feast: letters, digits, `_` and `-`, not starting with `_` or `-`.
pub fn check_project_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok_first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Ok(());
    }
    Err(format!(
        "`{name}` is not a valid project name; use letters, digits, `_` and `-`, starting with a letter or digit"
    ))
}

fn suggest_identifier(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s.truncate(128);
    s
}

/// The closest candidate to `name`, if one is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_identifier("step_count_by_source").is_ok());
        assert!(check_identifier("_x1").is_ok());
        let err = check_identifier("value avg").unwrap_err();
        assert!(err.contains("value_avg"), "{err}");
        assert!(check_identifier("1abc").is_err());
        assert!(check_identifier("").is_err());
    }

    #[test]
    fn project_names() {
        assert!(check_project_name("health-demo_1").is_ok());
        assert!(check_project_name("-x").is_err());
        assert!(check_project_name("a b").is_err());
    }

    #[test]
    fn closest_name() {
        assert_eq!(closest("stesp", ["steps", "health"]), Some("steps"));
        assert_eq!(closest("zzz", ["steps", "health"]), None);
    }
}
