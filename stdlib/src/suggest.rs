//! "Did you mean" suggestions for unknown names (functions, options, config keys).

/// The candidate closest to `name`, if one is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_typos_only() {
        assert_eq!(
            super::closest("ensure_rol", ["ensure_role", "get_role"]),
            Some("ensure_role")
        );
        assert_eq!(super::closest("zzz", ["ensure_role"]), None);
    }
}
