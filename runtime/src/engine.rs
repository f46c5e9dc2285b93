//! The one engine constructor: limits, the module resolver (next to the importing script, then
//! the recipes' `lib/` folders), the standard library, `print`/`debug` routed to the reporter,
//! the config helpers `require`, `validate_config` and `config_origin`, and interruption by SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use collate_stdlib::Host;
use collate_stdlib::journal::Level;
use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FuncRegistration, Map, NativeCallContext};

use crate::config::Config;

/// Engine limits. A runaway script stops with a clear error instead of hanging a deploy.
pub struct Limits;

impl Limits {
    pub const OPERATIONS: u64 = 50_000_000;
    pub const CALL_LEVELS: usize = 64;
    pub const EXPR_DEPTH: usize = 128;
    pub const FN_EXPR_DEPTH: usize = 64;
    pub const STRING_SIZE: usize = 16 * 1024 * 1024;
    pub const ARRAY_SIZE: usize = 1_000_000;
    pub const MAP_SIZE: usize = 1_000_000;
    pub const MODULES: usize = 256;
}

/// Set by the SIGINT handler; the engine stops at its next operation and no new remote call
/// starts.
pub use collate_stdlib::host::INTERRUPTED;

/// The `lib/` folders searched for imports: `--lib` first, then a `lib/` next to the main
/// script or in one of its two parent folders (so `recipes/maintenance/x.rhai` finds
/// `recipes/lib`).
pub fn lib_dirs(script: Option<&Path>, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    let start = script
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    for dir in start.ancestors().take(3) {
        let lib = dir.join("lib");
        if has_rhai_lib(dir) && !dirs.contains(&lib) {
            dirs.push(lib);
        }
    }
    if dirs.is_empty() && Path::new("recipes/lib").is_dir() {
        dirs.push(PathBuf::from("recipes/lib"));
    }
    dirs
}

/// `true` when `dir/lib` is a folder holding Rhai modules (not, say, the system's `/lib`).
fn has_rhai_lib(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("lib")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "rhai"))
    })
}

/// The recipes folder of a script: the nearest of its folder and two parents that holds a
/// `lib/` folder, else the script's own folder (the working directory for `-e`).
pub fn recipe_root(script: Option<&Path>) -> PathBuf {
    let dir = script
        .and_then(Path::parent)
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));
    dir.ancestors()
        .take(3)
        .find(|d| has_rhai_lib(d))
        .map(Path::to_path_buf)
        .unwrap_or(dir)
}

