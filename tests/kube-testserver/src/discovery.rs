//! Discovery at `/api` and `/apis`: the legacy documents (`APIVersions`, `APIGroupList`) and, when the
//! client's `Accept` asks for it and the emulated version serves it, aggregated discovery
//! (`apidiscovery.k8s.io/v2`, and `v2beta1` up to 1.32), with upstream's content negotiation, `ETag`
//! and 304. Both are rendered from the one resource table (`State::types`), CRDs included.

use crate::api::{Ctx, Reply, Shared};
use crate::resources::ResourceType;
use crate::state::State;
use crate::util::ApiError;
use serde_json::{Value, json};
use sha2::Digest as _;

/// The media types the real discovery endpoints offer, in the codec factory's order (JSON, YAML,
/// protobuf: `k8s.io/apimachinery/pkg/runtime/serializer/codec_factory.go`; CBOR only behind the
/// `CBORServingAndStorage` gate, off by default). Whatever is negotiated, the body is JSON.
const OFFERED: [(&str, &str); 3] = [
    ("application", "json"),
    ("application", "yaml"),
    ("application", "vnd.kubernetes.protobuf"),
];

const GROUP: &str = "apidiscovery.k8s.io";
const KIND: &str = "APIGroupDiscoveryList";

/// `/api` (the core group) or `/apis` (every other group).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Root {
    Api,
    Apis,
}

/// The aggregated discovery versions a server of `version` (`major.minor.patch`) serves, the
/// newest first: none before 1.27 (the `AggregatedDiscoveryEndpoint` gate: alpha and off in 1.26,
/// beta and on from 1.27, GA in 1.30), `v2beta1` from 1.27, `v2` from 1.30 (the GA type), and
/// `v2beta1` no more from 1.33 (`AggregatedDiscoveryRemoveBetaType`, on by default from 1.33:
/// `staging/src/k8s.io/apiserver/pkg/features/kube_features.go`).
pub fn aggregated_versions(version: &str) -> Vec<&'static str> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(1), parts.next().unwrap_or(0));
    let minor = if major > 1 { u32::MAX } else { minor };
    let mut out = Vec::new();
    if minor >= 30 {
        out.push("v2");
    }
    if (27..=32).contains(&minor) {
        out.push("v2beta1");
    }
    out
}

/// One clause of an `Accept` header, as `github.com/munnerz/goautoneg` `ParseAccept` reads it.
#[derive(Debug, PartialEq)]
struct Clause {
    ty: String,
    sub: String,
    q: f64,
    params: Vec<(String, String)>,
}

/// The clauses of `header`, by descending `q`, then concrete types before wildcards (goautoneg's
/// `accept_slice.Less`; its `sort.Sort` keeps the sent order among equals for short lists).
fn parse_accept(header: &str) -> Vec<Clause> {
    let mut out = Vec::new();
    for part in header.split(',') {
        let mut pieces = part.trim_matches(' ').split(';');
        let range = pieces.next().unwrap_or_default();
        let mut sp = range.split('/');
        let ty = sp.next().unwrap_or_default().trim_matches(' ').to_string();
        let sub = match (sp.next(), sp.next()) {
            (None, _) if ty == "*" => "*".to_string(),
            (Some(s), None) => s.trim_matches(' ').to_string(),
            _ => continue,
        };
        let mut clause = Clause {
            ty,
            sub,
            q: 1.0,
            params: Vec::new(),
        };
        for param in pieces {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            let k = k.trim_matches(' ');
            if k == "q" {
                clause.q = v.parse().unwrap_or(0.0);
            } else {
                clause
                    .params
                    .push((k.to_string(), v.trim_matches(' ').to_string()));
            }
        }
        out.push(clause);
    }
    out.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then((a.ty == "*").cmp(&(b.ty == "*")))
            .then((a.sub == "*").cmp(&(b.sub == "*")))
    });
    out
}

