//! `k8s::run_job`: a short-lived Job (with the objects it needs: its ServiceAccount, ConfigMap)
//! applied, watched until it completes or fails, its pod's log read, and every object removed
//! again — also when it fails, times out or the run is interrupted. The objects are transient changes
//! ([`Host::transient`]): journaled, never counted as changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use serde_json::Value;

use super::apply;
use super::client::Kube;
use super::converge::read_live;
use super::wait::summary;
use crate::error::{ErrorKind, HostError};
use crate::host::Host;
use crate::journal::Level;

/// How a Job ended.
pub(crate) struct Finished {
    pub job: String,
    /// The pod whose log was read (the last one the Job made), if any.
    pub pod: Option<String>,
    pub succeeded: bool,
    /// The Job's state in one line (`conditions Complete=True`).
    pub status: String,
    /// The pod's log (stdout and stderr, as `kubectl logs` shows it).
    pub log: String,
    pub elapsed: Duration,
}

/// How long to wait.
pub(crate) struct Limits {
    /// For the Job to complete or fail.
    pub timeout: Duration,
    /// For a pod of the Job to leave `Pending` (an image that cannot be pulled, no node).
    pub start: Duration,
}

/// Applies `docs` (exactly one `batch/v1` Job among them, applied last), waits for the Job, reads
/// its pod's log and removes every object applied, in reverse order.
pub(crate) fn run(
    host: &Host,
    kube: &Arc<Kube>,
    docs: Vec<Value>,
    default_ns: Option<&str>,
    limits: &Limits,
) -> Result<Finished, HostError> {
    let mut ms = apply::manifests(docs)?;
    let jobs: Vec<usize> = (0..ms.len()).filter(|&i| ms[i]["kind"] == "Job").collect();
    let [j] = jobs[..] else {
        return Err(HostError::input(format!(
            "k8s::run_job needs exactly one Job among its manifests, got {}",
            jobs.len()
        )));
    };
    let job = ms.remove(j);
    let ns = job
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .or(default_ns)
        .ok_or_else(|| {
            HostError::input("the Job has no `metadata.namespace`: give one or `#{namespace}`")
        })?
        .to_string();
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ms.push(job);

    let mut applied: Vec<Value> = Vec::new();
    let result = (|| {
        for m in &ms {
            apply::apply_all(host, kube, vec![m.clone()], Some(&ns), true)?;
            applied.push(m.clone());
        }
        watch(host, kube, &ns, &name, limits)
    })();
    // Also after Ctrl-C: the objects must not outlive the run.
    let cleanup = host.cleaning_up(|| remove(host, kube, &applied, &ns));
    match (result, cleanup) {
        (Ok(f), Ok(())) => Ok(f),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(c)) => {
            host.journal().log(
                Level::Warn,
                &format!("removing the objects of job `{ns}/{name}` failed too: {c}"),
            );
            Err(e)
        }
    }
}

