//! `om-argo-testserver --port 0 [--token T] [--argo-token T] [--fail-reindex JSON]`: runs the
//! OpenMetadata/Argo API test server until killed, printing its URL on the first line. What it
//! emulates, and from which upstream source: `tests/src/om-argo-testserver.md`.

use collate_run_tests::api_server::{ApiOptions, ApiServer, Outcome};

fn main() {
    let mut opts = ApiOptions::default();
    let mut port: u16 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--port" => {
                port = value("--port")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --port"))
            }
            "--token" => opts.token = value("--token"),
            "--argo-token" => opts.argo_token = value("--argo-token"),
            "--admin-password" => opts.admin_password = value("--admin-password"),
            "--run-polls" => {
                opts.run_polls = value("--run-polls")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --run-polls"))
            }
            "--argo-namespace" => opts.argo_namespaces.push(value("--argo-namespace")),
            "--sso" => opts.sso = true,
            "--fail-reindex" => {
                let text = value("--fail-reindex");
                opts.outcome = Outcome::Failed(
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
                );
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument `{other}`")),
        }
    }
    let server = ApiServer::start_on(opts, port).unwrap_or_else(|e| {
        eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1);
    });
    println!("{}", server.url());
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "usage: om-argo-testserver [--port N] [--token T] [--argo-token T] [--admin-password P] [--run-polls N] [--argo-namespace NS] [--sso] [--fail-reindex JSON]"
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}