/// What a request to `/api` or `/apis` gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Negotiated {
    /// Aggregated discovery in this version of `apidiscovery.k8s.io` (`v2` or `v2beta1`).
    Aggregated(&'static str),
    /// The legacy `APIVersions` / `APIGroupList`.
    Legacy,
    /// No clause can be served: 406.
    NotAcceptable,
}

/// Upstream's `NegotiateMediaTypeOptions` (`staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
/// negotiation/negotiate.go`): the first clause, in goautoneg's order, that matches an offered
/// media type and whose parameters `allows` (the `g`/`v`/`as` target, `None` without them).
/// `sv` is refused and `stream` only `watch`, as both endpoint restrictions do. An empty header
/// takes the first offered type, with no target.
fn negotiate_with(
    accept: &str,
    mut allows: impl FnMut(Option<(&str, &str, &str)>) -> bool,
) -> bool {
    if accept.is_empty() {
        return allows(None);
    }
    for clause in parse_accept(accept) {
        for (ty, sub) in OFFERED {
            let matches = (clause.ty == ty && (clause.sub == sub || clause.sub == "*"))
                || (clause.ty == "*" && clause.sub == "*");
            if !matches {
                continue;
            }
            let param = |k: &str| {
                clause
                    .params
                    .iter()
                    .find(|(p, _)| p == k)
                    .map(|(_, v)| v.as_str())
            };
            if param("sv").is_some_and(|v| !v.is_empty())
                || param("stream").is_some_and(|v| !v.is_empty() && v != "watch")
            {
                continue;
            }
            let target = match (param("g"), param("v"), param("as")) {
                (None, None, None) => None,
                (g, v, k) => Some((g.unwrap_or(""), v.unwrap_or(""), k.unwrap_or(""))),
            };
            if allows(target) {
                return true;
            }
        }
    }
    false
}

/// Which document answers `accept` on a server serving these aggregated versions. As upstream:
/// `WrappedHandler.ServeHTTP` (`.../endpoints/discovery/aggregated/wrapper.go`) hands the request
/// to the aggregated handler when negotiation with `DiscoveryEndpointRestrictions` (`negotiation.go`
/// there: only the `APIGroupDiscoveryList` target of a served version) finds a clause; else the
/// legacy handler (`.../endpoints/discovery/root.go`, `legacy.go`) negotiates with
/// `DefaultEndpointRestrictions` (no target at all) and answers 406 when nothing is left.
pub fn negotiate(accept: &str, aggregated: &[&'static str]) -> Negotiated {
    let mut chosen = None;
    let found = !aggregated.is_empty()
        && negotiate_with(accept, |target| match target {
            Some((GROUP, v, KIND)) => {
                chosen = aggregated.iter().find(|a| **a == v).copied();
                chosen.is_some()
            }
            _ => false,
        });
    if let (true, Some(v)) = (found, chosen) {
        return Negotiated::Aggregated(v);
    }
    if negotiate_with(accept, |target| target.is_none()) {
        Negotiated::Legacy
    } else {
        Negotiated::NotAcceptable
    }
}

/// `/api` or `/apis`, negotiated.
pub fn root(shared: &Shared, ctx: &Ctx, which: Root) -> Result<Reply, ApiError> {
    let served = if shared.legacy_discovery_only {
        Vec::new()
    } else {
        aggregated_versions(&shared.version)
    };
    match negotiate(&ctx.accept, &served) {
        Negotiated::Aggregated(version) => Ok(aggregated(
            &shared.lock(),
            which,
            version,
            &ctx.if_none_match,
        )),
        Negotiated::Legacy => Ok(Reply::Json(
            200,
            match which {
                Root::Api => api_versions(shared.port),
                Root::Apis => group_list(&shared.lock()),
            },
        )),
        Negotiated::NotAcceptable => Err(not_acceptable()),
    }
}

/// `errNotAcceptable` (`.../endpoints/handlers/negotiation/errors.go`) as a `Status`.
fn not_acceptable() -> ApiError {
    let offered: Vec<String> = OFFERED.iter().map(|(t, s)| format!("{t}/{s}")).collect();
    ApiError::new(
        406,
        "NotAcceptable",
        format!(
            "only the following media types are accepted: {}",
            offered.join(", ")
        ),
    )
}

/// The legacy `/api` document.
fn api_versions(port: u16) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{port}")}]})
}

