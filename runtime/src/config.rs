//! The customer config: YAML files merged in order, then `--set key.path=value`, exposed to
//! scripts as the constant `config`. Every key remembers where it was set (`file:line:col`), so
//! `require` and `validate_config` name the file and position of a missing, mistyped or
//! unknown key before any remote call is made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use collate_stdlib::secret::{self, Secret};
use collate_stdlib::value::{from_json, join_path};
use collate_stdlib::yaml::{Pos, key_positions, parse_one};
use collate_stdlib::{ErrorKind, Host, HostError, suggest};
use rhai::{Dynamic, Map};
use serde_json::Value;

/// Where a config key was set.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: String,
    pub pos: Option<Pos>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}", self.file, p.line, p.col),
            None => f.write_str(&self.file),
        }
    }
}

/// The run lock of `run_lock:` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLock {
    pub namespace: String,
    pub name: String,
    pub ttl: i64,
    pub wait: i64,
}

/// The merged customer config.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub value: Value,
    origins: HashMap<String, Origin>,
    sources: Vec<String>,
    /// `collate-run check`: a secret whose environment variable or file is missing is not an
    /// error but "needed at run time" (a fork's CI checks configs without their secrets).
    pub defer_missing_secrets: bool,
    /// The secrets deferred so far: `database.password (environment variable DB_PASSWORD)`.
    deferred: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Config {
    /// Loads and merges `files`, then applies `sets` (`key.path=value`, the value read as YAML).
    pub fn load(files: &[PathBuf], sets: &[String]) -> Result<Config, HostError> {
        let mut cfg = Config {
            value: Value::Object(Default::default()),
            ..Default::default()
        };
        for file in files {
            cfg.merge_file(file)?;
        }
        for set in sets {
            cfg.apply_set(set)?;
        }
        Ok(cfg)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), HostError> {
        let shown = collate_stdlib::host::display_path(path);
        let text = std::fs::read_to_string(path)
            .map_err(|e| HostError::config(format!("cannot read config file `{shown}`: {e}")))?;
        let value =
            parse_one(&text, &format!("`{shown}`")).map_err(|e| HostError::config(e.message))?;
        let value = match value {
            Value::Null => Value::Object(Default::default()),
            Value::Object(_) => value,
            other => {
                return Err(HostError::config(format!(
                    "config file `{shown}` must hold a map of keys, not {}",
                    json_type(&other)
                )));
            }
        };
        for (path, pos) in key_positions(&text) {
            self.origins.insert(
                path,
                Origin {
                    file: shown.clone(),
                    pos: Some(pos),
                },
            );
        }
        merge(&mut self.value, value);
        self.sources.push(shown);
        Ok(())
    }

    fn apply_set(&mut self, set: &str) -> Result<(), HostError> {
        let Some((key, raw)) = set.split_once('=') else {
            return Err(HostError::config(format!(
                "`--set {set}` must have the form `key.path=value`"
            )));
        };
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(HostError::config(format!(
                "`--set {set}`: `{key}` is not a key path"
            )));
        }
        let value = if raw.is_empty() {
            Value::String(String::new())
        } else {
            // Read as YAML (`true`, `5`, `[a, b]`); what YAML refuses — a git sha like `88e56720`
            // overflows as a float — is taken as the string it is, like helm's --set.
            parse_one(raw, &format!("`--set {key}`"))
                .unwrap_or_else(|_| Value::String(raw.to_string()))
        };
        let mut node = &mut self.value;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let obj = match node {
                Value::Object(o) => o,
                other => {
                    *other = Value::Object(Default::default());
                    other.as_object_mut().expect("just made an object")
                }
            };
            if i + 1 == parts.len() {
                obj.insert(part.to_string(), value.clone());
                break;
            }
            node = obj
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
        }
        let path = parts
            .iter()
            .fold(String::new(), |acc, p| join_path(&acc, p));
        self.origins.insert(
            path,
            Origin {
                file: format!("--set {key}"),
                pos: None,
            },
        );
        if !self.sources.iter().any(|s| s == "--set") {
            self.sources.push("--set".into());
        }
        Ok(())
    }

    /// The config as the Rhai constant `config`.
    pub fn to_dynamic(&self) -> Dynamic {
        from_json(&self.value)
    }

    /// Where `path` was set, or the nearest parent that was.
    pub fn origin(&self, path: &str) -> Option<&Origin> {
        let mut p = path.to_string();
        loop {
            if let Some(o) = self.origins.get(&p) {
                return Some(o);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    /// "customers/acme.yaml, --set" or "no config file (pass --config FILE)".
    pub fn sources(&self) -> String {
        if self.sources.is_empty() {
            "no config file was given (pass `--config FILE`)".into()
        } else {
            self.sources.join(", ")
        }
    }

    /// Records a secret that `check` could not read (see [`Config::defer_missing_secrets`]).
    fn defer(&self, what: String) {
        let mut d = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        if !d.contains(&what) {
            d.push(what);
        }
    }

    /// The secrets `check` deferred: needed at run time.
    pub fn deferred_secrets(&self) -> Vec<String> {
        self.deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn missing(&self, key: &str) -> HostError {
        HostError::config(format!(
            "missing config key `{key}` (looked in {})",
            self.sources()
        ))
        .with_hint(format!(
            "add `{key}` to the customer config, or pass `--set {key}=...`"
        ))
    }

    /// The run lock the config asks for (`run_lock: {namespace, name, ttl, wait}`), checked
    /// before anything runs: a wrong type, a too short ttl or an unknown key is a config error
    /// pointing at the key, never a silently skipped lock.
    pub fn run_lock(&self) -> Result<Option<RunLock>, HostError> {
        let Some(lock) = self.value.get("run_lock").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let at = |key: &str| {
            self.origin(&format!("run_lock.{key}"))
                .map(|o| format!("\n    --> {o}"))
                .unwrap_or_default()
        };
        let fail = |key: &str, msg: String| {
            HostError::config(format!("{msg}{}", at(key))).with_hint(
                "run_lock is `{namespace: <ns>, name: collate-run, ttl: 300, wait: 0}` (ttl and wait in seconds)",
            )
        };
        let Some(map) = lock.as_object() else {
            return Err(fail("", "config key `run_lock` must be a map".into()));
        };
        if let Some(k) = map
            .keys()
            .find(|k| !["namespace", "name", "ttl", "wait"].contains(&k.as_str()))
        {
            return Err(fail(k, format!("unknown config key `run_lock.{k}`")));
        }
        let text = |key: &str, default: Option<&str>| -> Result<String, HostError> {
            match map.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                None if default.is_some() => Ok(default.unwrap_or_default().to_string()),
                None => Err(fail(key, format!("missing config key `run_lock.{key}`"))),
                Some(_) => Err(fail(
                    key,
                    format!("config key `run_lock.{key}` must be a non-empty string"),
                )),
            }
        };
        let int = |key: &str, default: i64, min: i64| -> Result<i64, HostError> {
            match map.get(key) {
                None => Ok(default),
                Some(v) => v.as_i64().filter(|n| *n >= min).ok_or_else(|| {
                    fail(
                        key,
                        format!("config key `run_lock.{key}` must be a whole number of seconds, at least {min}, not `{v}`"),
                    )
                }),
            }
        };
        Ok(Some(RunLock {
            namespace: text("namespace", None)?,
            name: text("name", Some("collate-run"))?,
            ttl: int("ttl", 300, 5)?,
            wait: int("wait", 0, 0)?,
        }))
    }

    /// `require(config, keys)`: every key must be present and not null.
    pub fn require(&self, config: &Dynamic, keys: &[String]) -> Result<(), HostError> {
        let value = collate_stdlib::value::to_json(config, collate_stdlib::value::Secrets::Mask)?;
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| lookup(&value, k).is_none_or(Value::is_null))
            .collect();
        match missing.as_slice() {
            [] => Ok(()),
            [one] => Err(self.missing(one)),
            many => Err(HostError::config(format!(
                "missing config keys {} (looked in {})",
                many.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.sources()
            ))),
        }
    }

    /// `validate_config(config, schema)`: checks types, rejects unknown keys, fills defaults and
    /// turns `secret` keys into Secrets. All problems are reported at once.
    /// `host` reads secrets kept in AWS (`{aws_secret: ...}`, `{ssm: ...}`); without one they
    /// are refused.
    pub fn validate(
        &self,
        config: &Dynamic,
        schema: &Map,
        host: Option<&Host>,
    ) -> Result<Dynamic, HostError> {
        let specs = parse_schema(schema)?;
        let mut value =
            collate_stdlib::value::to_json(config, collate_stdlib::value::Secrets::Reveal)?;
        let mut problems: Vec<(Option<Origin>, String, Option<String>)> = Vec::new();

        // Unknown keys.
        let mut leaves = Vec::new();
        collect_leaves(&value, "", &specs, &mut leaves);
        let names: Vec<&str> = specs.iter().map(|s| s.path.as_str()).collect();
        for leaf in leaves {
            let hint = suggest::closest(&leaf, names.iter().copied())
                .map(|s| format!("did you mean `{s}`?"));
            problems.push((
                self.origin(&leaf).cloned(),
                format!("unknown config key `{leaf}`"),
                hint,
            ));
        }

        // Declared keys: presence, defaults, types, secrets.
        let mut secrets: Vec<(String, Secret)> = Vec::new();
        for spec in &specs {
            let found = lookup(&value, &spec.path).filter(|v| !v.is_null()).cloned();
            let Some(found) = found else {
                if let Some(default) = &spec.default {
                    set_path(&mut value, &spec.path, default.clone());
                } else if !spec.optional {
                    let e = self.missing(&spec.path);
                    problems.push((None, e.message, spec.hint.clone().or(e.hint)));
                }
                continue;
            };
            let origin = self.origin(&spec.path).cloned();
            if spec.ty == "secret" {
                match secret_from_ref(&spec.path, &found, self, host) {
                    Ok(s) => secrets.push((spec.path.clone(), s)),
                    Err(e) => problems.push((origin, e.message, e.hint)),
                }
                continue;
            }
            if !type_matches(&spec.ty, &found) {
                problems.push((
                    origin,
                    format!(
                        "config key `{}` must be {} {}, not {}",
                        spec.path,
                        article(&spec.ty),
                        spec.ty,
                        json_type(&found)
                    ),
                    None,
                ));
            }
        }

        if !problems.is_empty() {
            let n = problems.len();
            let mut lines = problems.iter().map(|(o, msg, hint)| {
                let at = o
                    .as_ref()
                    .map(|o| format!("\n    --> {o}"))
                    .unwrap_or_default();
                let hint = hint
                    .as_ref()
                    .map(|h| format!("\n    = hint: {h}"))
                    .unwrap_or_default();
                format!("{msg}{at}{hint}")
            });
            let message = if n == 1 {
                lines.next().unwrap_or_default()
            } else {
                format!(
                    "{n} problems in the config:\n  - {}",
                    lines.collect::<Vec<_>>().join("\n  - ")
                )
            };
            return Err(HostError::config(message));
        }

        let mut out = from_json(&value);
        for (path, s) in secrets {
            set_dynamic_path(&mut out, &path, Dynamic::from(s));
        }
        Ok(out)
    }
}

struct Spec {
    path: String,
    ty: String,
    optional: bool,
    default: Option<Value>,
    /// What to do when a required key is missing (`#{type, hint}`), instead of the generic hint.
    hint: Option<String>,
}

const TYPES: &[&str] = &[
    "string", "int", "bool", "list", "map", "any", "secret", "number",
];

fn parse_schema(schema: &Map) -> Result<Vec<Spec>, HostError> {
    let mut specs = Vec::new();
    for (path, spec) in schema {
        let (ty, default, hint) = if spec.is_string() {
            (spec.to_string(), None, None)
        } else if let Some(m) = spec.read_lock::<Map>() {
            let ty = m
                .get("type")
                .map(|t| t.to_string())
                .unwrap_or_else(|| "any".into());
            let default = match m.get("default") {
                Some(d) => Some(collate_stdlib::value::to_json(
                    d,
                    collate_stdlib::value::Secrets::Reveal,
                )?),
                None => None,
            };
            let hint = m.get("hint").map(|h| h.to_string());
            (ty, default, hint)
        } else {
            return Err(HostError::input(format!(
                "schema entry `{path}` must be a type string or a map `#{{type, default, hint}}`"
            )));
        };
        let optional = ty.ends_with('?') || default.is_some();
        let ty = ty.trim_end_matches('?').to_string();
        if !TYPES.contains(&ty.as_str()) {
            return Err(HostError::input(format!(
                "schema entry `{path}` has unknown type `{ty}` (known: {})",
                TYPES.join(", ")
            )));
        }
        specs.push(Spec {
            path: path.to_string(),
            ty,
            optional,
            default,
            hint,
        });
    }
    Ok(specs)
}

/// Top-level keys the runtime itself reads (not part of any recipe's schema).
pub const RUNTIME_KEYS: &[&str] = &["run_lock"];

fn collect_leaves(v: &Value, path: &str, specs: &[Spec], out: &mut Vec<String>) {
    if RUNTIME_KEYS.contains(&path) {
        return;
    }
    if !path.is_empty()
        && let Some(spec) = specs.iter().find(|s| s.path == path)
        && (matches!(spec.ty.as_str(), "map" | "any" | "secret" | "list") || !v.is_object())
    {
        return;
    }
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                collect_leaves(child, &join_path(path, k), specs, out);
            }
        }
        _ => {
            if !path.is_empty() && !specs.iter().any(|s| s.path == path) {
                out.push(path.to_string());
            }
        }
    }
}