/// Builds the engine for a run. `host` is `None` for `docs` (no run context).
pub fn build(host: Option<&Arc<Host>>, config: Arc<Config>, lib_dirs: &[PathBuf]) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(Limits::OPERATIONS)
        .set_max_call_levels(Limits::CALL_LEVELS)
        .set_max_expr_depths(Limits::EXPR_DEPTH, Limits::FN_EXPR_DEPTH)
        .set_max_string_size(Limits::STRING_SIZE)
        .set_max_array_size(Limits::ARRAY_SIZE)
        .set_max_map_size(Limits::MAP_SIZE)
        .set_max_modules(Limits::MODULES)
        .set_fail_on_invalid_map_property(true);

    let mut resolvers = ModuleResolversCollection::new();
    let mut relative = FileModuleResolver::new();
    relative.enable_cache(true);
    resolvers.push(relative);
    for dir in lib_dirs {
        resolvers.push(FileModuleResolver::new_with_path(dir));
    }
    engine.set_module_resolver(resolvers);

    collate_stdlib::register(&mut engine);

    if let Some(host) = host {
        host.install(&mut engine);
        let h = host.clone();
        engine.on_print(move |s| h.journal().log(Level::Info, s));
        let h = host.clone();
        engine.on_debug(move |s, src, pos| {
            let at = match (src, pos.line()) {
                (Some(src), Some(line)) => format!("{src}:{line}: "),
                _ => String::new(),
            };
            h.journal().log(Level::Debug, &format!("{at}{s}"));
        });
    }
    engine.on_progress(|_| {
        if INTERRUPTED.load(Ordering::Relaxed) {
            Some(Dynamic::from("interrupted"))
        } else {
            None
        }
    });

    let cfg = config.clone();
    FuncRegistration::new("require")
        .with_params_info(["config: map", "keys: array", "()"])
        .with_comments([
            "/// Fails with a config error unless every key (a dotted path) is present and not `()`:",
            "/// the error names each missing key and the config files it looked in.",
            "///",
            "/// ```rhai",
            "/// require(config, [\"cluster_name\", \"region\", \"database.host\"]);",
            "/// ```",
        ])
        .register_into_engine(
            &mut engine,
            move |config: Dynamic, keys: Array| -> Result<(), Box<EvalAltResult>> {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                Ok(cfg.require(&config, &keys)?)
            },
        );
    let cfg = config.clone();
    FuncRegistration::new("config_origin")
        .with_params_info(["path: string", "any"])
        .with_comments([
            "/// Where the config key `path` (a dotted path) was set, as `file:line:col` (or the nearest",
            "/// parent key's place; `--set` for a command-line value), or `()` when no config set it.",
            "/// For value checks a schema cannot express, so their errors point at the key too.",
            "///",
            "/// ```rhai",
            "/// if config.openmetadata.url == \"\" {",
            "///     throw `openmetadata.url is empty (set at ${config_origin(\"openmetadata.url\")})`;",
            "/// }",
            "/// ```",
        ])
        .register_into_engine(&mut engine, move |path: &str| -> Dynamic {
            cfg.origin(path)
                .map(|o| Dynamic::from(o.to_string()))
                .unwrap_or(Dynamic::UNIT)
        });
    let cfg = config;
    FuncRegistration::new("validate_config")
        .with_params_info(["config: map", "schema: map", "map"])
        .with_comments([
            "/// Checks `config` against `schema` (dotted key → type, `?` = optional, or",
            "/// `#{type, \"default\": value, hint}`; types `string`, `int`, `bool`, `list`, `map`, `any`,",
            "/// `secret`; `hint` says what to do when a required key is missing): unknown keys (with",
            "/// \"did you mean\"), wrong types and missing keys are reported",
            "/// all at once, each at its `file:line:col`. Returns the config with the defaults filled in",
            "/// and the `secret` keys resolved to Secrets.",
            "///",
            "/// ```rhai",
            "/// let cfg = validate_config(config, #{",
            "///     \"cluster_name\": \"string\",",
            "///     \"database.port\": #{ type: \"int\", \"default\": 5432 },",
            "///     \"database.password\": \"secret\",",
            "/// });",
            "/// ```",
        ])
        .register_into_engine(
            &mut engine,
            move |ctx: NativeCallContext,
                  config: Dynamic,
                  schema: Map|
                  -> Result<Dynamic, Box<EvalAltResult>> {
                let host = collate_stdlib::Host::of(&ctx).ok();
                Ok(cfg.validate(&config, &schema, host.as_deref())?)
            },
        );
    engine
}

/// Every function name a script can call, qualified (`aws::iam::ensure_role`), for "did you mean".
pub fn known_functions(engine: &Engine) -> Vec<String> {
    fn walk(prefix: &str, node: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(fns) = node.get("functions").and_then(|f| f.as_array()) {
            out.extend(
                fns.iter()
                    .filter_map(|f| f.get("name").and_then(|n| n.as_str()))
                    .filter(|n| {
                        n.chars()
                            .next()
                            .is_some_and(|c| c.is_alphabetic() || c == '_')
                    })
                    .map(|n| format!("{prefix}{n}")),
            );
        }
        if let Some(mods) = node.get("modules").and_then(|m| m.as_object()) {
            for (name, m) in mods {
                walk(&format!("{prefix}{name}::"), m, out);
            }
        }
    }
    let meta: serde_json::Value = engine
        .gen_fn_metadata_to_json(true)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let mut names = Vec::new();
    walk("", &meta, &mut names);
    names.sort();
    names.dedup();
    names
}
