//! The command line: one [`Subcommand`] enum with one `execute` match. A script path runs it;
//! `-e` evaluates an expression; `check`, `repl`, `docs`, `completions` are subcommands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, CommandFactory, Parser};
use collate_stdlib::journal::Reporter;
use collate_stdlib::{Host, HostError, Mode, Settings};
use rhai::{AST, Engine, Scope};

use crate::config::Config;
use crate::diagnostic::Diagnostic;
use crate::report::{self, Format};
use crate::{engine, exit};

#[derive(Parser, Debug)]
#[command(
    name = "collate-run",
    version,
    about = "Deploy Collate on Amazon EKS with plain, editable Rhai recipes",
    long_about = "Runs a Rhai recipe with a standard library for AWS, Kubernetes, Helm and templates.\n\
                  Every converge call is idempotent; --plan shows what would change, per field, and changes nothing.",
    after_help = "Exit codes: 0 ok, 1 script error, 2 plan has changes (--detailed-exitcode), 3 config error, \
                  4 remote API error, 5 preflight failed, 64 usage, 130 interrupted.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The recipe to run, e.g. `recipes/full.rhai`.
    script: Option<PathBuf>,

    /// Evaluate an expression instead of a script and print its value.
    #[arg(
        short = 'e',
        long = "eval",
        value_name = "EXPR",
        conflicts_with = "script"
    )]
    eval: Option<String>,

    #[command(flatten)]
    opts: RunOpts,
}

/// Options shared by every way of running a script.
#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    /// A customer config file (YAML); repeatable, later files override earlier ones.
    #[arg(long = "config", short = 'c', value_name = "FILE", global = true)]
    config: Vec<PathBuf>,
    /// Override one config key, e.g. `--set images.server.tag=om-1.12.4` (the value is read as YAML).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
    /// Show what would change, per field, and change nothing.
    #[arg(long, global = true)]
    pub plan: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "human", global = true)]
    output: Format,
    /// Exit 2 when the run succeeded and the plan has changes, 0 when there are none.
    #[arg(long, global = true)]
    detailed_exitcode: bool,
    /// AWS shared-config profile (default: the AWS_PROFILE chain).
    #[arg(long, value_name = "NAME", global = true)]
    profile: Option<String>,
    /// AWS region (default: AWS_REGION or the profile's region).
    #[arg(long, value_name = "REGION", global = true)]
    region: Option<String>,
    /// kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME", global = true)]
    context: Option<String>,
    /// Allow scripts to run arbitrary processes and touch files outside the recipe folder.
    #[arg(long, global = true)]
    allow_exec: bool,
    /// Run even when a preflight requirement is not met.
    #[arg(long, global = true)]
    skip_preflight: bool,
    /// An extra folder searched by `import` (after the importing script's own folder).
    #[arg(long = "lib", value_name = "DIR", global = true)]
    lib: Vec<PathBuf>,
    /// More output (-v: debug logs and step timings).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Parse a script and its imports and check its config requirements, without any remote call.
    Check { script: PathBuf },
    /// An interactive session with the standard library and the config loaded.
    Repl,
    /// Write the standard library reference (Markdown) and editor definitions (.d.rhai).
    Docs {
        /// Output folder.
        #[arg(long, default_value = "docs/reference")]
        out: PathBuf,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

/// What the command line asks for.
enum Subcommand {
    Run(PathBuf),
    Eval(String),
    Check(PathBuf),
    Repl,
    Docs(PathBuf),
    Completions(clap_complete::Shell),
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let sub = match (cli.command, cli.script, cli.eval) {
        (Some(Command::Check { script }), _, _) => Subcommand::Check(script),
        (Some(Command::Repl), _, _) => Subcommand::Repl,
        (Some(Command::Docs { out }), _, _) => Subcommand::Docs(out),
        (Some(Command::Completions { shell }), _, _) => Subcommand::Completions(shell),
        (None, Some(script), _) => Subcommand::Run(script),
        (None, None, Some(expr)) => Subcommand::Eval(expr),
        (None, None, None) => {
            let _ = Cli::command().print_help();
            return exit::USAGE;
        }
    };
    sub.execute(cli.opts)
}

impl Subcommand {
    fn execute(self, opts: RunOpts) -> i32 {
        match self {
            Subcommand::Run(script) => run(&opts, Source::File(script), mode(&opts)),
            Subcommand::Eval(expr) => run(&opts, Source::Expr(expr), mode(&opts)),
            Subcommand::Check(script) => run(&opts, Source::File(script), Mode::Check),
            Subcommand::Repl => crate::repl::run(&opts),
            Subcommand::Docs(out) => crate::docs::write(&out),
            Subcommand::Completions(shell) => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "collate-run",
                    &mut std::io::stdout(),
                );
                exit::OK
            }
        }
    }
}