fn secret_from_ref(
    path: &str,
    v: &Value,
    cfg: &Config,
    host: Option<&Host>,
) -> Result<Secret, HostError> {
    let how = "`{env: VAR}`, `{file: PATH}`, `{aws_secret: NAME_OR_ARN, key: JSON_KEY}`, `{ssm: /path}`, or `{plaintext: \"...\"}` to mark a plain-text value";
    let Some(o) = v.as_object() else {
        return Err(HostError::config(format!(
            "config key `{path}` holds a plain-text secret, which is refused"
        ))
        .with_hint(format!("use {how}")));
    };
    let only = |k: &str| o.len() == 1 && o.get(k).is_some_and(Value::is_string);
    let s = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let deferred = |found: Result<Secret, HostError>, what: String| match found {
        Err(e)
            if cfg.defer_missing_secrets
                && matches!(
                    e.kind,
                    ErrorKind::Config | ErrorKind::Io | ErrorKind::CheckStop
                ) =>
        {
            cfg.defer(format!("`{path}` ({what})"));
            Ok(Secret::new(
                String::new(),
                format!("config {path}, needed at run time"),
            ))
        }
        other => other,
    };
    if only("env") {
        let var = s("env");
        deferred(
            secret::from_env(&var),
            format!("environment variable `{var}`"),
        )
    } else if only("file") {
        let base = cfg
            .origin(path)
            .and_then(|o| Path::new(&o.file).parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let file = base.join(s("file"));
        let shown = file.display().to_string();
        deferred(secret::from_file(&file), format!("file `{shown}`"))
    } else if o.get("aws_secret").is_some_and(Value::is_string)
        && (o.len() == 1 || (o.len() == 2 && o.get("key").is_some_and(Value::is_string)))
    {
        let id = s("aws_secret");
        let key = o.get("key").and_then(Value::as_str);
        let host = aws_host(path, host)?;
        let what = format!("AWS Secrets Manager secret `{id}`");
        deferred(
            collate_stdlib::aws::secrets::secrets_manager(host, &id, key)
                .map_err(|e| at_key(e, path)),
            what,
        )
    } else if only("ssm") {
        let name = s("ssm");
        let host = aws_host(path, host)?;
        deferred(
            collate_stdlib::aws::secrets::ssm(host, &name).map_err(|e| at_key(e, path)),
            format!("SSM parameter `{name}`"),
        )
    } else if only("plaintext") {
        Ok(Secret::new(s("plaintext"), format!("config {path}")))
    } else {
        Err(
            HostError::config(format!("config key `{path}` is not a secret reference"))
                .with_hint(format!("use {how}")),
        )
    }
}

/// The host that reads a secret kept in AWS.
fn aws_host<'a>(path: &str, host: Option<&'a Host>) -> Result<&'a Host, HostError> {
    host.ok_or_else(|| {
        HostError::config(format!(
            "config key `{path}` is kept in AWS, which cannot be read here"
        ))
    })
}

