//! Service references `svc://NAMESPACE/NAME:PORT[/path]`: reached through a port-forward over the Kubernetes API
//! to a ready pod behind the Service, with the run's own cluster credentials — what `kubectl port-forward svc/NAME`
//! does. Each referenced Service port gets one tunnel for the run: a listener on 127.0.0.1:0 whose every accepted
//! connection is forwarded through a new `pods/portforward` stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use tokio::io::AsyncWriteExt;

use super::client::{Kube, kube};
use crate::error::{HostError, error_chain};
use crate::host::Host;

/// Prefix of a service reference.
pub(crate) const SCHEME: &str = "svc://";

/// How long opening one port-forward stream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `svc://NAMESPACE/NAME:PORT[/path]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SvcRef {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

impl std::fmt::Display for SvcRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// Splits `svc://ns/name:port/path?q` into the reference and the rest (`/path?q`, or `/`). `None` when `url` is
/// not a service reference at all.
pub(crate) fn parse(url: &str) -> Option<Result<(SvcRef, String), HostError>> {
    let rest = url.strip_prefix(SCHEME)?;
    let bad = |why: &str| {
        HostError::input(format!(
            "`{url}` is not a service reference ({why}): expected `svc://NAMESPACE/NAME:PORT[/path]`"
        ))
        .with_hint("e.g. `svc://collate/openmetadata:8585`")
    };
    let Some((ns, tail)) = rest.split_once('/').filter(|(ns, _)| !ns.contains(':')) else {
        return Some(Err(bad("no namespace")));
    };
    let end = tail.find(['/', '?']).unwrap_or(tail.len());
    let (svc, path) = tail.split_at(end);
    Some(finish(ns, svc, path, bad))
}

fn finish(
    ns: &str,
    svc: &str,
    path: &str,
    bad: impl Fn(&str) -> HostError,
) -> Result<(SvcRef, String), HostError> {
    let (name, port) = svc.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(&format!("`{port}` is not a port number")))?;
    if ns.is_empty() || name.is_empty() {
        return Err(bad("empty namespace or name"));
    }
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok((
        SvcRef {
            namespace: ns.into(),
            name: name.into(),
            port,
        },
        path,
    ))
}

/// Where a tunnel currently forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    pod: String,
    port: u16,
}

/// One Service port reached through port-forwards, for the run.
pub(crate) struct Tunnel {
    svc: SvcRef,
    local: SocketAddr,
    target: Mutex<Target>,
    /// The last failure of a forwarded connection (names the service, the pod and the cause).
    last_error: Mutex<Option<String>>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let Some(task) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl Tunnel {
    /// The loopback URL that reaches the Service: `http://127.0.0.1:LOCAL{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.local)
    }

    /// Why the last forwarded connection failed, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the last failure (before a new request).
    pub fn clear_error(&self) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn target(&self) -> Target {
        self.target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fail(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

/// The tunnels of a run (a [`Host::slot`]), one per Service port.
#[derive(Default)]
struct Tunnels(tokio::sync::Mutex<HashMap<SvcRef, Arc<Tunnel>>>);

/// The tunnel to `svc` for this run, opened on first use: resolves the Service to a ready pod and its container
/// port (an error naming the Service when there is none) and listens on 127.0.0.1. Plan mode opens tunnels too:
/// they read nothing by themselves.
pub(crate) fn tunnel(host: &Host, svc: &SvcRef) -> Result<Arc<Tunnel>, HostError> {
    let kube = kube(host)?;
    let slot = host.slot::<Tunnels>();
    let rt = host.runtime().clone();
    host.read(&format!("k8s: port-forward svc/{svc}"), async move {
        let mut tunnels = slot.0.lock().await;
        if let Some(t) = tunnels.get(svc) {
            return Ok(t.clone());
        }
        let target = resolve(&kube, svc).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| {
                HostError::api(format!("cannot listen on 127.0.0.1 for `svc://{svc}`: {e}"))
            })?;
        let local = listener.local_addr().map_err(|e| {
            HostError::api(format!("cannot listen on 127.0.0.1 for `svc://{svc}`: {e}"))
        })?;
        let tunnel = Arc::new(Tunnel {
            svc: svc.clone(),
            local,
            target: Mutex::new(target),
            last_error: Mutex::new(None),
            accept: Mutex::new(None),
        });
        let weak = Arc::downgrade(&tunnel);
        let task = rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let Some(tunnel) = weak.upgrade() else { return };
                let kube = kube.clone();
                tokio::spawn(async move { forward(&kube, &tunnel, conn).await });
            }
        });
        *tunnel.accept.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        tunnels.insert(svc.clone(), tunnel.clone());
        Ok(tunnel)
    })
}

