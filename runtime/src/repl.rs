//! `collate-run repl`: an interactive session with the standard library and the customer config.
//! Line editing and history (in `~/.collate-run_history`); an error is printed and the session
//! goes on; variables persist between lines.

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::exit;
use crate::opts::RunOpts;
use crate::session::{Session, print_value};

pub fn run(opts: &RunOpts) -> i32 {
    let mode = if opts_plan(opts) {
        collate_stdlib::Mode::Plan
    } else {
        collate_stdlib::Mode::Apply
    };
    let mut session = match Session::new(opts, None, mode) {
        Ok(s) => s,
        Err(d) => {
            crate::report::err(d.render().trim_end());
            return d.exit_code;
        }
    };
    let mut editor = match DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return exit::SCRIPT;
        }
    };
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".collate-run_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "collate-run repl ({} mode). `config` holds the customer config; Ctrl-D quits.",
        if mode == collate_stdlib::Mode::Plan {
            "plan"
        } else {
            "apply"
        }
    );
    loop {
        match editor.readline("» ") {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                crate::engine::INTERRUPTED.store(false, std::sync::atomic::Ordering::Relaxed);
                let Session { engine, scope, .. } = &mut session;
                let result = engine.eval_with_scope::<rhai::Dynamic>(scope, &line);
                match result {
                    Ok(v) if v.is_unit() => {}
                    Ok(v) => print_value(session.format, &v),
                    Err(e) => {
                        crate::report::err(session.diagnose(&e, "<repl>").render().trim_end())
                    }
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    exit::OK
}

fn opts_plan(opts: &RunOpts) -> bool {
    opts.plan
}
