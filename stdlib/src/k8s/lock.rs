//! The run lock: a `coordination.k8s.io/v1` Lease whose holder is `user@host:pid`, renewed in the
//! background while the run holds it, taken over once expired, released by `k8s::unlock` or when
//! the run ends.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams};

use super::client::Kube;
use crate::error::{ErrorKind, HostError};
use crate::host::Host;
use crate::journal::Level;

/// Who holds a lock taken by this process.
pub(crate) fn identity() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}:{}", std::process::id())
}

/// A lease as seen now.
#[derive(Debug, Clone)]
pub(crate) struct LeaseState {
    pub holder: Option<String>,
    pub renewed: Option<Timestamp>,
    pub duration: i64,
}

impl LeaseState {
    fn of(l: &Lease) -> LeaseState {
        let spec = l.spec.clone().unwrap_or_default();
        LeaseState {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renewed: spec.renew_time.or(spec.acquire_time).map(|t| t.0),
            duration: i64::from(spec.lease_duration_seconds.unwrap_or(0)),
        }
    }
    pub fn expires(&self) -> Option<Timestamp> {
        self.renewed
            .map(|r| r + SignedDuration::from_secs(self.duration))
    }
    /// Free to take: no holder, or the holder stopped renewing.
    pub fn is_free(&self, now: Timestamp) -> bool {
        self.holder.is_none() || self.expires().is_none_or(|e| e <= now)
    }
}

struct Held {
    key: String,
    renewer: tokio::task::JoinHandle<()>,
}

/// The leases a run holds, each with its renewal task (a [`Host::slot`]).
#[derive(Default)]
struct Leases(Mutex<Vec<Held>>);

impl Leases {
    fn of(host: &Host) -> Arc<Leases> {
        host.slot::<Leases>()
    }
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn spec(me: &str, ttl: i64, acquired: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(ttl as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(Timestamp::now())),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// What `lock` returns to scripts.
pub(crate) struct Outcome {
    pub held: bool,
    pub holder: Option<String>,
    pub expires: Option<Timestamp>,
}

/// Takes the lease `ns/name` for `ttl` seconds, waiting up to `wait` for another holder.
pub(crate) fn lock(
    host: &Arc<Host>,
    kube: &Arc<Kube>,
    ns: &str,
    name: &str,
    ttl: i64,
    wait: Duration,
) -> Result<Outcome, HostError> {
    if ttl < 5 {
        return Err(HostError::input(format!(
            "lock ttl must be at least 5 seconds, not {ttl}"
        )));
    }
    let api: Api<Lease> = Api::namespaced(kube.client.clone(), ns);
    let me = identity();
    let k = key(ns, name);
    let started = Instant::now();
    let mut namespace_checked = false;
    loop {
        let (a, kk) = (api.clone(), kube.clone());
        let what = format!("get lease {k}");
        let live = host.read(&format!("k8s: {what}"), async move {
            a.get_opt(name).await.map_err(|e| kk.err(&what, e))
        })?;
        let now = Timestamp::now();
        let state = live.as_ref().map(LeaseState::of);
        if host.is_plan() {
            if let Some(s) = state
                .as_ref()
                .filter(|s| !s.is_free(now) && s.holder.as_deref() != Some(&me))
            {
                host.journal().log(
                    Level::Warn,
                    &format!(
                        "run lock `{k}` is held by `{}`: an apply now would wait for it",
                        s.holder.clone().unwrap_or_default()
                    ),
                );
            }
            return Ok(Outcome {
                held: false,
                holder: state.as_ref().and_then(|s| s.holder.clone()),
                expires: state.and_then(|s| s.expires()),
            });
        }
        let attempt: Result<Lease, HostError> = match (&live, &state) {
            (None, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: Some(ns.to_string()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/managed-by".to_string(),
                                "collate-run".to_string(),
                            )]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    spec: Some(spec(&me, ttl, now, 0)),
                };
                let (a, kk, what) = (api.clone(), kube.clone(), format!("create lease {k}"));
                let created = host.mutate(&format!("k8s: {what}"), async move {
                    a.create(&PostParams::default(), &lease)
                        .await
                        .map_err(|e| kk.err(&what, e))
                });
                match created {
                    // The lock comes before the recipe's own `k8s::ensure_namespace`: on a
                    // fresh cluster it creates the namespace (a server-side apply, so a run
                    // creating it at the same time is no error), then tries once more.
                    Err(e) if e.kind == ErrorKind::NotFound && !namespace_checked => {
                        if !super::converge::namespace_exists(host, kube, ns)? {
                            ensure_namespace(host, kube, ns)?;
                        }
                        namespace_checked = true;
                        continue;
                    }
                    other => other,
                }
            }
            (Some(l), Some(s)) if s.holder.as_deref() == Some(&me) || s.is_free(now) => {
                let mut l = l.clone();
                let old = l.spec.clone().unwrap_or_default();
                l.spec = Some(if s.holder.as_deref() == Some(&me) {
                    spec(
                        &me,
                        ttl,
                        old.acquire_time.map(|t| t.0).unwrap_or(now),
                        old.lease_transitions.unwrap_or(0),
                    )
                } else {
                    spec(&me, ttl, now, old.lease_transitions.unwrap_or(0) + 1)
                });
                let (a, kk, what) = (api.clone(), kube.clone(), format!("take lease {k}"));
                host.mutate(&format!("k8s: {what}"), async move {
                    a.replace(name, &PostParams::default(), &l)
                        .await
                        .map_err(|e| kk.err(&what, e))
                })
            }
            (Some(_), Some(s)) => {
                let holder = s.holder.clone().unwrap_or_default();
                let left = s
                    .expires()
                    .map(|e| e.as_second() - now.as_second())
                    .unwrap_or(0);
                if started.elapsed() >= wait {
                    let mut e = HostError::new(
                        ErrorKind::Conflict,
                        format!(
                            "run lock `{k}` is held by `{holder}` (expires in {left}s unless renewed)"
                        ),
                    );
                    e = e.with_hint(if wait.is_zero() {
                        "another collate-run is applying to this cluster; wait for it, or lock with `#{wait: 600}`".to_string()
                    } else {
                        format!("waited {}s; if that run died, the lock expires by itself, or remove it: `kubectl -n {ns} delete lease {name}`", wait.as_secs())
                    });
                    return Err(e);
                }
                host.progress(&format!(
                    "waiting for run lock `{k}` held by `{holder}` (expires in {left}s)"
                ));
                super::pause(host, Duration::from_secs(1));
                continue;
            }
            (Some(_), None) => unreachable!(),
        };
        match attempt {
            Ok(l) => {
                start_renewal(host, api.clone(), ns, name, &me, ttl);
                let s = LeaseState::of(&l);
                return Ok(Outcome {
                    held: true,
                    holder: s.holder.clone(),
                    expires: s.expires(),
                });
            }
            // Somebody else wrote the lease between our read and write: read again.
            Err(e) if e.kind == ErrorKind::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Creates namespace `ns` for the lease, journaled as `k8s::ensure_namespace` would.
fn ensure_namespace(host: &Host, kube: &Arc<Kube>, ns: &str) -> Result<(), HostError> {
    let d = super::converge::Desired {
        res: super::client::well_known("Namespace", None).expect("namespaces are well known"),
        namespace: String::new(),
        name: ns.to_string(),
        body: serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    };
    super::converge::converge(host, kube, &d, false).map(|_| ())
}

fn start_renewal(host: &Arc<Host>, api: Api<Lease>, ns: &str, name: &str, me: &str, ttl: i64) {
    let k = key(ns, name);
    let leases = Leases::of(host);
    let mut held = leases.held();
    if held.iter().any(|h| h.key == k) {
        return;
    }
    let (name, me) = (name.to_string(), me.to_string());
    let every = Duration::from_secs((ttl / 3).max(1) as u64);
    let renewer = host.runtime().spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Ok(Some(mut l)) = api.get_opt(&name).await else {
                return;
            };
            let s = LeaseState::of(&l);
            if s.holder.as_deref() != Some(&me) {
                return;
            }
            if let Some(spec) = l.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            let _ = api.replace(&name, &PostParams::default(), &l).await;
        }
    });
    held.push(Held { key: k, renewer });
}