/// An error reading the secret of config key `path`, naming the key.
fn at_key(e: HostError, path: &str) -> HostError {
    let hint = e.hint.clone();
    let mut out = HostError::new(e.kind, format!("config key `{path}`: {}", e.message));
    if let Some(h) = hint {
        out = out.with_hint(h);
    }
    out
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "int" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "bool" => v.is_boolean(),
        "list" => v.is_array(),
        "map" => v.is_object(),
        _ => true,
    }
}

fn article(ty: &str) -> &'static str {
    if ty.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an int",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Deep merge: maps merge key by key; anything else is replaced.
/// The keys that make a map a secret reference (`{env: VAR}`, `{aws_secret: ..., key: ...}`).
const SECRET_REF_KEYS: &[&str] = &["env", "file", "plaintext", "aws_secret", "ssm"];

/// Whether `v` has the shape of a secret reference: one of `env`, `file`, `plaintext`,
/// `aws_secret`, `ssm` (and `key` beside `aws_secret`), every value a string. Any other map
/// (e.g. `env:` overrides, a map of strings) merges key by key.
fn is_secret_ref(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    let refs = o
        .keys()
        .filter(|k| SECRET_REF_KEYS.contains(&k.as_str()))
        .count();
    refs == 1
        && o.iter().all(|(k, v)| {
            v.is_string()
                && (SECRET_REF_KEYS.contains(&k.as_str())
                    || (k == "key" && o.contains_key("aws_secret")))
        })
}