/// The API groups other than core, each with its served versions (the preferred one first), in
/// the order of the resource table (built-ins, then CRDs as they were created).
pub fn groups(state: &State) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in state.types.iter().filter(|t| !t.group.is_empty()) {
        let entry = match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some(e) => e,
            None => {
                groups.push((t.group.clone(), Vec::new()));
                groups.last_mut().expect("pushed")
            }
        };
        for v in &t.versions {
            if !entry.1.contains(v) {
                entry.1.push(v.clone());
            }
        }
    }
    groups
}

/// The legacy `/apis` document.
pub fn group_list(state: &State) -> Value {
    let groups: Vec<Value> = groups(state)
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// One resource of one group version as an `APIResourceDiscovery`, from the same entries the
/// legacy `APIResourceList` lists (`ResourceType::discovery_entries`). Built-in resources name
/// no group or version in `responseKind` (the apiserver's own handlers leave them empty:
/// `api/discovery/aggregated_v2.json`); a CRD's do (`staging/src/k8s.io/apiextensions-apiserver/
/// pkg/apiserver/customresource_discovery_controller.go`).
fn resource_discovery(t: &ResourceType, version: &str) -> Value {
    let kind_of = |entry: &Value| {
        let (g, v) = match (entry.get("group"), entry.get("version")) {
            (Some(g), Some(v)) => (g.clone(), v.clone()),
            _ if t.custom => (json!(t.group), json!(version)),
            _ => (json!(""), json!("")),
        };
        json!({"group": g, "version": v, "kind": entry["kind"]})
    };
    let entries = t.discovery_entries();
    let main = &entries[0];
    let mut out = json!({
        "resource": t.plural,
        "responseKind": kind_of(main),
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": main["verbs"],
    });
    for key in ["shortNames", "categories"] {
        if let Some(v) = main.get(key) {
            out[key] = v.clone();
        }
    }
    let mut subs: Vec<Value> = entries[1..]
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or_default();
            let sub = name.split_once('/').map(|(_, s)| s).unwrap_or(name);
            json!({"subresource": sub, "responseKind": kind_of(e), "verbs": e["verbs"]})
        })
        .collect();
    subs.sort_by(|a, b| a["subresource"].as_str().cmp(&b["subresource"].as_str()));
    if !subs.is_empty() {
        out["subresources"] = json!(subs);
    }
    out
}

/// The `APIVersionDiscovery` of `group`/`version`: its resources by name, `freshness: Current`.
fn version_discovery(state: &State, group: &str, version: &str) -> Value {
    let mut types: Vec<&ResourceType> = state
        .types
        .iter()
        .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        .collect();
    types.sort_by(|a, b| a.plural.cmp(&b.plural));
    let resources: Vec<Value> = types
        .into_iter()
        .map(|t| resource_discovery(t, version))
        .collect();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// The items of the aggregated document of `which` (what the `ETag` is computed from).
pub fn aggregated_items(state: &State, which: Root) -> Vec<Value> {
    match which {
        // The core group has no name (`metadata: {creationTimestamp: null}` only).
        Root::Api => vec![json!({
            "metadata": {"creationTimestamp": null},
            "versions": [version_discovery(state, "", "v1")],
        })],
        Root::Apis => groups(state)
            .into_iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> =
                    vs.iter().map(|v| version_discovery(state, &g, v)).collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
            })
            .collect(),
    }
}