fn mode(opts: &RunOpts) -> Mode {
    if opts.plan { Mode::Plan } else { Mode::Apply }
}

pub enum Source {
    File(PathBuf),
    Expr(String),
}

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
        let config = Config::load(&opts.config, &opts.set)
            .map_err(|e| Box::new(Diagnostic::from_host(&e)))?;
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
        let settings = Settings {
            mode,
            aws_profile: opts.profile.clone(),
            aws_region: opts.region.clone(),
            kube_context: opts.context.clone(),
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

fn run(opts: &RunOpts, source: Source, mode: Mode) -> i32 {
    let started = Instant::now();
    let script = match &source {
        Source::File(p) => Some(p.as_path()),
        Source::Expr(_) => None,
    };
    let mut session = match Session::new(opts, script, mode) {
        Ok(s) => s,
        Err(d) => {
            if opts.output == Format::Json {
                report::Json::emit(d.to_json());
            } else {
                report::err(d.render().trim_end());
            }
            return d.exit_code;
        }
    };
    let main_name = match &source {
        Source::File(p) => p.display().to_string(),
        Source::Expr(_) => "<expression>".to_string(),
    };
    let ast = match &source {
        Source::File(p) => session.compile_file(p),
        Source::Expr(e) => session
            .engine
            .compile_expression_with_scope(&session.scope, e)
            .or_else(|_| session.engine.compile_with_scope(&session.scope, e))
            .map_err(|err| Box::new(Diagnostic::from_parse(&err, "<expression>"))),
    };
    let ast = match ast {
        Ok(a) => a,
        Err(d) => {
            session.report(&d);
            return d.exit_code;
        }
    };
    // The run lock is checked in every mode, before the script runs; an apply of a recipe (not
    // a one-off `-e` expression) takes it before its first change to Kubernetes, AWS or Helm.
    match session.config.run_lock() {
        Ok(Some(l)) if matches!(source, Source::File(_)) => {
            let lock = collate_stdlib::RunLock {
                namespace: l.namespace,
                name: l.name,
                ttl: l.ttl,
                wait: std::time::Duration::from_secs(l.wait.max(0) as u64),
            };
            session
                .host
                .set_run_lock(lock, collate_stdlib::k8s::take_run_lock)
        }
        Ok(_) => {}
        Err(e) => {
            let d = Diagnostic::from_host(&e);
            session.report(&d);
            return d.exit_code;
        }
    }
    let result = {
        let Session { engine, scope, .. } = &mut session;
        engine.eval_ast_with_scope::<rhai::Dynamic>(scope, &ast)
    };
    // Whatever happened (success, error, SIGINT), give the run lock back.
    collate_stdlib::k8s::release_locks(&session.host);
    if engine::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
        && session.format == Format::Human
    {
        report::err(
            "interrupted: the run stopped between two calls; the changes listed above were made, \
             the rest of the recipe was not run. Run it again to converge.",
        );
    }
    let code = match result {
        Ok(value) => {
            if let Source::Expr(_) = source
                && !value.is_unit()
            {
                print_value(session.format, &value);
            }
            exit::OK
        }
        Err(err) => {
            let d = session.diagnose(&err, &main_name);
            if d.is_check_stop() {
                exit::OK
            } else {
                session.report(&d);
                d.exit_code
            }
        }
    };
    let journal = session.host.journal();
    let code = if code == exit::OK && opts.detailed_exitcode && journal.has_changes() {
        exit::PLAN_HAS_CHANGES
    } else {
        code
    };
    if mode == Mode::Check {
        if code == exit::OK {
            match session.format {
                Format::Json => report::Json::emit(
                    serde_json::json!({"type": "check", "ok": true, "script": main_name}),
                ),
                Format::Human => println!(
                    "ok: `{main_name}` parses, its imports resolve and its config checks pass"
                ),
            }
        }
        return code;
    }
    report::summary(
        session.format,
        mode != Mode::Apply,
        journal.counts(),
        started.elapsed(),
        code,
    );
    code
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

impl From<HostError> for Diagnostic {
    fn from(e: HostError) -> Self {
        Diagnostic::from_host(&e)
    }
}