/// `over` merged into `base`, map by map; a secret reference replaces whatever was there (a
/// later config that keeps the password in AWS instead of an environment variable must not
/// leave a reference with both).
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (slot, v) if is_secret_ref(&v) => *slot = v,
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |node, part| node.get(part))
}

fn set_path(v: &mut Value, path: &str, new: Value) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut node = v;
    for part in &parts[..parts.len() - 1] {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        node = node
            .as_object_mut()
            .expect("object")
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    if let Some(o) = node.as_object_mut() {
        o.insert(parts[parts.len() - 1].to_string(), new);
    }
}

fn set_dynamic_path(d: &mut Dynamic, path: &str, new: Dynamic) {
    let (first, rest) = match path.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (path, None),
    };
    if let Some(mut map) = d.write_lock::<Map>() {
        match rest {
            None => {
                map.insert(first.into(), new);
            }
            Some(rest) => {
                let child = map.entry(first.into()).or_insert_with(|| Map::new().into());
                set_dynamic_path(child, rest, new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str, sets: &[&str]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, yaml).unwrap();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load(&[f], &sets).unwrap()
    }

    #[test]
    fn merges_and_sets() {
        let c = cfg(
            "db:\n  host: a\n  port: 5432\n",
            &["db.host=b", "flags.x=true"],
        );
        assert_eq!(c.value["db"]["host"], "b");
        assert_eq!(c.value["db"]["port"], 5432);
        assert_eq!(c.value["flags"]["x"], true);
        assert_eq!(c.origin("db.port").unwrap().pos.unwrap().line, 3);
        assert!(c.origin("db.host").unwrap().file.starts_with("--set"));
    }

    #[test]
    fn a_later_secret_reference_replaces_the_earlier_one() {
        let c = cfg(
            "db: {host: h, password: {env: DB_PW}}\n",
            &["db.password={aws_secret: collate/db, key: password}"],
        );
        assert_eq!(
            c.value["db"],
            serde_json::json!({"host": "h", "password": {"aws_secret": "collate/db", "key": "password"}})
        );
    }

    #[test]
    fn only_a_secret_references_shape_replaces_whole() {
        use serde_json::json;
        for v in [
            json!({"env": "DB_PW"}),
            json!({"file": "pw.txt"}),
            json!({"aws_secret": "collate/db", "key": "password"}),
            json!({"ssm": "/collate/db"}),
        ] {
            assert!(is_secret_ref(&v), "{v}");
        }
        for v in [
            json!({"env": {"ARGO_NAMESPACE": "collate"}}),
            json!({"env": "a", "other": "b"}),
            json!({"env": "A", "file": "f"}),
            json!({"key": "k", "env": "A"}),
            json!({"host": "h"}),
            json!("plain"),
        ] {
            assert!(!is_secret_ref(&v), "{v}");
        }
        // A map that only looks partly like a reference merges key by key.
        let mut base = json!({"root": {"a": "0"}, "db": {"password": {"env": "DB_PW"}}});
        merge(
            &mut base,
            json!({"root": {"env": "a", "b": "c"}, "db": {"password": {"ssm": "/db"}}}),
        );
        assert_eq!(
            base,
            json!({"root": {"a": "0", "env": "a", "b": "c"}, "db": {"password": {"ssm": "/db"}}})
        );
    }

    #[test]
    fn validate_rejects_unknown_and_plain_secrets() {
        let c = cfg("db:\n  hots: a\n  password: hunter2\n", &[]);
        let mut schema = Map::new();
        schema.insert("db.host".into(), "string".into());
        schema.insert("db.password".into(), "secret".into());
        let e = c.validate(&c.to_dynamic(), &schema, None).unwrap_err();
        assert!(
            e.message.contains("unknown config key `db.hots`"),
            "{}",
            e.message
        );
        assert!(e.message.contains("c.yaml:2:3"), "{}", e.message);
        assert!(
            e.message.contains("did you mean `db.host`"),
            "{}",
            e.message
        );
        assert!(e.message.contains("plain-text secret"), "{}", e.message);
        assert!(!e.message.contains("hunter2"));
    }

    #[test]
    fn validate_fills_defaults_and_secrets() {
        let c = cfg("db:\n  password: {plaintext: pw-canary}\n", &[]);
        let mut schema = Map::new();
        let mut port = Map::new();
        port.insert("type".into(), "int".into());
        port.insert("default".into(), (5432 as rhai::INT).into());
        schema.insert("db.port".into(), port.into());
        schema.insert("db.password".into(), "secret".into());
        let out = c.validate(&c.to_dynamic(), &schema, None).unwrap();
        let db = out.read_lock::<Map>().unwrap()["db"].clone();
        let db = db.read_lock::<Map>().unwrap();
        assert_eq!(db["port"].as_int().unwrap(), 5432);
        assert!(db["password"].is::<Secret>());
    }
}

/// Property tests (the fuzzing of issue 8): loading never panics, whatever the input, and the
/// merge rules hold for arbitrary keys and values.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn yaml_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, text).unwrap();
        (dir, f)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn set_parsing_never_panics(s in "\\PC{0,40}") {
            let _ = Config::load(&[], &[s]);
        }

        #[test]
        fn yaml_loading_never_panics(text in "[a-z:\\- \\n\\[\\]{}'\"#&*!|>,0-9.]{0,160}") {
            let (_d, f) = yaml_file(&text);
            let _ = Config::load(&[f], &[]);
        }

        #[test]
        fn set_value_is_found_at_its_path(
            key in "[a-z]{1,6}(\\.[a-z]{1,6}){0,3}",
            val in "[a-z0-9]{1,8}",
        ) {
            let c = Config::load(&[], &[format!("{key}={val}")]).unwrap();
            let expected = parse_one(&val, "v").unwrap_or_else(|_| Value::String(val.clone()));
            prop_assert_eq!(lookup(&c.value, &key), Some(&expected));
        }

        #[test]
        fn later_files_win_and_keep_other_keys(
            a in proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{1,6}", 0..6),
            b in proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{1,6}", 0..6),
        ) {
            let to_yaml = |m: &std::collections::BTreeMap<String, String>| {
                let mut s = String::from("root:\n");
                for (k, v) in m { s.push_str(&format!("  {k}: \"{v}\"\n")); }
                if m.is_empty() { s = "root: {}\n".into(); }
                s
            };
            // A map shaped like a secret reference replaces the earlier value whole (tested in
            // `a_later_secret_reference_replaces_the_earlier_one`).
            let b_value = serde_json::to_value(&b).unwrap();
            prop_assume!(!is_secret_ref(&b_value));
            let (_da, fa) = yaml_file(&to_yaml(&a));
            let (_db, fb) = yaml_file(&to_yaml(&b));
            let c = Config::load(&[fa, fb], &[]).unwrap();
            for (k, v) in &a {
                let want = b.get(k).unwrap_or(v);
                prop_assert_eq!(c.value["root"][k].as_str(), Some(want.as_str()));
            }
            for (k, v) in &b {
                prop_assert_eq!(c.value["root"][k].as_str(), Some(v.as_str()));
            }
        }
    }
}
