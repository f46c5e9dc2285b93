//! Simulated controllers: shortly after a workload is written, it is marked ready the way kubectl, helm 3's
//! `--wait` and helm 4's kstatus watcher check it (Deployments get an owned ReplicaSet and Available/Progressing
//! conditions, StatefulSets/DaemonSets/ReplicaSets ready replicas, Jobs complete, Pods running and ready,
//! PersistentVolumeClaims bound), and service-account-token Secrets get `token`, `ca.crt` and `namespace`.

use crate::api::Shared;
use crate::state::{Followup, State};
use crate::util::{now_rfc3339, short_hash};
use base64::Engine as _;
use serde_json::{Value, json};
use std::sync::Arc;

/// Takes the queued follow-ups and schedules them after the controller delay.
pub fn spawn_followups(shared: &Arc<Shared>) {
    let work: Vec<Followup> = std::mem::take(&mut shared.lock().followups);
    let work: Vec<Followup> = work.into_iter().filter(interesting).collect();
    if work.is_empty() {
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        tokio::time::sleep(shared.controller_delay).await;
        {
            let mut state = shared.lock();
            for f in &work {
                reconcile(&shared, &mut state, f);
            }
        }
        // Writes made by the controllers may need follow-ups of their own (a ReplicaSet, say).
        spawn_followups(&shared);
    });
}

fn interesting(f: &Followup) -> bool {
    matches!(
        (f.group.as_str(), f.plural.as_str()),
        (
            "apps",
            "deployments" | "statefulsets" | "daemonsets" | "replicasets"
        ) | ("batch", "jobs")
            | ("", "pods" | "secrets" | "persistentvolumeclaims")
    )
}

pub(crate) fn i64_at(v: &Value, ptr: &str, default: i64) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(default)
}

/// Writes a new status (as the controller manager would), only when it differs.
pub(crate) fn set_status(state: &mut State, group: &str, plural: &str, obj: &Value, status: Value) {
    let Some(rt) = state.find_type(group, plural) else {
        return;
    };
    let mut merged = obj.get("status").cloned().unwrap_or(json!({}));
    crate::patch::merge_patch(&mut merged, &status);
    if obj.get("status") == Some(&merged) {
        return;
    }
    let mut new = obj.clone();
    new["status"] = merged;
    state.commit(&rt, new, "MODIFIED");
}

fn reconcile(shared: &Arc<Shared>, state: &mut State, f: &Followup) {
    let Some(rt) = state.find_type(&f.group, &f.plural) else {
        return;
    };
    let Some(obj) = state.get(&rt, &f.namespace, &f.name).cloned() else {
        return;
    };
    match (f.group.as_str(), f.plural.as_str()) {
        ("apps", "deployments") => deployment(state, &obj),
        ("apps", "replicasets") => replicaset(state, &obj),
        ("apps", "statefulsets") => {
            let n = i64_at(&obj, "/spec/replicas", 1);
            let generation = i64_at(&obj, "/metadata/generation", 1);
            let revision = format!("{}-{}", f.name, short_hash(&obj["spec"]["template"]));
            let names: Vec<Option<String>> =
                (0..n).map(|i| Some(format!("{}-{i}", f.name))).collect();
            ensure_pods(
                state,
                "StatefulSet",
                &obj,
                &names,
                json!({"controller-revision-hash": revision}),
                "Running",
            );
            set_status(
                state,
                "apps",
                "statefulsets",
                &obj,
                json!({"observedGeneration": generation, "replicas": n, "readyReplicas": n, "currentReplicas": n, "updatedReplicas": n, "availableReplicas": n, "currentRevision": revision, "updateRevision": revision, "collisionCount": 0}),
            );
        }
        ("apps", "daemonsets") => {
            let nodes = state
                .objects
                .keys()
                .filter(|(g, p, _, _)| g.is_empty() && p == "nodes")
                .count()
                .max(1) as i64;
            let generation = i64_at(&obj, "/metadata/generation", 1);
            set_status(
                state,
                "apps",
                "daemonsets",
                &obj,
                json!({"observedGeneration": generation, "desiredNumberScheduled": nodes, "currentNumberScheduled": nodes, "numberReady": nodes, "numberAvailable": nodes, "updatedNumberScheduled": nodes, "numberMisscheduled": 0}),
            );
        }
        ("batch", "jobs") => crate::kubelet::job(shared, state, &obj),
        ("", "pods") if crate::kubelet::pod(shared, state, &obj) => {}
        ("", "pods") => {
            if obj.pointer("/status/phase").is_some() {
                return;
            }
            let now = now_rfc3339();
            let statuses: Vec<Value> = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}))
                .collect();
            set_status(
                state,
                "",
                "pods",
                &obj,
                json!({
                    "phase": "Running", "podIP": "10.244.0.10", "podIPs": [{"ip": "10.244.0.10"}], "hostIP": "10.0.0.1", "startTime": now, "qosClass": "BestEffort",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    ],
                    "containerStatuses": statuses,
                }),
            );
        }
        ("", "persistentvolumeclaims") => {
            let capacity = obj
                .pointer("/spec/resources/requests/storage")
                .cloned()
                .unwrap_or(json!("1Gi"));
            let modes = obj
                .pointer("/spec/accessModes")
                .cloned()
                .unwrap_or(json!(["ReadWriteOnce"]));
            set_status(
                state,
                "",
                "persistentvolumeclaims",
                &obj,
                json!({"phase": "Bound", "capacity": {"storage": capacity}, "accessModes": modes}),
            );
        }
        ("", "secrets") => sa_token(state, &obj),
        _ => {}
    }
}

