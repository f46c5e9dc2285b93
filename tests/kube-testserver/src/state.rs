//! The in-memory store: objects by (group, plural, namespace, name), the global resourceVersion counter, the
//! event history that watches replay from, the live watchers, the request log, and the work queued for the
//! simulated controllers.

use crate::resources::{self, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::mpsc::UnboundedSender;

/// Store key: group, plural, namespace (`""` for cluster-scoped), name.
pub type Key = (String, String, String, String);

/// A recorded watch event.
pub struct Event {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
}

/// A live watch connection.
pub struct Watcher {
    pub id: u64,
    pub group: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub api_version: String,
    pub tx: UnboundedSender<Bytes>,
}

impl Watcher {
    fn wants(&self, group: &str, plural: &str, namespace: &str, obj: &Value) -> bool {
        self.group == group
            && self.plural == plural
            && self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    /// Sends one event line; false when the client has gone.
    pub fn send(&self, kind: &str, obj: &Value) -> bool {
        let mut o = obj.clone();
        o["apiVersion"] = json!(self.api_version);
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": o})).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).is_ok()
    }
}

/// One handled HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub status: u16,
    /// The `Accept` header, as sent (empty without one): which discovery a client asked for.
    pub accept: String,
    /// A write (POST, PUT, PATCH, DELETE) to a stored resource without `dryRun`.
    pub mutating: bool,
    pub user_agent: String,
}

/// Work for the simulated controllers: reconcile this object soon.
#[derive(Debug, Clone)]
pub struct Followup {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

pub struct State {
    pub rv: u64,
    pub types: Vec<ResourceType>,
    pub objects: BTreeMap<Key, Value>,
    pub history: VecDeque<Event>,
    pub watchers: Vec<Watcher>,
    pub next_watcher: u64,
    pub requests: Vec<RequestRecord>,
    pub followups: Vec<Followup>,
    pub next_ip: u32,
    /// The kubelet's images, runs and logs.
    pub kubelet: crate::kubelet::Kubelet,
    /// Service-account tokens this server issued (TokenRequest, token Secrets, pods); with
    /// bearer-token authentication on, they authenticate like the configured tokens.
    pub issued_tokens: std::collections::HashSet<String>,
}

/// What `ca.crt` holds on a server without TLS.
pub const NO_CA: &str =
    "-----BEGIN CERTIFICATE-----\nkube-testserver has no CA\n-----END CERTIFICATE-----\n";

const HISTORY_LIMIT: usize = 100_000;

impl State {
    /// A fresh store; `ca` is the CA (PEM) of a server with TLS, for `kube-root-ca.crt`.
    pub fn new(ca: Option<String>) -> Self {
        let mut s = State {
            rv: 1,
            types: resources::builtins(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            watchers: Vec::new(),
            next_watcher: 1,
            requests: Vec::new(),
            followups: Vec::new(),
            next_ip: 10,
            kubelet: crate::kubelet::Kubelet {
                ca,
                ..Default::default()
            },
            issued_tokens: Default::default(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = crate::api::namespace_object(ns);
            let rt = s.find_type("", "namespaces").expect("namespaces type");
            s.commit(&rt, obj, "ADDED");
            s.seed_namespace(ns);
        }
        s
    }

    /// What the controllers put in every new namespace: the `default` ServiceAccount and the
    /// `kube-root-ca.crt` ConfigMap.
    pub fn seed_namespace(&mut self, ns: &str) {
        let now = crate::util::now_rfc3339();
        let ca = self.kubelet.ca.clone().unwrap_or_else(|| NO_CA.to_string());
        let seeds = [
            (
                "serviceaccounts",
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}),
            ),
            (
                "configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}}, "data": {"ca.crt": ca}}),
            ),
        ];
        for (plural, mut obj) in seeds {
            let Some(rt) = self.find_type("", plural) else {
                continue;
            };
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if self.get(&rt, ns, &name).is_some() {
                continue;
            }
            obj["metadata"]["uid"] = json!(crate::util::new_uid());
            obj["metadata"]["creationTimestamp"] = json!(now);
            self.commit(&rt, obj, "ADDED");
        }
    }

    /// Issues a token for service account `ns/sa` that this server then accepts.
    pub fn issue_token(&mut self, ns: &str, sa: &str) -> String {
        let token = crate::api::service_account_token(ns, sa);
        self.issued_tokens.insert(token.clone());
        token
    }

    pub fn find_type(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    /// The type serving `plural` in `group/version` (the version must be served).
    pub fn find_served(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| {
                t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    pub fn type_for_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.types
            .iter()
            .find(|t| t.group == group && t.kind == kind && t.versions.iter().any(|v| v == version))
            .cloned()
    }

    pub fn key(rt: &ResourceType, namespace: &str, name: &str) -> Key {
        (
            rt.group.clone(),
            rt.plural.clone(),
            if rt.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name.to_string(),
        )
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Self::key(rt, namespace, name))
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&(
            String::new(),
            "namespaces".into(),
            String::new(),
            ns.to_string(),
        ))
    }

    /// Objects of a type, optionally in one namespace, in key order.
    pub fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == rt.group && *p == rt.plural && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, v)| v)
            .collect()
    }

    /// Stores (ADDED/MODIFIED) or removes (DELETED) an object with a new resourceVersion, records the event,
    /// notifies watchers and queues controller work. Returns the object as stored (or as deleted).
    pub fn commit(&mut self, rt: &ResourceType, mut obj: Value, kind: &'static str) -> Value {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let key = Self::key(rt, &ns, &name);
        if kind == "DELETED" {
            self.objects.remove(&key);
            if rt.group.is_empty() && rt.plural == "pods" {
                // The kubelet stops a deleted pod's containers.
                crate::kubelet::kill(self, obj["metadata"]["uid"].as_str().unwrap_or_default());
            }
        } else {
            self.objects.insert(key, obj.clone());
        }
        self.watchers.retain(|w| {
            !w.wants(&rt.group, &rt.plural, &key_ns(rt, &ns), &obj) || w.send(kind, &obj)
        });
        self.history.push_back(Event {
            rv,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: key_ns(rt, &ns),
            kind,
            object: obj.clone(),
        });
        if self.history.len() > HISTORY_LIMIT {
            self.history.pop_front();
        }
        if kind != "DELETED" {
            self.followups.push(Followup {
                group: rt.group.clone(),
                plural: rt.plural.clone(),
                namespace: ns,
                name,
            });
        }
        obj
    }

    /// Sends a BOOKMARK with the current resourceVersion to one watcher; false when it has gone.
    pub fn bookmark(&mut self, id: u64, initial_end: bool) -> bool {
        let rv = self.rv;
        let Some(w) = self.watchers.iter().find(|w| w.id == id) else {
            return false;
        };
        let (group, version) = w
            .api_version
            .rsplit_once('/')
            .map(|(g, v)| (g.to_string(), v.to_string()))
            .unwrap_or((String::new(), w.api_version.clone()));
        let kind = self
            .find_served(&group, &version, &w.plural)
            .map(|t| t.kind)
            .unwrap_or_default();
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let ok = w.send("BOOKMARK", &json!({"kind": kind, "metadata": meta}));
        if !ok {
            self.watchers.retain(|w| w.id != id);
        }
        ok
    }
}

fn key_ns(rt: &ResourceType, ns: &str) -> String {
    if rt.namespaced {
        ns.to_string()
    } else {
        String::new()
    }
}
