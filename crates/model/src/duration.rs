//! Durations as users write them: `3600`, `3600s`, `90m`, `1h`, `7d`, `2w`, `1d12h`.

/// Parses a duration into whole seconds. `0` means "no TTL" in Feast's sense.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!("invalid duration `{text}`; write a number of seconds or e.g. `30s`, `15m`, `1h`, `7d`, `2w`, `1d12h`")
    };
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(secs);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Formats seconds the way users write them (`7d`, `1h30m`, `0s`).
pub fn format_duration(mut secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&format!("{}{name}", secs / unit));
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("1d12h"), Ok(129_600));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "h", "1x", "1h3", "-5", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_back() {
        for s in [0, 1, 59, 3600, 5400, 604_800, 129_600] {
            assert_eq!(parse_duration(&format_duration(s)), Ok(s));
        }
        assert_eq!(format_duration(5400), "1h30m");
    }
}