/// The node pods are scheduled to: the first Node, or `kube-testserver` when none was seeded.
pub fn node_name(state: &State) -> String {
    state
        .objects
        .keys()
        .find(|(g, p, _, _)| g.is_empty() && p == "nodes")
        .map(|k| k.3.clone())
        .unwrap_or_else(|| "kube-testserver".into())
}

/// Makes the pods owned by `owner` match `names` in number (a `None` name gets a random suffix), creating
/// them already running (or succeeded) and ready, and deleting extras.
fn ensure_pods(
    state: &mut State,
    owner_kind: &str,
    owner: &Value,
    names: &[Option<String>],
    extra_labels: Value,
    phase: &str,
) {
    let Some(pod_type) = state.find_type("", "pods") else {
        return;
    };
    let ns = owner["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let owner_name = owner["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = owner["metadata"]["uid"].clone();
    let owned: Vec<Value> = state
        .list(&pod_type, Some(&ns))
        .into_iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|o| o["uid"] == uid))
        })
        .cloned()
        .collect();
    for extra in owned.iter().skip(names.len()) {
        let mut gone = extra.clone();
        gone["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        state.commit(&pod_type, gone, "DELETED");
    }
    let node = node_name(state);
    let now = now_rfc3339();
    for name in names.iter().skip(owned.len()) {
        let name = name
            .clone()
            .unwrap_or_else(|| format!("{owner_name}-{}", crate::util::random_suffix(5)));
        let mut labels = owner
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        if let (Some(l), Some(extra)) = (labels.as_object_mut(), extra_labels.as_object()) {
            l.extend(extra.clone());
        }
        if owner_kind == "StatefulSet" {
            labels["statefulset.kubernetes.io/pod-name"] = json!(name);
        }
        let mut spec = owner
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(json!({}));
        spec["nodeName"] = json!(node);
        let api_version = owner["apiVersion"].clone();
        let ready = if phase == "Running" { "True" } else { "False" };
        let statuses: Vec<Value> = spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let state = if phase == "Running" { json!({"running": {"startedAt": now}}) } else { json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}) };
                json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": phase == "Running", "started": phase == "Running", "restartCount": 0, "state": state})
            })
            .collect();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "namespace": ns, "uid": crate::util::new_uid(), "creationTimestamp": now, "labels": labels,
                "ownerReferences": [{"apiVersion": api_version, "kind": owner_kind, "name": owner_name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": spec,
            "status": {
                "phase": phase, "podIP": "10.244.0.10", "podIPs": [{"ip": "10.244.0.10"}], "hostIP": "10.0.0.1", "startTime": now, "qosClass": "BestEffort",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                    {"type": "Ready", "status": ready, "lastTransitionTime": now},
                ],
                "containerStatuses": statuses,
            },
        });
        state.commit(&pod_type, pod, "ADDED");
    }
}

/// Runs the ReplicaSet's pods (running and ready) and writes its ready status.
fn replicaset(state: &mut State, rs: &Value) {
    let n = i64_at(rs, "/spec/replicas", 1);
    let names: Vec<Option<String>> = (0..n).map(|_| None).collect();
    ensure_pods(state, "ReplicaSet", rs, &names, json!({}), "Running");
    let generation = i64_at(rs, "/metadata/generation", 1);
    set_status(
        state,
        "apps",
        "replicasets",
        rs,
        json!({"replicas": n, "fullyLabeledReplicas": n, "readyReplicas": n, "availableReplicas": n, "observedGeneration": generation}),
    );
}

