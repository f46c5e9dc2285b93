//! The command line: one [`Subcommand`] enum with one `execute` match. A script path runs it;
//! `-e` evaluates an expression; `check`, `repl`, `docs`, `completions` are subcommands.

use std::path::PathBuf;
use std::time::Instant;

use clap::{CommandFactory, Parser};
use collate_stdlib::{HostError, Mode};

use crate::diagnostic::Diagnostic;
use crate::opts::RunOpts;
use crate::report::{self, Format};
use crate::session::{Session, print_value};
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
            let deferred = session.config.deferred_secrets();
            match session.format {
                Format::Json => report::Json::emit(serde_json::json!({
                    "type": "check", "ok": true, "script": main_name,
                    "needed_at_run_time": deferred,
                })),
                Format::Human => {
                    println!(
                        "ok: `{main_name}` parses, its imports resolve and its config checks pass"
                    );
                    for d in &deferred {
                        println!("  needed at run time: {d}");
                    }
                }
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

impl From<HostError> for Diagnostic {
    fn from(e: HostError) -> Self {
        Diagnostic::from_host(&e)
    }
}
