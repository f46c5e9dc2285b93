//! The layers of the standard library: core (the host, errors, the journal, the secret value,
//! value conversion, diffing, YAML/JSON helpers) → namespaces (`aws`, `k8s`, `helm`, ...) →
//! the runtime crate. This test reads `src/**/*.rs`, collects the `crate::<module>` (and
//! cross-module `super::<module>`) references of each top-level module, and fails on an import
//! circle or on a core module importing a namespace. The runtime's modules are checked for
//! circles the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The core modules: they import only each other. Every other top-level module is a namespace.
const CORE: &[&str] = &[
    "converge",
    "diff",
    "error",
    "host",
    "journal",
    "json",
    "secret_value",
    "suggest",
    "value",
    "yaml",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level module a file belongs to: `aws/iam.rs` → `aws`, `host.rs` → `host`.
fn module_of(rel: &str) -> Option<String> {
    let first = rel.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// `lib.rs`'s re-exports (`pub use error::{ErrorKind, HostError};`): name → module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            out.insert(name.trim().to_string(), module.to_string());
        }
    }
    out
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level names `text` references through `crate::` (a group `crate::{a::X, b}` counts
/// each member) and, in a top-level file, through `super::`. Comments are skipped.
fn references(text: &str, top_level_file: bool) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut prefixes = vec!["crate::"];
        if top_level_file {
            prefixes.push("super::");
        }
        for prefix in prefixes {
            for (i, _) in code.match_indices(prefix) {
                let before = code[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // `$crate::`, `my_crate::`
                }
                let rest = &code[i + prefix.len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or_default();
                    let mut depth = 0;
                    let mut start = true;
                    for (j, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => start = true,
                            c if start && !c.is_whitespace() => {
                                let name = ident_at(&group[j..]).to_string();
                                out.push((prefix == "super::", name));
                                start = false;
                            }
                            _ => {}
                        }
                    }
                } else {
                    out.push((prefix == "super::", ident_at(rest).to_string()));
                }
            }
        }
    }
    out.retain(|(_, n)| !n.is_empty() && n != "self" && n != "super");
    out
}

/// The import graph of the files (`(path relative to src, text)`), and the references that
/// name neither a module nor a re-export (a checker that cannot resolve must not pass).
fn graph(files: &[(String, String)]) -> (Graph, Vec<String>) {
    let lib = files
        .iter()
        .find(|(p, _)| p == "lib.rs")
        .map(|(_, t)| t.as_str())
        .unwrap_or_default();
    let names = reexports(lib);
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    let mut g = Graph::new();
    let mut unknown = Vec::new();
    for (path, text) in files {
        let Some(from) = module_of(path) else {
            continue;
        };
        let top_level_file = !path.contains('/');
        let edges = g.entry(from.clone()).or_default();
        for (via_super, name) in references(text, top_level_file) {
            let to = if modules.contains(&name) {
                name
            } else if let Some(m) = names.get(&name) {
                m.clone()
            } else if via_super {
                continue; // `super::x` inside an inline module of this file
            } else {
                unknown.push(format!("{path}: `crate::{name}`"));
                continue;
            };
            if to != from {
                edges.insert(to);
            }
        }
    }
    (g, unknown)
}

/// A circle of imports, if any (depth-first search).
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

/// Core modules importing a namespace: `core → namespace` pairs.
fn core_violations(g: &Graph) -> Vec<String> {
    g.iter()
        .filter(|(from, _)| CORE.contains(&from.as_str()))
        .flat_map(|(from, to)| {
            to.iter()
                .filter(|t| !CORE.contains(&t.as_str()))
                .map(move |t| format!("{from} → {t}"))
        })
        .collect()
}

fn read_sources(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            read_sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(base).expect("below src");
            let rel = rel.to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).expect("a source file")));
        }
    }
}

/// The import graph of the crate whose sources are in `dir` (relative to this crate), with
/// every reference resolved and no circle.
fn acyclic_graph_of(dir: &str) -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    read_sources(&src, &src, &mut files);
    let (g, unknown) = graph(&files);
    assert!(unknown.is_empty(), "unresolved references: {unknown:?}");
    assert_eq!(find_cycle(&g), None, "an import circle");
    g
}

#[test]
fn core_imports_no_namespace_and_no_module_imports_in_a_circle() {
    let g = acyclic_graph_of("src");
    for core in CORE {
        assert!(g.contains_key(*core), "core module `{core}` is gone");
    }
    assert!(g.contains_key("aws") && g.contains_key("k8s"), "{g:?}");
    assert_eq!(
        core_violations(&g),
        Vec::<String>::new(),
        "core imports a namespace"
    );
}

/// The runtime crate's modules (`cli`, `repl`, `session` ...) import each other in no circle
/// either.
#[test]
fn runtime_modules_import_in_no_circle() {
    let g = acyclic_graph_of("../runtime/src");
    assert!(g.contains_key("cli") && g.contains_key("repl"), "{g:?}");
}

/// The checker itself finds a circle and a core module importing a namespace.
#[test]
fn the_checker_finds_circles_and_upward_imports() {
    let file = |p: &str, t: &str| (p.to_string(), t.to_string());
    let files = vec![
        file(
            "lib.rs",
            "pub use host::{Host, Mode};\npub use error::HostError;",
        ),
        file(
            "host.rs",
            "use crate::error::X;\n// crate::k8s in a comment\nuse crate::{journal::J, aws::Clients};",
        ),
        file("error.rs", "fn f() -> crate::Host {}"),
        file("journal.rs", ""),
        file("aws/mod.rs", "use crate::host::Host;\nuse super::iam;"),
        file("aws/iam.rs", "use super::Clients;"),
        file("k8s/mod.rs", "use crate::HostError;"),
    ];
    let (g, unknown) = graph(&files);
    assert!(unknown.is_empty(), "{unknown:?}");
    let edges = |m: &str| g[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(edges("host"), ["aws", "error", "journal"]);
    assert_eq!(edges("error"), ["host"]);
    assert_eq!(edges("aws"), ["host"]);
    assert_eq!(edges("k8s"), ["error"]);
    let cycle = find_cycle(&g).expect("host → error → host is a circle");
    assert_eq!(cycle.first(), cycle.last());
    assert!(core_violations(&g).contains(&"host → aws".to_string()));
    let (_, unknown) = graph(&[file("a.rs", "use crate::nowhere::X;")]);
    assert_eq!(unknown, ["a.rs: `crate::nowhere`"]);
}
