//! The `checks` namespace: the small pieces `recipes/preflight.rhai` needs that are awkward in a
//! script — comparing version strings, reading Kubernetes quantities, and rendering the one
//! requirements table (requirement, found, verdict, how to fix). Not named `preflight`, so a
//! recipe can `import "preflight" as preflight` without hiding it.

use rhai::plugin::*;
use rhai::{Array, Map};

use crate::error::{HostError, RhaiResult};

/// The numeric parts of a version string: `v1.30.4-eks-a737599` → `[1, 30, 4]`,
/// `1.29+` → `[1, 29]`, `3.4.0-SNAPSHOT` → `[3, 4, 0]`. Stops at the first non-numeric part.
pub fn version_parts(version: &str) -> Vec<u64> {
    let v = version.trim().trim_start_matches(['v', 'V']);
    let core = v.split(['-', ' ', '(']).next().unwrap_or_default();
    let mut parts = Vec::new();
    for p in core.split('.') {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u64>() {
            Ok(n) => parts.push(n),
            Err(_) => break,
        }
        if digits.len() != p.len() {
            break;
        }
    }
    parts
}

/// `found >= min`, comparing numeric parts (missing parts count as 0). `None` when `found` has
/// no version number at all.
pub fn at_least(found: &str, min: &str) -> Option<bool> {
    let f = version_parts(found);
    if f.is_empty() {
        return None;
    }
    let m = version_parts(min);
    let n = f.len().max(m.len());
    let pad = |v: &[u64]| {
        (0..n)
            .map(|i| v.get(i).copied().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    Some(pad(&f) >= pad(&m))
}

/// A Kubernetes quantity in base units: `3920m` → 3.92, `16Gi` → 17179869184, `1e3` → 1000.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Ei" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult)
}

const HEADERS: [&str; 4] = ["requirement", "found", "verdict", "how to fix"];

/// Renders rows (`#{requirement, found, verdict, fix}`) as an aligned text table; the last
/// column is not padded.
pub fn render_table(rows: &[[String; 4]]) -> String {
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 3 {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(HEADERS)];
    out.push(line([
        &"-".repeat(widths[0]),
        &"-".repeat(widths[1]),
        &"-".repeat(widths[2]),
        &"-".repeat(widths[3]),
    ]));
    for row in rows {
        out.push(line([&row[0], &row[1], &row[2], &row[3]]));
    }
    out.join("\n")
}

fn cell(row: &Map, key: &str) -> String {
    match row.get(key) {
        None => String::new(),
        Some(v) if v.is_unit() => String::new(),
        Some(v) => crate::secret_value::mask_text(&v.to_string().replace('\n', " ")),
    }
}

/// The `checks` namespace.
#[export_module]
pub mod checks_module {
    use super::*;

    /// `true` when version `found` is at least `min`. Leading `v` and suffixes are ignored
    /// (`v1.30.4-eks-a737599`, `1.29+`, `3.4.0-SNAPSHOT`); a `found` without any number is
    /// an `input` error.
    ///
    /// ```rhai
    /// checks::version_at_least("v1.30.4-eks-a737599", "1.24")   // true
    /// checks::version_at_least("3.3.9", "3.4")                  // false
    /// ```
    #[rhai_fn(return_raw)]
    pub fn version_at_least(ctx: NativeCallContext, found: &str, min: &str) -> RhaiResult<bool> {
        crate::host::track(&ctx);
        at_least(found, min)
            .ok_or_else(|| HostError::input(format!("`{found}` is not a version number")).into())
    }

    /// A Kubernetes quantity in base units (cores or bytes) as a float: `"3920m"` → 3.92,
    /// `"16Gi"` → 17179869184.0. An unreadable quantity is an `input` error.
    ///
    /// ```rhai
    /// let gib = checks::quantity(node.status.allocatable.memory) / 1073741824.0;
    /// ```
    #[rhai_fn(return_raw)]
    pub fn quantity(ctx: NativeCallContext, q: Dynamic) -> RhaiResult<f64> {
        crate::host::track(&ctx);
        if let Ok(i) = q.as_int() {
            return Ok(i as f64);
        }
        let s = q.to_string();
        parse_quantity(&s)
            .ok_or_else(|| HostError::input(format!("`{s}` is not a Kubernetes quantity")).into())
    }

    /// Renders the requirements table: one row per map `#{requirement, found, verdict, fix}`,
    /// columns aligned, secrets masked. Returns the text (print it).
    ///
    /// ```rhai
    /// print(checks::table([
    ///     #{ requirement: "kubernetes >= 1.24", found: "1.30", verdict: "ok", fix: "" },
    /// ]));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn table(ctx: NativeCallContext, rows: Array) -> RhaiResult<String> {
        crate::host::track(&ctx);
        let mut cells = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let map = row.read_lock::<Map>().ok_or_else(|| {
                HostError::input(format!(
                    "row {i} of `checks::table` must be a map, not `{}`",
                    row.type_name()
                ))
            })?;
            cells.push([
                cell(&map, "requirement"),
                cell(&map, "found"),
                cell(&map, "verdict"),
                cell(&map, "fix"),
            ]);
        }
        Ok(render_table(&cells))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_versions_with_prefixes_and_suffixes() {
        assert_eq!(at_least("v1.30.4-eks-a737599", "1.24"), Some(true));
        assert_eq!(at_least("1.29+", "1.24"), Some(true));
        assert_eq!(at_least("1.23", "1.24"), Some(false));
        assert_eq!(at_least("3.4.0-SNAPSHOT", "3.4"), Some(true));
        assert_eq!(at_least("v3.3.9", "3.4"), Some(false));
        assert_eq!(at_least("8.0.36", "8.0"), Some(true));
        assert_eq!(at_least("12", "12.0"), Some(true));
        assert_eq!(at_least("unknown", "1"), None);
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity("4"), Some(4.0));
        assert_eq!(parse_quantity("3920m"), Some(3.92));
        assert_eq!(
            parse_quantity("16Gi"),
            Some(16.0 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(parse_quantity("15896480Ki"), Some(15896480.0 * 1024.0));
        assert_eq!(parse_quantity("120G"), Some(120e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("4 cores"), None);
    }

    #[test]
    fn renders_an_aligned_table() {
        let t = render_table(&[
            [
                "kubernetes".into(),
                "1.30".into(),
                "ok".into(),
                String::new(),
            ],
            [
                "nodes".into(),
                "2 of 3".into(),
                "FAIL".into(),
                "add a node".into(),
            ],
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "requirement  found   verdict  how to fix");
        assert_eq!(lines[2], "kubernetes   1.30    ok");
        assert_eq!(lines[3], "nodes        2 of 3  FAIL     add a node");
    }
}
