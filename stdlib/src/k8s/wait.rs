//! `k8s::wait`: watch one object until a condition holds, showing progress, and on timeout say
//! what was last seen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

use super::client::{Kube, Res};
use crate::error::{ErrorKind, HostError};
use crate::host::Host;

/// What `wait` waits for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    Exists,
    Deleted,
    /// `status.conditions[type]` has this status; for Deployments/StatefulSets `Available` and
    /// `Ready` also need the rollout to be complete.
    Cond {
        kind: String,
        status: String,
    },
    /// A dotted path (`status.phase`) equals a value.
    Field {
        path: String,
        value: String,
    },
}

impl Condition {
    pub fn parse(s: &str) -> Result<Condition, HostError> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "" => {
                return Err(HostError::input("empty wait condition")
                    .with_hint("e.g. \"Available\", \"exists\", \"deleted\""));
            }
            "exists" | "exist" | "create" | "created" => Condition::Exists,
            "delete" | "deleted" | "absent" | "gone" => Condition::Deleted,
            _ => {
                if let Some((path, value)) =
                    s.strip_prefix("jsonpath=").and_then(|j| j.split_once("}="))
                {
                    return Ok(Condition::Field {
                        path: path.trim_matches(|c| c == '{' || c == '.').to_string(),
                        value: value.trim_matches('\'').to_string(),
                    });
                }
                let rest = s.strip_prefix("condition=").unwrap_or(s);
                match rest.split_once('=') {
                    Some((path, value)) if path.contains('.') => Condition::Field {
                        path: path.to_string(),
                        value: value.to_string(),
                    },
                    Some((c, v)) => Condition::Cond {
                        kind: c.to_string(),
                        status: v.to_string(),
                    },
                    None => Condition::Cond {
                        kind: rest.to_string(),
                        status: "True".into(),
                    },
                }
            }
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Condition::Exists => "exist".into(),
            Condition::Deleted => "be deleted".into(),
            Condition::Cond { kind, status } if status == "True" => format!("be `{kind}`"),
            Condition::Cond { kind, status } => format!("have `{kind}={status}`"),
            Condition::Field { path, value } => format!("have `{path}={value}`"),
        }
    }
}

fn conditions(obj: &Value) -> Vec<&Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn condition_status<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    conditions(obj)
        .into_iter()
        .find(|c| {
            c["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(kind))
        })
        .and_then(|c| c["status"].as_str())
}

