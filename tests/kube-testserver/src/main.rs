//! `kube-testserver [--port PORT] [--kubeconfig PATH] [--version 1.35] [--backend NS/SERVICE:PORT=127.0.0.1:PORT]...
//! [--tls-cert CERT... --tls-key KEY --tls-ca CA] [--token TOKEN] [--image NAME=BINARY]...
//! [--image-env NAME=KEY=VALUE]... [--eks-pod-identity-webhook] [--legacy-discovery-only]`: runs the test API server on 127.0.0.1 until killed,
//! printing `listening on URL`. Each `--backend` is reached by a port-forward to the Service's pods
//! (`--backend-with-service` also seeds the Service). Each `--image` is a container image the
//! kubelet runs for Jobs' pods (`--image-env` adds environment to its containers).

use std::io::Write as _;

fn main() {
    let mut builder = kube_testserver::KubeTestServer::builder();
    let mut kubeconfig = None;
    let (mut certs, mut key, mut ca) = (Vec::new(), None, None);
    let mut images: Vec<kube_testserver::Image> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("`{name}` needs a value")))
        };
        match arg.as_str() {
            "--port" => {
                builder = builder.port(
                    value("--port")
                        .parse()
                        .unwrap_or_else(|_| usage("`--port` must be a number")),
                )
            }
            "--kubeconfig" => kubeconfig = Some(value("--kubeconfig")),
            "--version" => builder = builder.version(&value("--version")),
            "--backend" | "--backend-with-service" => {
                let backend =
                    kube_testserver::Backend::parse(&value(&arg)).unwrap_or_else(|e| usage(&e));
                builder = if arg == "--backend" {
                    builder.backend(backend)
                } else {
                    builder.backend_with_service(backend)
                };
            }
            "--tls-cert" => certs.push(value("--tls-cert")),
            "--tls-key" => key = Some(value("--tls-key")),
            "--tls-ca" => ca = Some(value("--tls-ca")),
            "--token" => builder = builder.bearer_token(&value("--token")),
            "--image" => images.push(
                kube_testserver::Image::parse(&value("--image")).unwrap_or_else(|e| usage(&e)),
            ),
            "--image-env" => {
                let spec = value("--image-env");
                let Some((name, (k, v))) = spec
                    .split_once('=')
                    .and_then(|(n, kv)| Some((n, kv.split_once('=')?)))
                else {
                    usage("`--image-env` expects NAME=KEY=VALUE")
                };
                let Some(image) = images.iter_mut().find(|i| i.name == name) else {
                    usage(&format!(
                        "`--image-env {spec}`: no `--image {name}=...` before it"
                    ))
                };
                *image = image.clone().env(k, v);
            }
            "--eks-pod-identity-webhook" => builder = builder.eks_pod_identity_webhook(None),
            "--legacy-discovery-only" => builder = builder.legacy_discovery_only(),
            "--cluster-dns" => {
                let spec = value("--cluster-dns");
                let Some((name, ip)) = spec.split_once('=') else {
                    usage("`--cluster-dns` expects NAME=IP")
                };
                builder = builder.cluster_dns(name, ip);
            }
            "-h" | "--help" => {
                println!("usage: {USAGE}");
                return;
            }
            other => usage(&format!("unknown argument `{other}`")),
        }
    }
    builder = match (certs.is_empty(), key, ca) {
        (false, Some(k), Some(a)) => builder.tls(&certs, k, a),
        (true, None, None) => builder,
        _ => usage("`--tls-cert`, `--tls-key` and `--tls-ca` go together"),
    };
    for image in images {
        builder = builder.image(image);
    }
    let server = builder.start();
    if let Some(path) = kubeconfig
        && let Err(e) = server.write_kubeconfig(&path)
    {
        eprintln!("kube-testserver: cannot write kubeconfig `{path}`: {e}");
        std::process::exit(1);
    }
    println!("listening on {}", server.url());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("kube-testserver: {problem}\nusage: {USAGE}");
    std::process::exit(2);
}

const USAGE: &str = "kube-testserver [--port PORT] [--kubeconfig PATH] [--version 1.35] \
[--backend NAMESPACE/SERVICE:PORT=127.0.0.1:PORT]... [--backend-with-service ...]... \
[--tls-cert CERT.pem... --tls-key KEY.pem --tls-ca CA.pem] [--token TOKEN] \
[--image NAME=BINARY]... [--image-env NAME=KEY=VALUE]... [--eks-pod-identity-webhook] \
[--cluster-dns NAME=IP]... [--legacy-discovery-only]";