/// The aggregated answer: `ServeHTTPWithETag` (`.../discovery/aggregated/etag.go`) sets `ETag`
/// (the quoted upper-case hex SHA-512 of the JSON list), `Vary: Accept` and `Cache-Control:
/// public`, and answers 304 with no body when `If-None-Match` is that quoted hash; else the
/// list, its content type naming the negotiated group, version and kind
/// (`responsewriters.WriteObjectNegotiated`).
fn aggregated(state: &State, which: Root, version: &str, if_none_match: &str) -> Reply {
    let items = aggregated_items(state, which);
    // `calculateETag` hashes the list without its type meta; the version does not change it
    // (both versions share it, and `Vary: Accept` tells caches apart).
    let hashed = serde_json::to_vec(&json!({"metadata": {}, "items": items})).unwrap_or_default();
    let etag = format!("\"{:X}\"", sha2::Sha512::digest(&hashed));
    let mut headers = vec![
        ("etag", etag.clone()),
        ("vary", "Accept".to_string()),
        ("cache-control", "public".to_string()),
    ];
    if if_none_match == etag {
        return Reply::Raw(304, headers, Vec::new());
    }
    let body = json!({
        "kind": KIND,
        "apiVersion": format!("{GROUP}/{version}"),
        "metadata": {},
        "items": items,
    });
    headers.insert(
        0,
        (
            "content-type",
            format!("application/json;g={GROUP};v={version};as={KIND}"),
        ),
    );
    Reply::Raw(200, headers, serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE_RS: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn versions_follow_the_feature_gates() {
        assert!(aggregated_versions("1.26.0").is_empty());
        assert_eq!(aggregated_versions("1.27.3"), ["v2beta1"]);
        assert_eq!(aggregated_versions("1.30.0"), ["v2", "v2beta1"]);
        assert_eq!(aggregated_versions("1.32.1"), ["v2", "v2beta1"]);
        assert_eq!(aggregated_versions("1.33.0"), ["v2"]);
        assert_eq!(aggregated_versions("1.35.0"), ["v2"]);
    }

    #[test]
    fn accept_clauses_sort_by_q_then_specificity() {
        let c = parse_accept("*/*;q=0.5, application/json;as=Table;v=v1, text/*");
        let types: Vec<_> = c.iter().map(|c| format!("{}/{}", c.ty, c.sub)).collect();
        assert_eq!(types, ["application/json", "text/*", "*/*"]);
        assert_eq!(
            c[0].params,
            [("as".into(), "Table".into()), ("v".into(), "v1".into())]
        );
        assert_eq!(c[2].q, 0.5);
        assert!(parse_accept("nonsense").is_empty());
    }

    #[test]
    fn negotiation_picks_aggregated_falls_back_or_refuses() {
        let v2 = ["v2"];
        let both = ["v2", "v2beta1"];
        assert_eq!(negotiate(KUBE_RS, &v2), Negotiated::Aggregated("v2"));
        assert_eq!(
            negotiate(KUBE_RS, &["v2beta1"]),
            Negotiated::Aggregated("v2beta1")
        );
        assert_eq!(negotiate(KUBE_RS, &[]), Negotiated::Legacy);
        let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        assert_eq!(negotiate(beta, &both), Negotiated::Aggregated("v2beta1"));
        assert_eq!(negotiate(beta, &v2), Negotiated::NotAcceptable);
        assert_eq!(negotiate("", &v2), Negotiated::Legacy);
        assert_eq!(negotiate("*/*", &v2), Negotiated::Legacy);
        assert_eq!(negotiate("application/json", &v2), Negotiated::Legacy);
        // protobuf first (client-go's order), served as JSON all the same.
        let pb = "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(pb, &v2), Negotiated::Aggregated("v2"));
        assert_eq!(negotiate("text/plain", &v2), Negotiated::NotAcceptable);
        assert_eq!(
            negotiate("application/json;as=Table;v=v1;g=meta.k8s.io", &v2),
            Negotiated::NotAcceptable
        );
        // The wrapper looks for an aggregated clause first, whatever its `q`: a plain JSON clause
        // preferred to it does not make the answer legacy (upstream `WrappedHandler.ServeHTTP`).
        let q = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0.5,application/json";
        assert_eq!(negotiate(q, &v2), Negotiated::Aggregated("v2"));
        // Among aggregated clauses, the higher `q` wins.
        let q = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList;q=0.5,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        assert_eq!(negotiate(q, &both), Negotiated::Aggregated("v2"));
    }
}