fn num(obj: &Value, p: &str) -> i64 {
    obj.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// A rollout is complete: the controller saw the latest spec and every replica is updated and available.
fn rollout_complete(obj: &Value) -> bool {
    let want = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let observed = num(obj, "/status/observedGeneration") >= num(obj, "/metadata/generation");
    let ready_field = if obj["kind"] == "Deployment" {
        "/status/availableReplicas"
    } else {
        "/status/readyReplicas"
    };
    observed && num(obj, "/status/updatedReplicas") >= want && num(obj, ready_field) >= want
}

/// `Ok(true)` when `obj` satisfies `cond`; an error when it can never do so (a failed Job).
pub(crate) fn satisfied(obj: Option<&Value>, cond: &Condition) -> Result<bool, String> {
    let Some(obj) = obj else {
        return Ok(*cond == Condition::Deleted);
    };
    Ok(match cond {
        Condition::Exists => true,
        Condition::Deleted => false,
        Condition::Cond { kind, status } => {
            let workload = matches!(
                obj["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "DaemonSet")
            );
            if obj["kind"] == "Job"
                && status == "True"
                && !kind.eq_ignore_ascii_case("Failed")
                && condition_status(obj, "Failed") == Some("True")
            {
                return Err(format!("the job failed: {}", summary(Some(obj))));
            }
            if workload
                && status == "True"
                && (kind.eq_ignore_ascii_case("Available") || kind.eq_ignore_ascii_case("Ready"))
            {
                rollout_complete(obj)
                    && (obj["kind"] != "Deployment"
                        || condition_status(obj, "Available") != Some("False"))
            } else {
                condition_status(obj, kind).is_some_and(|s| s.eq_ignore_ascii_case(status))
            }
        }
        Condition::Field { path, value } => {
            let ptr = format!("/{}", path.replace('.', "/"));
            match obj.pointer(&ptr) {
                Some(Value::String(s)) => s == value,
                Some(other) => other.to_string().as_str() == value.as_str(),
                None => false,
            }
        }
    })
}

/// What an object looks like, in one line: replicas, phase, conditions.
pub(crate) fn summary(obj: Option<&Value>) -> String {
    let Some(obj) = obj else {
        return "not found".into();
    };
    let mut parts = Vec::new();
    if obj.pointer("/spec/replicas").is_some() {
        let ready = if obj["kind"] == "Deployment" {
            "/status/availableReplicas"
        } else {
            "/status/readyReplicas"
        };
        parts.push(format!(
            "{}/{} ready",
            num(obj, ready),
            num(obj, "/spec/replicas")
        ));
    }
    if let Some(p) = obj.pointer("/status/phase").and_then(Value::as_str) {
        parts.push(format!("phase {p}"));
    }
    let conds: Vec<String> = conditions(obj)
        .into_iter()
        .map(|c| {
            let mut s = format!(
                "{}={}",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?")
            );
            if let Some(r) = c["reason"].as_str().filter(|_| c["status"] != "True") {
                s.push_str(&format!(" ({r})"));
            }
            s
        })
        .collect();
    if !conds.is_empty() {
        parts.push(format!("conditions {}", conds.join(", ")));
    }
    if parts.is_empty() {
        "exists, no status yet".into()
    } else {
        parts.join("; ")
    }
}

/// Watches `kind ns/name` until `cond` holds; returns the object (`None` once deleted).
pub(crate) fn wait(
    host: &Host,
    kube: &Arc<Kube>,
    res: &Res,
    ns: &str,
    name: &str,
    cond: &Condition,
    timeout: Duration,
) -> Result<Option<Value>, HostError> {
    let api = kube.api(res, ns)?;
    let target = format!(
        "{}/{name}{}",
        res.ar.kind.to_ascii_lowercase(),
        if res.namespaced {
            format!(" in `{ns}`")
        } else {
            String::new()
        }
    );
    let what = format!("waiting for {target} to {}", cond.describe());
    let k = kube.clone();
    let fut = async move {
        let started = Instant::now();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut current: Option<Value> = None;
        let mut initial: Option<Value> = None;
        let mut synced = false;
        let mut last_error: Option<String> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = stream.next() => {
                    match ev {
                        None => return Err(HostError::api(format!("{what}: the watch ended"))),
                        Some(Err(e)) => { last_error = Some(e.to_string()); continue; }
                        Some(Ok(Event::Init)) => { initial = None; }
                        Some(Ok(Event::InitApply(o))) => { initial = serde_json::to_value(o).ok(); }
                        Some(Ok(Event::InitDone)) => { current = initial.take(); synced = true; }
                        Some(Ok(Event::Apply(o))) => { current = serde_json::to_value(o).ok(); }
                        Some(Ok(Event::Delete(_))) => { current = None; }
                    }
                    if synced {
                        match satisfied(current.as_ref(), cond) {
                            Ok(true) => return Ok(current),
                            Ok(false) => {}
                            Err(why) => return Err(HostError::api(format!("{what}: {why}"))),
                        }
                    }
                }
                _ = tick.tick() => {
                    let mut line = format!("{what}: {} ({}s)", summary(current.as_ref()), started.elapsed().as_secs());
                    if let Some(e) = &last_error { line.push_str(&format!("; watch error: {e}")); }
                    host.progress(&line);
                }
                _ = &mut deadline => {
                    let mut e = HostError::new(ErrorKind::Timeout, format!(
                        "timed out after {}s {what}; last seen: {}",
                        timeout.as_secs(), summary(current.as_ref())));
                    if let Some(le) = last_error { e = e.with_hint(format!("the watch failed: {le}")); }
                    else { e = e.with_hint(format!("inspect it with `kubectl --context {} describe {target}`", k.context).replace(" in `", " -n ").replace('`', "")); }
                    return Err(e);
                }
            }
        }
    };
    host.read(&format!("k8s: watch {}", res.describe()), fut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse() {
        assert_eq!(Condition::parse("exists").unwrap(), Condition::Exists);
        assert_eq!(Condition::parse("delete").unwrap(), Condition::Deleted);
        assert_eq!(
            Condition::parse("Available").unwrap(),
            Condition::Cond {
                kind: "Available".into(),
                status: "True".into()
            }
        );
        assert_eq!(
            Condition::parse("condition=Ready=False").unwrap(),
            Condition::Cond {
                kind: "Ready".into(),
                status: "False".into()
            }
        );
        assert_eq!(
            Condition::parse("status.phase=Succeeded").unwrap(),
            Condition::Field {
                path: "status.phase".into(),
                value: "Succeeded".into()
            }
        );
        assert_eq!(
            Condition::parse("jsonpath={.status.phase}=Running").unwrap(),
            Condition::Field {
                path: "status.phase".into(),
                value: "Running".into()
            }
        );
    }

    #[test]
    fn deployment_available_needs_the_rollout() {
        let mut d = json!({"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True"}]}});
        let c = Condition::parse("Available").unwrap();
        assert!(!satisfied(Some(&d), &c).unwrap());
        d["status"]["observedGeneration"] = json!(2);
        assert!(satisfied(Some(&d), &c).unwrap());
        assert_eq!(summary(Some(&d)), "1/1 ready; conditions Available=True");
        assert!(satisfied(None, &Condition::Deleted).unwrap());
    }

    #[test]
    fn failed_job_fails_fast() {
        let j = json!({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert!(satisfied(Some(&j), &Condition::parse("Complete").unwrap()).is_err());
    }
}
