//! `collate-run`: runs Rhai recipes that deploy Collate on Amazon EKS, with a standard library
//! for AWS, Kubernetes, Helm and templates, plan/apply modes and a change journal.

mod cli;
mod config;
mod diagnostic;
mod docs;
mod engine;
mod exit;
mod opts;
mod repl;
mod report;
mod session;

fn main() {
    std::process::exit(cli::main());
}