/// Ensures the Deployment's current ReplicaSet exists (owned, same template plus `pod-template-hash`), scales older
/// ones to zero, and writes an available status.
fn deployment(state: &mut State, dep: &Value) {
    let Some(rs_type) = state.find_type("apps", "replicasets") else {
        return;
    };
    let ns = dep["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = dep["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = dep["metadata"]["uid"].clone();
    let replicas = i64_at(dep, "/spec/replicas", 1);
    let generation = i64_at(dep, "/metadata/generation", 1);
    let template = dep.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = short_hash(&template);
    let rs_name = format!("{name}-{hash}");
    let revision = dep
        .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
        .and_then(Value::as_str)
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or(0);

    let owned: Vec<Value> = state
        .list(&rs_type, Some(&ns))
        .into_iter()
        .filter(|rs| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|o| o["uid"] == uid))
        })
        .cloned()
        .collect();
    let mut new_revision = revision;
    for rs in &owned {
        let rs_n = rs["metadata"]["name"].as_str().unwrap_or_default();
        if rs_n != rs_name && i64_at(rs, "/spec/replicas", 0) != 0 {
            let mut scaled = rs.clone();
            scaled["spec"]["replicas"] = json!(0);
            scaled["status"] = json!({"replicas": 0, "observedGeneration": i64_at(rs, "/metadata/generation", 1) + 1});
            scaled["metadata"]["generation"] = json!(i64_at(rs, "/metadata/generation", 1) + 1);
            state.commit(&rs_type, scaled, "MODIFIED");
        }
    }
    let current = owned
        .iter()
        .find(|rs| rs["metadata"]["name"] == rs_name.as_str());
    match current {
        Some(rs) if i64_at(rs, "/spec/replicas", -1) == replicas => {}
        Some(rs) => {
            let mut scaled = rs.clone();
            scaled["spec"]["replicas"] = json!(replicas);
            let scaled = state.commit(&rs_type, scaled, "MODIFIED");
            // Ready replicas are ready pods: they run before the Deployment says so.
            replicaset(state, &scaled);
        }
        None => {
            new_revision = revision + 1;
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = dep.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let mut labels = template
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            labels["pod-template-hash"] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "namespace": ns, "uid": crate::util::new_uid(), "creationTimestamp": now_rfc3339(), "generation": 1,
                    "labels": labels,
                    "annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string(), "deployment.kubernetes.io/max-replicas": (replicas + 1).to_string(), "deployment.kubernetes.io/revision": new_revision.to_string()},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
            });
            let rs = state.commit(&rs_type, rs, "ADDED");
            // The Deployment is available only once its pods run and are ready (upstream: the
            // ReplicaSet controller creates them, the kubelet readies them, and the Deployment
            // controller counts their ready replicas), so they run before its status is written.
            replicaset(state, &rs);
        }
    }
    let Some(dep_type) = state.find_type("apps", "deployments") else {
        return;
    };
    let mut dep = state
        .get(&dep_type, &ns, &name)
        .cloned()
        .unwrap_or_else(|| dep.clone());
    if new_revision != revision {
        dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
            json!(new_revision.to_string());
        dep = state.commit(&dep_type, dep, "MODIFIED");
    }
    let now = now_rfc3339();
    let conditions = match dep.pointer("/status/conditions") {
        Some(c)
            if dep
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64)
                == Some(generation) =>
        {
            c.clone()
        }
        _ => json!([
            {"type": "Available", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now, "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now, "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{rs_name}\" has successfully progressed.")},
        ]),
    };
    set_status(
        state,
        "apps",
        "deployments",
        &dep,
        json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas, "conditions": conditions}),
    );
}

/// Fills a `kubernetes.io/service-account-token` Secret once its ServiceAccount exists.
fn sa_token(state: &mut State, secret: &Value) {
    if secret["type"] != "kubernetes.io/service-account-token"
        || secret.pointer("/data/token").is_some()
    {
        return;
    }
    let ns = secret["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(sa_name) = secret
        .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(Value::as_str)
    else {
        return;
    };
    let Some(sa_type) = state.find_type("", "serviceaccounts") else {
        return;
    };
    let Some(sa) = state.get(&sa_type, &ns, sa_name).cloned() else {
        // The real token controller waits for the ServiceAccount; retry via a no-op follow-up.
        state.followups.push(Followup {
            group: String::new(),
            plural: "secrets".into(),
            namespace: ns,
            name: secret["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .into(),
        });
        return;
    };
    let Some(secret_type) = state.find_type("", "secrets") else {
        return;
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut new = secret.clone();
    if !new.get("data").is_some_and(Value::is_object) {
        new["data"] = json!({});
    }
    new["data"]["token"] = json!(b64(&state.issue_token(&ns, sa_name)));
    let ca = state
        .kubelet
        .ca
        .clone()
        .unwrap_or_else(|| crate::state::NO_CA.to_string());
    new["data"]["ca.crt"] = json!(b64(&ca));
    new["data"]["namespace"] = json!(b64(&ns));
    new["metadata"]["annotations"]["kubernetes.io/service-account.uid"] =
        sa["metadata"]["uid"].clone();
    state.commit(&secret_type, new, "MODIFIED");
}