/// Releases `ns/name` if this process holds it. `Ok(true)` when a lease was released.
pub(crate) fn unlock(
    host: &Arc<Host>,
    kube: &Arc<Kube>,
    ns: &str,
    name: &str,
) -> Result<bool, HostError> {
    let k = key(ns, name);
    {
        Leases::of(host).held().retain(|h| {
            let mine = h.key == k;
            if mine {
                h.renewer.abort();
            }
            !mine
        });
    }
    if host.is_plan() {
        return Ok(false);
    }
    let api: Api<Lease> = Api::namespaced(kube.client.clone(), ns);
    let (a, kk, what) = (api.clone(), kube.clone(), format!("get lease {k}"));
    let live = host.read(&format!("k8s: {what}"), async move {
        a.get_opt(name).await.map_err(|e| kk.err(&what, e))
    })?;
    let Some(l) = live else { return Ok(false) };
    if LeaseState::of(&l).holder.as_deref() != Some(&identity()) {
        return Ok(false);
    }
    let (kk, what) = (kube.clone(), format!("delete lease {k}"));
    host.mutate(&format!("k8s: {what}"), async move {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(kk.err(&what, e)),
        }
    })
}

/// Releases every lock `host` still holds (the runtime calls this when a run ends).
pub fn release_all(host: &Arc<Host>) {
    let keys: Vec<String> = Leases::of(host)
        .held()
        .iter()
        .map(|h| h.key.clone())
        .collect();
    if keys.is_empty() {
        return;
    }
    host.close();
    let Ok(kube) = super::client::kube(host) else {
        return;
    };
    for k in keys {
        if let Some((ns, name)) = k.split_once('/') {
            let _ = unlock(host, &kube, ns, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_identity() {
        let now = Timestamp::now();
        let s = LeaseState {
            holder: Some("a@b:1".into()),
            renewed: Some(now - SignedDuration::from_secs(30)),
            duration: 10,
        };
        assert!(s.is_free(now));
        let s = LeaseState { duration: 60, ..s };
        assert!(!s.is_free(now));
        assert!(LeaseState { holder: None, ..s }.is_free(now));
        let id = identity();
        assert!(
            id.contains('@') && id.ends_with(&format!(":{}", std::process::id())),
            "{id}"
        );
    }
}