/// Deletes what was applied, last first (the Job's pods go with it: background propagation).
fn remove(host: &Host, kube: &Arc<Kube>, applied: &[Value], ns: &str) -> Result<(), HostError> {
    let mut first_error = None;
    for m in applied.iter().rev() {
        let kind = m["kind"].as_str().unwrap_or_default();
        let api_version = m["apiVersion"].as_str().unwrap_or_default();
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        let mns = m
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(ns);
        let done = host
            .read(
                &format!("k8s: resolve kind {kind}"),
                kube.resolve_gvk(api_version, kind),
            )
            .and_then(|res| match res {
                Some(res) => super::converge::delete(host, kube, &res, mns, name).map(|_| ()),
                None => Ok(()),
            });
        if let Err(e) = done {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Polls the Job and its pods until it completes or fails; then reads the last pod's log.
fn watch(
    host: &Host,
    kube: &Arc<Kube>,
    ns: &str,
    name: &str,
    limits: &Limits,
) -> Result<Finished, HostError> {
    let job_res = super::well_known("Job");
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut last_progress = Instant::now();
    let target = format!("job `{ns}/{name}`");
    loop {
        let job = read_live(host, kube, &job_res, ns, name)?.ok_or_else(|| {
            HostError::new(
                ErrorKind::Conflict,
                format!("{target} was deleted while it ran"),
            )
            .with_hint("another run or person removed it: re-run")
        })?;
        let uid = job["metadata"]["uid"].as_str().unwrap_or_default();
        let pods = owned_pods(host, kube, ns, uid)?;
        let last = pods.last();
        let pod_name = last.and_then(|p| p["metadata"]["name"].as_str().map(str::to_string));
        let done = |succeeded: bool| -> Result<Finished, HostError> {
            let log = match &pod_name {
                Some(p) => logs(host, kube, ns, p, None, None)?,
                None => String::new(),
            };
            Ok(Finished {
                job: name.to_string(),
                pod: pod_name.clone(),
                succeeded,
                status: summary(Some(&job)),
                log,
                elapsed: started.elapsed(),
            })
        };
        if condition(&job, "Complete") {
            return done(true);
        }
        if condition(&job, "Failed") {
            return done(false);
        }
        let running = pods.iter().any(|p| p["status"]["phase"] != "Pending");
        let elapsed = started.elapsed();
        let state = match last {
            Some(p) => format!(
                "pod `{}` {}",
                p["metadata"]["name"].as_str().unwrap_or("?"),
                pod_state(p)
            ),
            None => "no pod created yet".to_string(),
        };
        if !running && elapsed >= limits.start {
            let mut e = HostError::new(
                ErrorKind::Timeout,
                format!(
                    "{target} did not start within {}s: {state}",
                    limits.start.as_secs()
                ),
            );
            e = e.with_hint(match &pod_name {
                Some(p) => format!(
                    "can the nodes pull its image and schedule it? `kubectl -n {ns} describe pod {p}`"
                ),
                None => format!(
                    "is the Job controller running, or a quota in the way? `kubectl -n {ns} describe job {name}`"
                ),
            });
            return Err(e);
        }
        if elapsed >= limits.timeout {
            return Err(HostError::new(
                ErrorKind::Timeout,
                format!(
                    "{target} did not finish within {}s: {}; {state}",
                    limits.timeout.as_secs(),
                    summary(Some(&job))
                ),
            )
            .with_hint(format!(
                "see what it does: `kubectl -n {ns} logs job/{name}`"
            )));
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            host.progress(&format!(
                "waiting for {target}: {state} ({}s)",
                elapsed.as_secs()
            ));
            last_progress = Instant::now();
        }
        super::pause(host, delay);
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// `true` when the object's condition `kind` is `True`.
fn condition(obj: &Value, kind: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

/// The pods `uid` owns, oldest first.
fn owned_pods(host: &Host, kube: &Arc<Kube>, ns: &str, uid: &str) -> Result<Vec<Value>, HostError> {
    let api = kube.api(&super::well_known("Pod"), ns)?;
    let what = format!("list pods in {ns}");
    let k = kube.clone();
    let list = host.read(&format!("k8s: {what}"), async move {
        api.list(&ListParams::default())
            .await
            .map_err(|e| k.err(&what, e))
    })?;
    let mut pods: Vec<Value> = list
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|os| os.iter().any(|o| o["uid"] == uid))
        })
        .collect();
    pods.sort_by(|a, b| {
        let t = |p: &Value| {
            p["metadata"]["creationTimestamp"]
                .as_str()
                .map(str::to_string)
        };
        t(a).cmp(&t(b))
    });
    Ok(pods)
}

/// A pod's state in a few words: its phase, why a container waits, why it is not scheduled.
pub(crate) fn pod_state(p: &Value) -> String {
    let mut s = format!("is {}", p["status"]["phase"].as_str().unwrap_or("Pending"));
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    for c in statuses.into_iter().flatten() {
        if let Some(w) = c.pointer("/state/waiting") {
            s.push_str(&format!(
                "; container `{}` waiting: {}",
                c["name"].as_str().unwrap_or("?"),
                w["reason"].as_str().unwrap_or("?")
            ));
            if let Some(m) = w["message"].as_str() {
                s.push_str(&format!(" ({m})"));
            }
        }
    }
    let conditions = p.pointer("/status/conditions").and_then(Value::as_array);
    for c in conditions.into_iter().flatten() {
        if c["type"] == "PodScheduled" && c["status"] == "False" {
            s.push_str(&format!(
                "; not scheduled: {}",
                c["message"]
                    .as_str()
                    .or(c["reason"].as_str())
                    .unwrap_or("?")
            ));
        }
    }
    s
}

/// A pod's log (`GET pods/NAME/log`), optionally of one container and its last lines.
pub(crate) fn logs(
    host: &Host,
    kube: &Arc<Kube>,
    ns: &str,
    pod: &str,
    container: Option<String>,
    tail_lines: Option<i64>,
) -> Result<String, HostError> {
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), ns);
    let what = format!("get the log of pod {ns}/{pod}");
    let k = kube.clone();
    let pod = pod.to_string();
    let params = LogParams {
        container,
        tail_lines,
        ..LogParams::default()
    };
    host.read(&format!("k8s: {what}"), async move {
        api.logs(&pod, &params).await.map_err(|e| k.err(&what, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pending_pod_says_why() {
        let p = json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "check", "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"x\""}}}],
            "conditions": [{"type": "PodScheduled", "status": "True"}]}});
        assert_eq!(
            pod_state(&p),
            "is Pending; container `check` waiting: ImagePullBackOff (Back-off pulling image \"x\")"
        );
        let p = json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}});
        assert_eq!(
            pod_state(&p),
            "is Pending; not scheduled: 0/3 nodes are available"
        );
        assert_eq!(pod_state(&json!({})), "is Pending");
    }

    #[test]
    fn conditions_are_read_by_type_and_status() {
        let j = json!({"status": {"conditions": [{"type": "Complete", "status": "True"},
            {"type": "Failed", "status": "False"}]}});
        assert!(condition(&j, "Complete"));
        assert!(!condition(&j, "Failed"));
        assert!(!condition(&json!({}), "Complete"));
    }
}