/// Service → its selector → a running, ready pod → the container port the Service port targets: what kubectl's
/// `AttachablePodForObject` and `LookupContainerPortNumberByServicePort` do for `port-forward svc/NAME`, except
/// that only a ready pod is chosen (kubectl takes the "most active" one and fails later when it is not running).
async fn resolve(kube: &Kube, svc: &SvcRef) -> Result<Target, HostError> {
    let reference = format!("svc://{svc}");
    let services: Api<Service> = Api::namespaced(kube.client.clone(), &svc.namespace);
    let service = services
        .get_opt(&svc.name)
        .await
        .map_err(|e| kube.err(&format!("get service `{}/{}`", svc.namespace, svc.name), e))?
        .ok_or_else(|| {
            HostError::not_found(format!(
                "service `{}/{}` (for `{reference}`) not found in cluster `{}`",
                svc.namespace, svc.name, kube.context
            ))
            .with_hint(format!(
                "check the namespace and the name: `kubectl -n {} get services`",
                svc.namespace
            ))
        })?;
    let spec = service.spec.unwrap_or_default();
    let selector = spec.selector.unwrap_or_default();
    if selector.is_empty() {
        return Err(HostError::input(format!(
            "service `{}/{}` (for `{reference}`) has no selector: no pod to port-forward to",
            svc.namespace, svc.name
        )));
    }
    let ports = spec.ports.unwrap_or_default();
    let Some(port_spec) = ports.iter().find(|p| p.port == svc.port as i32) else {
        let have: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
        return Err(HostError::not_found(format!(
            "service `{}/{}` has no port {} (it has: {})",
            svc.namespace,
            svc.name,
            svc.port,
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        )));
    };
    let mut keys: Vec<_> = selector.iter().collect();
    keys.sort();
    let label_selector = keys
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &svc.namespace);
    let list = pods
        .list(&ListParams::default().labels(&label_selector))
        .await
        .map_err(|e| {
            kube.err(
                &format!("list pods `{label_selector}` in `{}`", svc.namespace),
                e,
            )
        })?;
    let total = list.items.len();
    let mut ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
    ready.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let Some(pod) = ready.into_iter().next() else {
        return Err(HostError::api(format!(
            "service `{}/{}` (for `{reference}`) has no ready pod: {total} pod(s) match `{label_selector}`, none is running and ready",
            svc.namespace, svc.name
        ))
        .with_hint(format!(
            "is its workload up? `kubectl -n {} get pods -l {label_selector}`",
            svc.namespace
        )));
    };
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let port = match &port_spec.target_port {
        Some(IntOrString::Int(n)) if *n > 0 => *n as u16,
        Some(IntOrString::String(name)) if !name.is_empty() => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port as u16)
            .ok_or_else(|| {
                HostError::not_found(format!(
                    "pod `{}/{pod_name}` of service `{}/{}` has no container port named `{name}` (the service's `targetPort`)",
                    svc.namespace, svc.namespace, svc.name
                ))
            })?,
        _ => svc.port,
    };
    Ok(Target {
        pod: pod_name,
        port,
    })
}

/// Running, not being deleted, and `Ready`.
fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Opens one port-forward stream to `target`.
async fn open(
    kube: &Kube,
    svc: &SvcRef,
    target: &Target,
) -> Result<kube::api::Portforwarder, String> {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &svc.namespace);
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        pods.portforward(&target.pod, &[target.port]),
    )
    .await
    {
        Ok(Ok(pf)) => Ok(pf),
        Ok(Err(e)) => Err(match e {
            kube::Error::Api(s) if !s.message.is_empty() => {
                format!("{} (HTTP {})", s.message, s.code)
            }
            other => error_chain(&other),
        }),
        Err(_) => Err(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// Forwards one accepted connection: through the current pod, or — when that fails (the pod went away) — through
/// a pod resolved again, once. A failure is kept on the tunnel for the HTTP error and the connection is dropped.
async fn forward(kube: &Kube, tunnel: &Tunnel, mut conn: tokio::net::TcpStream) {
    let svc = &tunnel.svc;
    let first = tunnel.target();
    let (target, mut pf) = match open(kube, svc, &first).await {
        Ok(pf) => (first, pf),
        Err(first_err) => {
            let again = match resolve(kube, svc).await {
                Ok(t) => t,
                Err(e) => {
                    tunnel.fail(format!(
                        "port-forward to pod `{}/{}` of service `{}/{}` failed ({first_err}), and finding another pod failed: {}",
                        svc.namespace, first.pod, svc.namespace, svc.name, e.message
                    ));
                    return;
                }
            };
            match open(kube, svc, &again).await {
                Ok(pf) => {
                    *tunnel.target.lock().unwrap_or_else(|e| e.into_inner()) = again.clone();
                    (again, pf)
                }
                Err(e) => {
                    tunnel.fail(format!(
                        "port-forward to pod `{}/{}` (port {}) of service `{}/{}` failed: {e}",
                        svc.namespace, again.pod, again.port, svc.namespace, svc.name
                    ));
                    return;
                }
            }
        }
    };
    let (Some(mut upstream), Some(error)) =
        (pf.take_stream(target.port), pf.take_error(target.port))
    else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream) => {}
        Some(message) = error => {
            tunnel.fail(format!(
                "port-forward to pod `{}/{}` (port {}) of service `{}/{}` failed: {message}",
                svc.namespace, target.pod, target.port, svc.namespace, svc.name
            ));
            let _ = conn.shutdown().await;
        }
    }
    drop(upstream);
    pf.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_references() {
        let (s, path) = parse("svc://collate/openmetadata:8585/api/v1/system/version?x=1")
            .unwrap()
            .unwrap();
        assert_eq!(s.to_string(), "collate/openmetadata:8585");
        assert_eq!(path, "/api/v1/system/version?x=1");
        let (s, path) = parse("svc://argo-workflows/argo-workflows-server:2746")
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.name.as_str(), s.port, path.as_str()),
            ("argo-workflows-server", 2746, "/")
        );
        assert!(parse("http://x").is_none());
        for bad in [
            "svc://openmetadata:8585",
            "svc://collate/openmetadata",
            "svc://collate/om:x",
            "svc://collate/om:0",
            "svc:///om:1",
        ] {
            let e = parse(bad).unwrap().unwrap_err();
            assert!(
                e.message
                    .contains("expected `svc://NAMESPACE/NAME:PORT[/path]`"),
                "{bad}: {}",
                e.message
            );
        }
    }
}
