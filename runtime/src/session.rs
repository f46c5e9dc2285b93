//! A session: everything a run needs, built once from the options (the config, the tokio
//! runtime, the host, the engine), shared by a recipe run, `-e` and the `repl`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use collate_stdlib::journal::Reporter;
use collate_stdlib::{Host, Mode, Settings};
use rhai::{AST, Engine, Scope};

use crate::config::Config;
use crate::diagnostic::Diagnostic;
use crate::opts::RunOpts;
use crate::report::{self, Format};
use crate::{engine, exit};

/// Everything a run needs, built once: the config, the tokio runtime, the host, the engine.
pub struct Session {
    pub engine: Engine,
    pub config: Arc<Config>,
    pub host: Arc<Host>,
    pub scope: Scope<'static>,
    pub lib_dirs: Vec<PathBuf>,
    pub format: Format,
    _rt: tokio::runtime::Runtime,
}

impl Session {
    pub fn new(
        opts: &RunOpts,
        script: Option<&Path>,
        mode: Mode,
    ) -> Result<Session, Box<Diagnostic>> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut config = Config::load(&opts.config, &opts.set)
            .map_err(|e| Box::new(Diagnostic::from_host(&e)))?;
        config.defer_missing_secrets = mode == Mode::Check && !opts.require_secrets;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| {
                Box::new(Diagnostic::new(
                    "io",
                    format!("cannot start the async runtime: {e}"),
                    exit::SCRIPT,
                ))
            })?;
        rt.spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                engine::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let reporter: Arc<dyn Reporter> = match opts.output {
            Format::Human => Arc::new(report::Human::new(opts.verbose)),
            Format::Json => Arc::new(report::Json),
        };
        let base_dir = script
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut read_roots: Vec<PathBuf> = opts
            .config
            .iter()
            .filter_map(|c| {
                c.parent().map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                })
            })
            .collect();
        read_roots.push(engine::recipe_root(script));
        // The command line wins over the customer config's pins (`aws.profile`, `aws.region`,
        // `kube.context`), which win over the environment.
        let pinned = |section: &str, key: &str| {
            config.value[section][key]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let settings = Settings {
            mode,
            aws_profile: opts.profile.clone().or_else(|| pinned("aws", "profile")),
            aws_region: opts.region.clone().or_else(|| pinned("aws", "region")),
            kube_context: opts.context.clone().or_else(|| pinned("kube", "context")),
            allow_exec: opts.allow_exec,
            base_dir,
            verbosity: opts.verbose,
            read_roots,
            skip_preflight: opts.skip_preflight,
        };
        let host = Host::new(settings, rt.handle().clone(), reporter);
        host.journal().set_planned(mode != Mode::Apply);
        let lib_dirs = engine::lib_dirs(script, &opts.lib);
        let config = Arc::new(config);
        let engine = engine::build(Some(&host), config.clone(), &lib_dirs);
        let config_dynamic = config.to_dynamic();
        let mut scope = Scope::new();
        scope.push_constant_dynamic("config", config_dynamic);
        Ok(Session {
            engine,
            config,
            host,
            scope,
            lib_dirs,
            format: opts.output,
            _rt: rt,
        })
    }

    pub fn report(&self, d: &Diagnostic) {
        match self.format {
            Format::Json => report::Json::emit(d.to_json()),
            Format::Human => report::err(d.render().trim_end()),
        }
    }

    pub fn compile_file(&self, path: &Path) -> Result<AST, Box<Diagnostic>> {
        let shown = collate_stdlib::host::display_path(path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            Box::new(Diagnostic::new(
                "io",
                format!("cannot read `{shown}`: {e}"),
                exit::SCRIPT,
            ))
        })?;
        let mut ast = self
            .engine
            .compile_with_scope(&self.scope, &text)
            .map_err(|e| Box::new(Diagnostic::from_parse(&e, &path.display().to_string())))?;
        ast.set_source(path.display().to_string());
        Ok(ast)
    }

    pub fn diagnose(&self, err: &rhai::EvalAltResult, main: &str) -> Diagnostic {
        Diagnostic::from_eval(
            err,
            main,
            &self.lib_dirs,
            &engine::known_functions(&self.engine),
        )
    }
}

/// Prints the value of `-e EXPR`: strings as they are, other values as JSON (Secrets masked).
pub fn print_value(format: Format, value: &rhai::Dynamic) {
    let json = collate_stdlib::value::to_json(value, collate_stdlib::value::Secrets::Mask)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    match format {
        Format::Json => report::Json::emit(serde_json::json!({"type": "value", "value": json})),
        Format::Human => match json {
            serde_json::Value::String(s) => report::out(&s),
            other => report::out(&serde_json::to_string_pretty(&other).unwrap_or_default()),
        },
    }
}
