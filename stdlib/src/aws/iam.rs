//! The `aws::iam` namespace: the cluster's OIDC provider and the IRSA roles of the guide —
//! trust policies built for a ServiceAccount and compared as JSON, managed and inline
//! policies, tags. Plan mode predicts the ARNs.

use rhai::plugin::*;
use rhai::{Dynamic, Map};
use serde_json::{Value, json};

use crate::aws::{
    Clients, Identity, clients, has_code, identity, opt_strings, opt_tags, policy, sdk_error,
};
use crate::diff;
use crate::error::{ErrorKind, HostError, RhaiResult};
use crate::host::Host;
use crate::journal::{Action, Change, FieldChange};
use crate::value::{Secrets, check_keys, from_json, opt_bool, opt_int, opt_str, to_json};

/// The audience of IRSA tokens, and the OIDC provider's client id.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// What plan mode shows for a value only AWS can tell.
pub const UNKNOWN: &str = "(known after apply)";

/// `https://oidc.eks.../id/X` and `oidc.eks.../id/X` both give `oidc.eks.../id/X`.
pub fn issuer_host_path(issuer: &str) -> Result<String, HostError> {
    let rest = issuer
        .trim()
        .strip_prefix("https://")
        .unwrap_or(issuer.trim())
        .trim_end_matches('/');
    let authority = rest.split('/').next().unwrap_or(rest);
    if rest.is_empty()
        || rest.contains("://")
        || rest.contains(char::is_whitespace)
        || super::thumbprint::host_port(authority).is_err()
    {
        return Err(
            HostError::input(format!("`{issuer}` is not an OIDC issuer URL"))
                .with_hint("pass the issuer from `aws::eks::oidc_issuer(cluster)`"),
        );
    }
    Ok(rest.to_string())
}

/// `arn:aws:iam::ACCOUNT:oidc-provider/HOST/PATH`.
pub fn oidc_provider_arn(id: &Identity, host_path: &str) -> String {
    format!(
        "arn:{}:iam::{}:oidc-provider/{host_path}",
        id.partition, id.account
    )
}

/// `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
pub fn role_arn(id: &Identity, path: &str, name: &str) -> String {
    format!("arn:{}:iam::{}:role{path}{name}", id.partition, id.account)
}

/// The guide's IRSA trust policy for `system:serviceaccount:NS:SA`, with the audience too.
pub fn irsa_trust_policy(provider_arn: &str, host_path: &str, namespace: &str, sa: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{host_path}:sub"): format!("system:serviceaccount:{namespace}:{sa}"),
                format!("{host_path}:aud"): STS_AUDIENCE,
            }}
        }]
    })
}

fn tags_map(tags: &[aws_sdk_iam::types::Tag]) -> Value {
    Value::Object(
        tags.iter()
            .map(|t| (t.key().to_string(), Value::String(t.value().to_string())))
            .collect(),
    )
}

/// The tags of `desired` that `live` (a map) lacks or holds with another value.
fn tags_to_set(desired: Option<&[(String, String)]>, live: &Value) -> Vec<(String, String)> {
    desired
        .into_iter()
        .flatten()
        .filter(|(k, v)| live.get(k).and_then(Value::as_str) != Some(v.as_str()))
        .cloned()
        .collect()
}

fn iam_tags(tags: &[(String, String)]) -> Result<Vec<aws_sdk_iam::types::Tag>, HostError> {
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| HostError::input(format!("invalid tag `{k}`: {e}")))
        })
        .collect()
}

/// A policy option: a map, or JSON text.
fn policy_value(d: &Dynamic, what: &str) -> Result<Value, HostError> {
    if d.is_string() {
        let text = d.clone().into_string().unwrap_or_default();
        return serde_json::from_str(&text)
            .map_err(|e| HostError::input(format!("{what} is not valid JSON: {e}")));
    }
    let v = to_json(d, Secrets::Mask)?;
    if !v.is_object() {
        return Err(HostError::input(format!(
            "{what} must be a policy map (or JSON text), not `{}`",
            d.type_name()
        )));
    }
    Ok(v)
}

fn top_field(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

// ---------------------------------------------------------------------------------------------
// OIDC provider

struct LiveProvider {
    url: String,
    client_ids: Vec<String>,
    thumbprints: Vec<String>,
    tags: Value,
}

fn get_provider(
    host: &Host,
    c: &Clients,
    arn: &str,
    hp: &str,
) -> Result<Option<LiveProvider>, HostError> {
    let op = "iam:GetOpenIDConnectProvider";
    host.read(&format!("{op} {hp}"), async {
        match c
            .iam
            .get_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .send()
            .await
        {
            Ok(o) => Ok(Some(LiveProvider {
                url: o.url().unwrap_or(hp).to_string(),
                client_ids: o.client_id_list().to_vec(),
                thumbprints: o.thumbprint_list().to_vec(),
                tags: tags_map(o.tags()),
            })),
            Err(e) if has_code(&e, "NoSuchEntity") => Ok(None),
            Err(e) => Err(sdk_error(c, op, hp, e)),
        }
    })
}

fn provider_object(
    arn: &str,
    hp: &str,
    client_ids: &[String],
    thumbprints: &[String],
    tags: &Value,
) -> Value {
    json!({
        "arn": arn,
        "url": format!("https://{hp}"),
        "client_ids": client_ids,
        "thumbprints": thumbprints,
        "tags": tags,
    })
}

/// The thumbprint of the issuer's TLS chain for a new provider; none, with a note saying why,
/// when the issuer cannot be reached (AWS does not need one for EKS issuers). A chain the roots
/// do not verify is an error: a thumbprint taken from it would pin whoever answered.
fn issuer_thumbprints(host: &Host, hp: &str) -> Result<(Vec<String>, Option<String>), HostError> {
    use super::thumbprint::{Failure, of_issuer};
    let authority = hp.split('/').next().unwrap_or(hp);
    let target = hp.to_string();
    let computed = host.read(&format!("tls {authority}"), async move {
        Ok(tokio::task::spawn_blocking(move || of_issuer(&target))
            .await
            .unwrap_or_else(|e| Err(Failure::Unreachable(e.to_string()))))
    })?;
    match computed {
        Ok(t) => Ok((vec![t], None)),
        Err(Failure::Unreachable(why)) => Ok((
            Vec::new(),
            Some(format!(
                "no thumbprint ({why}); AWS does not need one for EKS issuers"
            )),
        )),
        Err(Failure::Untrusted(why)) => Err(HostError::api(format!(
            "cannot take the thumbprint of OIDC issuer `https://{hp}`: its TLS certificate chain is not trusted: {why}"
        ))
        .with_hint(
            "if the issuer is right, pass its thumbprint (SHA-1 of the last certificate of its chain) explicitly: \
             `aws::iam::ensure_oidc_provider(issuer, #{ thumbprints: [\"...\"] })`, \
             or add its CA to the trusted roots (`SSL_CERT_FILE`)",
        )),
    }
}

fn ensure_oidc_provider(ctx: &NativeCallContext, issuer: &str, opts: &Map) -> RhaiResult<Map> {
    super::converge_racing("OIDC provider", issuer, || {
        ensure_oidc_provider_pass(ctx, issuer, opts)
    })
}

/// One pass of `ensure_oidc_provider`; `None` when it lost a create race.
fn ensure_oidc_provider_pass(
    ctx: &NativeCallContext,
    issuer: &str,
    opts: &Map,
) -> RhaiResult<Option<Map>> {
    check_keys(
        "aws::iam::ensure_oidc_provider",
        opts,
        &["thumbprints", "client_ids", "tags"],
    )?;
    let host = Host::of(ctx)?;
    let hp = issuer_host_path(issuer)?;
    let thumbprints = opt_strings(opts, "thumbprints")?
        .map(|t| t.into_iter().map(|s| s.to_lowercase()).collect::<Vec<_>>());
    if let Some(bad) = thumbprints
        .iter()
        .flatten()
        .find(|t| !super::thumbprint::is_valid(t))
    {
        return Err(HostError::input(format!(
            "thumbprint `{bad}` is not a SHA-1 fingerprint (40 hex digits)"
        ))
        .into());
    }
    let client_ids = opt_strings(opts, "client_ids")?.unwrap_or_else(|| vec![STS_AUDIENCE.into()]);
    let tags = opt_tags(opts, "tags")?;
    let c = &*clients(&host)?;
    let id = identity(&host, c)?;
    let arn = oidc_provider_arn(&id, &hp);
    let live = get_provider(&host, c, &arn, &hp)?;

    // Client ids are a set the script adds to; thumbprints, when given, are the whole list.
    let mut desired = json!({
        "url": format!("https://{hp}"),
        "client_ids": client_ids.iter().map(|i| (i.clone(), Value::Bool(true))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(t) = &thumbprints {
        let mut t = t.clone();
        t.sort();
        desired["thumbprints"] = json!(t);
    }
    if let Some(tags) = &tags {
        desired["tags"] = Value::Object(tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
    }
    let live_json = live.as_ref().map(|l| {
        let mut t = l.thumbprints.clone();
        t.sort();
        json!({
            "url": format!("https://{}", l.url.trim_start_matches("https://")),
            "client_ids": l.client_ids.iter().map(|i| (i.clone(), Value::Bool(true))).collect::<serde_json::Map<_, _>>(),
            "thumbprints": t,
            "tags": l.tags,
        })
    });
    let fields = diff::diff(&desired, live_json.as_ref(), &|_| false);
    let action = match (&live, fields.is_empty()) {
        (None, _) => Action::Create,
        (Some(_), false) => Action::Update,
        (Some(_), true) => Action::Unchanged,
    };
    let mut note = None;
    let object = match (&live, action) {
        (Some(l), Action::Unchanged) => {
            provider_object(&arn, &hp, &l.client_ids, &l.thumbprints, &l.tags)
        }
        _ if host.is_plan() => {
            let l = live.as_ref();
            let mut ids: Vec<String> = l.map(|l| l.client_ids.clone()).unwrap_or_default();
            ids.extend(
                client_ids
                    .iter()
                    .filter(|i| !ids.contains(i))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            let th = thumbprints
                .clone()
                .or_else(|| l.map(|l| l.thumbprints.clone()))
                .unwrap_or_default();
            let mut tg = l.map(|l| l.tags.clone()).unwrap_or_else(|| json!({}));
            for (k, v) in tags.iter().flatten() {
                tg[k] = json!(v);
            }
            provider_object(&arn, &hp, &ids, &th, &tg)
        }
        (None, _) => {
            let th = match thumbprints.clone() {
                Some(t) => t,
                None => {
                    let (t, why) = issuer_thumbprints(&host, &hp)?;
                    note = why;
                    t
                }
            };
            let op = "iam:CreateOpenIDConnectProvider";
            let tag_list = iam_tags(&tags.clone().unwrap_or_default())?;
            let created = host.mutate(&format!("{op} {hp}"), async {
                match c
                    .iam
                    .create_open_id_connect_provider()
                    .url(format!("https://{hp}"))
                    .set_client_id_list(Some(client_ids.clone()))
                    .set_thumbprint_list(Some(th.clone()))
                    .set_tags((!tag_list.is_empty()).then_some(tag_list))
                    .send()
                    .await
                {
                    Ok(o) => Ok(Some(o)),
                    // Created by somebody else since our read: converge that one.
                    Err(e) if has_code(&e, "EntityAlreadyExists") => Ok(None),
                    Err(e) => Err(sdk_error(c, op, &hp, e)),
                }
            })?;
            let Some(created) = created else {
                return Ok(None);
            };
            let arn = created
                .open_id_connect_provider_arn()
                .unwrap_or(&arn)
                .to_string();
            let tg = Value::Object(
                tags.iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect(),
            );
            provider_object(&arn, &hp, &client_ids, &th, &tg)
        }
        (Some(l), _) => {
            for cid in client_ids.iter().filter(|i| !l.client_ids.contains(i)) {
                let op = "iam:AddClientIDToOpenIDConnectProvider";
                host.mutate(&format!("{op} {hp}"), async {
                    c.iam
                        .add_client_id_to_open_id_connect_provider()
                        .open_id_connect_provider_arn(&arn)
                        .client_id(cid)
                        .send()
                        .await
                        .map_err(|e| sdk_error(c, op, &hp, e))
                })?;
            }
            if fields.iter().any(|f| top_field(&f.path) == "thumbprints") {
                let op = "iam:UpdateOpenIDConnectProviderThumbprint";
                host.mutate(&format!("{op} {hp}"), async {
                    c.iam
                        .update_open_id_connect_provider_thumbprint()
                        .open_id_connect_provider_arn(&arn)
                        .set_thumbprint_list(thumbprints.clone())
                        .send()
                        .await
                        .map_err(|e| sdk_error(c, op, &hp, e))
                })?;
            }
            let changed_tags = tags_to_set(tags.as_deref(), &l.tags);
            if !changed_tags.is_empty() {
                let op = "iam:TagOpenIDConnectProvider";
                let tag_list = iam_tags(&changed_tags)?;
                host.mutate(&format!("{op} {hp}"), async {
                    c.iam
                        .tag_open_id_connect_provider()
                        .open_id_connect_provider_arn(&arn)
                        .set_tags(Some(tag_list))
                        .send()
                        .await
                        .map_err(|e| sdk_error(c, op, &hp, e))
                })?;
            }
            let live = get_provider(&host, c, &arn, &hp)?.ok_or_else(|| {
                HostError::new(
                    ErrorKind::Conflict,
                    format!("OIDC provider `{hp}` vanished while being updated"),
                )
            })?;
            provider_object(&arn, &hp, &live.client_ids, &live.thumbprints, &live.tags)
        }
    };
    let mut change = Change::new("aws.iam.oidc_provider", hp.clone(), action).with_fields(fields);
    if let Some(n) = note {
        change = change.with_note(n);
    }
    let change = host.journal().record(change);
    let mut out = change.outcome(from_json(&object));
    out.insert(
        "arn".into(),
        object["arn"].as_str().unwrap_or(&arn).to_string().into(),
    );
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// Roles

struct LiveRole {
    arn: String,
    role_id: String,
    path: String,
    trust: Value,
    description: Option<String>,
    max_session: Option<i32>,
    tags: Value,
    created: Dynamic,
    policies: Vec<String>,
    /// Inline policies by name, with their documents when fetched.
    inline: Vec<(String, Option<Value>)>,
}

/// Reads a role, its attached policies and inline policy names; documents of the inline
/// policies named in `docs_for` (or all, with `all_docs`).
fn read_role(
    host: &Host,
    c: &Clients,
    name: &str,
    docs_for: &[String],
    all_docs: bool,
) -> Result<Option<LiveRole>, HostError> {
    host.read(&format!("iam:GetRole {name}"), async {
        let role = match c.iam.get_role().role_name(name).send().await {
            Ok(o) => match o.role {
                Some(r) => r,
                None => return Ok(None),
            },
            Err(e) if has_code(&e, "NoSuchEntity") => return Ok(None),
            Err(e) => return Err(sdk_error(c, "iam:GetRole", name, e)),
        };
        let trust = match role.assume_role_policy_document() {
            Some(t) => policy::parse_document(t)?,
            None => Value::Null,
        };
        let attached = c
            .iam
            .list_attached_role_policies()
            .role_name(name)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error(c, "iam:ListAttachedRolePolicies", name, e))?;
        let names = c
            .iam
            .list_role_policies()
            .role_name(name)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error(c, "iam:ListRolePolicies", name, e))?;
        let mut inline = Vec::new();
        for pn in names {
            let doc = if all_docs || docs_for.contains(&pn) {
                let out = c
                    .iam
                    .get_role_policy()
                    .role_name(name)
                    .policy_name(&pn)
                    .send()
                    .await
                    .map_err(|e| sdk_error(c, "iam:GetRolePolicy", &format!("{name}/{pn}"), e))?;
                Some(policy::parse_document(out.policy_document())?)
            } else {
                None
            };
            inline.push((pn, doc));
        }
        Ok(Some(LiveRole {
            arn: role.arn().to_string(),
            role_id: role.role_id().to_string(),
            path: role.path().to_string(),
            trust,
            description: role.description().map(str::to_string),
            max_session: role.max_session_duration(),
            tags: tags_map(role.tags()),
            created: crate::aws::time(Some(role.create_date())),
            policies: attached
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_string))
                .collect(),
            inline,
        }))
    })
}

fn role_object(name: &str, r: &LiveRole) -> Map {
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    m.insert("arn".into(), r.arn.clone().into());
    m.insert("role_id".into(), r.role_id.clone().into());
    m.insert("path".into(), r.path.clone().into());
    m.insert("trust".into(), from_json(&r.trust));
    m.insert(
        "description".into(),
        r.description
            .clone()
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT),
    );
    m.insert(
        "max_session".into(),
        r.max_session
            .map(|s| Dynamic::from(s as i64))
            .unwrap_or(Dynamic::UNIT),
    );
    m.insert("tags".into(), from_json(&r.tags));
    m.insert("created".into(), r.created.clone());
    m.insert(
        "policies".into(),
        r.policies
            .iter()
            .map(|p| Dynamic::from(p.clone()))
            .collect::<rhai::Array>()
            .into(),
    );
    let inline: Map = r
        .inline
        .iter()
        .map(|(n, d)| {
            (
                n.as_str().into(),
                d.as_ref().map(from_json).unwrap_or(Dynamic::TRUE),
            )
        })
        .collect();
    m.insert("inline".into(), inline.into());
    m
}

/// What the script asked of a role.
struct RoleSpec {
    trust: Value,
    policies: Vec<String>,
    inline: Vec<(String, Value)>,
    tags: Option<Vec<(String, String)>>,
    description: Option<String>,
    max_session: Option<i32>,
    exclusive: bool,
    path: String,
}

const ROLE_OPTIONS: &[&str] = &[
    "trust",
    "policies",
    "inline",
    "tags",
    "description",
    "max_session",
    "exclusive",
    "path",
];

fn role_spec(name: &str, opts: &Map) -> Result<RoleSpec, HostError> {
    let what = "aws::iam::ensure_role";
    check_keys(what, opts, ROLE_OPTIONS)?;
    if name.is_empty() || name.len() > 64 {
        return Err(HostError::input(format!(
            "`{name}` is not a valid IAM role name (1 to 64 characters)"
        )));
    }
    let trust = match opts.get("trust") {
        Some(t) if !t.is_unit() => policy_value(t, "option `trust`")?,
        _ => {
            return Err(
                HostError::input(format!("`{what}` for `{name}` needs a `trust` policy"))
                    .with_hint(
                        "build one with `aws::iam::irsa_trust(issuer, namespace, service_account)`",
                    ),
            );
        }
    };
    let mut inline = Vec::new();
    match opts.get("inline") {
        None => {}
        Some(d) if d.is_unit() => {}
        Some(d) => {
            let m = d.read_lock::<Map>().ok_or_else(|| {
                HostError::input("option `inline` must be a map of policy name to policy document")
            })?;
            for (k, v) in m.iter() {
                inline.push((
                    k.to_string(),
                    policy_value(v, &format!("inline policy `{k}`"))?,
                ));
            }
        }
    }
    let max_session = opt_int(opts, "max_session")?
        .map(|s| {
            if (3600..=43200).contains(&s) {
                Ok(s as i32)
            } else {
                Err(HostError::input(format!(
                    "option `max_session` is {s}; IAM allows 3600 to 43200 seconds"
                )))
            }
        })
        .transpose()?;
    let path = opt_str(opts, "path")?.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || !path.ends_with('/') {
        return Err(HostError::input(format!(
            "option `path` is `{path}`; an IAM path starts and ends with `/`"
        )));
    }
    Ok(RoleSpec {
        trust,
        policies: opt_strings(opts, "policies")?.unwrap_or_default(),
        inline,
        tags: opt_tags(opts, "tags")?,
        description: opt_str(opts, "description")?,
        max_session,
        exclusive: opt_bool(opts, "exclusive")?.unwrap_or(false),
        path,
    })
}

/// Desired and live as JSON for the per-field diff, and the fields that differ.
fn role_fields(spec: &RoleSpec, live: Option<&LiveRole>) -> Vec<FieldChange> {
    let mut desired = serde_json::Map::new();
    let mut current = serde_json::Map::new();
    if let Some(d) = &spec.description {
        desired.insert("description".into(), json!(d));
    }
    if let Some(s) = spec.max_session {
        desired.insert("max_session".into(), json!(s));
    }
    if let Some(t) = &spec.tags {
        desired.insert(
            "tags".into(),
            Value::Object(t.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
        );
    }
    let mut policies: serde_json::Map<String, Value> = spec
        .policies
        .iter()
        .map(|p| (p.clone(), Value::Bool(true)))
        .collect();
    let mut inline: serde_json::Map<String, Value> = spec
        .inline
        .iter()
        .map(|(n, d)| (n.clone(), policy::for_diff(d)))
        .collect();
    if let Some(l) = live {
        if spec.exclusive {
            for p in l.policies.iter().filter(|p| !spec.policies.contains(p)) {
                policies.insert(p.clone(), Value::Null);
            }
            for (n, _) in l
                .inline
                .iter()
                .filter(|(n, _)| !spec.inline.iter().any(|(m, _)| m == n))
            {
                inline.insert(n.clone(), Value::Null);
            }
        }
        current.insert("description".into(), json!(l.description));
        current.insert("max_session".into(), json!(l.max_session));
        current.insert("tags".into(), l.tags.clone());
        current.insert(
            "policies".into(),
            Value::Object(
                l.policies
                    .iter()
                    .map(|p| (p.clone(), Value::Bool(true)))
                    .collect(),
            ),
        );
        current.insert(
            "inline".into(),
            Value::Object(
                l.inline
                    .iter()
                    .map(|(n, d)| {
                        (
                            n.clone(),
                            d.as_ref()
                                .map(policy::for_diff)
                                .unwrap_or(Value::Bool(true)),
                        )
                    })
                    .collect(),
            ),
        );
    }
    if !policies.is_empty() {
        desired.insert("policies".into(), Value::Object(policies));
    }
    if !inline.is_empty() {
        desired.insert("inline".into(), Value::Object(inline));
    }
    // The trust policy and inline documents compare whole (added, changed and removed fields).
    let mut fields = policy::doc_diff(&spec.trust, live.map(|l| &l.trust), "trust");
    let live_json = live.map(|_| Value::Object(current));
    fields.extend(diff::diff(
        &Value::Object(desired),
        live_json.as_ref(),
        &|_| false,
    ));
    if let Some(l) = live {
        for (n, d) in &spec.inline {
            if let Some((_, Some(ld))) = l.inline.iter().find(|(m, _)| m == n) {
                let mut extra = Vec::new();
                policy::removed(
                    &policy::for_diff(d),
                    &policy::for_diff(ld),
                    &format!("inline.{n}"),
                    &mut extra,
                );
                fields.extend(extra);
            }
        }
    }
    fields
}

fn ensure_role(ctx: &NativeCallContext, name: &str, opts: &Map) -> RhaiResult<Map> {
    super::converge_racing("IAM role", name, || ensure_role_pass(ctx, name, opts))
}

/// One pass of `ensure_role`; `None` when it lost a create race.
fn ensure_role_pass(ctx: &NativeCallContext, name: &str, opts: &Map) -> RhaiResult<Option<Map>> {
    let spec = role_spec(name, opts)?;
    let host = Host::of(ctx)?;
    let c = &*clients(&host)?;
    let id = identity(&host, c)?;
    let names: Vec<String> = spec.inline.iter().map(|(n, _)| n.clone()).collect();
    let live = read_role(&host, c, name, &names, spec.exclusive)?;
    let fields = role_fields(&spec, live.as_ref());
    let action = match (&live, fields.is_empty()) {
        (None, _) => Action::Create,
        (Some(_), false) => Action::Update,
        (Some(_), true) => Action::Unchanged,
    };
    let trust_text = serde_json::to_string(&spec.trust).unwrap_or_default();
    let object = match (live, action) {
        (Some(l), Action::Unchanged) => role_object(name, &l),
        (live, _) if host.is_plan() => {
            let mut predicted = live.unwrap_or_else(|| LiveRole {
                arn: role_arn(&id, &spec.path, name),
                role_id: UNKNOWN.into(),
                path: spec.path.clone(),
                trust: Value::Null,
                description: None,
                max_session: None,
                tags: json!({}),
                created: Dynamic::from(UNKNOWN.to_string()),
                policies: Vec::new(),
                inline: Vec::new(),
            });
            apply_spec(&mut predicted, &spec);
            role_object(name, &predicted)
        }
        (None, _) => {
            let op = "iam:CreateRole";
            let tags = iam_tags(&spec.tags.clone().unwrap_or_default())?;
            let created = retry_principal(&host, || {
                host.mutate(&format!("{op} {name}"), async {
                    match c
                        .iam
                        .create_role()
                        .role_name(name)
                        .path(&spec.path)
                        .assume_role_policy_document(&trust_text)
                        .set_description(spec.description.clone())
                        .set_max_session_duration(spec.max_session)
                        .set_tags((!tags.is_empty()).then(|| tags.clone()))
                        .send()
                        .await
                    {
                        // Created by somebody else since our read: converge that one.
                        Err(e) if has_code(&e, "EntityAlreadyExists") => Ok(Attempt::Done(false)),
                        other => principal_attempt(c, op, name, other.map(|_| true)),
                    }
                })
            })?;
            if !created {
                return Ok(None);
            }
            converge_policies(&host, c, name, &spec, &[], &[])?;
            role_after(&host, c, name, &names)?
        }
        (Some(l), _) => {
            let top: Vec<&str> = fields.iter().map(|f| top_field(&f.path)).collect();
            if top.contains(&"trust") {
                let op = "iam:UpdateAssumeRolePolicy";
                retry_principal(&host, || {
                    host.mutate(&format!("{op} {name}"), async {
                        let sent = c
                            .iam
                            .update_assume_role_policy()
                            .role_name(name)
                            .policy_document(&trust_text)
                            .send()
                            .await;
                        principal_attempt(c, op, name, sent)
                    })
                })?;
            }
            if top.contains(&"description") || top.contains(&"max_session") {
                let op = "iam:UpdateRole";
                host.mutate(&format!("{op} {name}"), async {
                    c.iam
                        .update_role()
                        .role_name(name)
                        .set_description(spec.description.clone())
                        .set_max_session_duration(spec.max_session)
                        .send()
                        .await
                        .map_err(|e| sdk_error(c, op, name, e))
                })?;
            }
            let changed_tags = tags_to_set(spec.tags.as_deref(), &l.tags);
            if !changed_tags.is_empty() {
                let op = "iam:TagRole";
                let tags = iam_tags(&changed_tags)?;
                host.mutate(&format!("{op} {name}"), async {
                    c.iam
                        .tag_role()
                        .role_name(name)
                        .set_tags(Some(tags))
                        .send()
                        .await
                        .map_err(|e| sdk_error(c, op, name, e))
                })?;
            }
            converge_policies(&host, c, name, &spec, &l.policies, &l.inline)?;
            role_after(&host, c, name, &names)?
        }
    };
    let change = host
        .journal()
        .record(Change::new("aws.iam.role", name, action).with_fields(fields));
    let arn = object.get("arn").cloned().unwrap_or(Dynamic::UNIT);
    let mut out = change.outcome(object.into());
    out.insert("arn".into(), arn);
    Ok(Some(out))
}

/// The role as it will be once `spec` is applied (for plan mode).
fn apply_spec(r: &mut LiveRole, spec: &RoleSpec) {
    r.trust = spec.trust.clone();
    if spec.description.is_some() {
        r.description = spec.description.clone();
    }
    if spec.max_session.is_some() {
        r.max_session = spec.max_session;
    }
    for (k, v) in spec.tags.iter().flatten() {
        r.tags[k] = json!(v);
    }
    if spec.exclusive {
        r.policies.retain(|p| spec.policies.contains(p));
        r.inline
            .retain(|(n, _)| spec.inline.iter().any(|(m, _)| m == n));
    }
    for p in &spec.policies {
        if !r.policies.contains(p) {
            r.policies.push(p.clone());
        }
    }
    for (n, d) in &spec.inline {
        r.inline.retain(|(m, _)| m != n);
        r.inline.push((n.clone(), Some(d.clone())));
    }
}

fn role_after(host: &Host, c: &Clients, name: &str, names: &[String]) -> Result<Map, HostError> {
    let live = read_role(host, c, name, names, false)?.ok_or_else(|| {
        HostError::new(
            ErrorKind::Conflict,
            format!("IAM role `{name}` vanished while being changed"),
        )
    })?;
    Ok(role_object(name, &live))
}

/// Attaches missing managed policies and puts differing inline ones; with `exclusive`,
/// detaches and deletes the ones the script does not list.
fn converge_policies(
    host: &Host,
    c: &Clients,
    name: &str,
    spec: &RoleSpec,
    attached: &[String],
    inline: &[(String, Option<Value>)],
) -> Result<(), HostError> {
    for p in spec.policies.iter().filter(|p| !attached.contains(p)) {
        let send = c
            .iam
            .attach_role_policy()
            .role_name(name)
            .policy_arn(p)
            .send();
        role_policy_call(host, c, "iam:AttachRolePolicy", name, p, send).map_err(|err| {
            if err.kind == ErrorKind::NotFound {
                err.with_hint("check the policy ARN (AWS managed ones look like `arn:aws:iam::aws:policy/AmazonS3FullAccess`)")
            } else {
                err
            }
        })?;
    }
    if spec.exclusive {
        for p in attached.iter().filter(|p| !spec.policies.contains(p)) {
            let send = c
                .iam
                .detach_role_policy()
                .role_name(name)
                .policy_arn(p)
                .send();
            role_policy_call(host, c, "iam:DetachRolePolicy", name, p, send)?;
        }
        for (n, _) in inline
            .iter()
            .filter(|(n, _)| !spec.inline.iter().any(|(m, _)| m == n))
        {
            let send = c
                .iam
                .delete_role_policy()
                .role_name(name)
                .policy_name(n)
                .send();
            role_policy_call(host, c, "iam:DeleteRolePolicy", name, n, send)?;
        }
    }
    for (n, d) in &spec.inline {
        let same = inline
            .iter()
            .any(|(m, ld)| m == n && ld.as_ref().is_some_and(|ld| policy::same(d, ld)));
        if same {
            continue;
        }
        let text = serde_json::to_string(d).unwrap_or_default();
        let send = c
            .iam
            .put_role_policy()
            .role_name(name)
            .policy_name(n)
            .policy_document(&text)
            .send();
        role_policy_call(host, c, "iam:PutRolePolicy", name, n, send)?;
    }
    Ok(())
}

/// Runs one change to a policy of role `role` (`policy`: an attached ARN or an inline name) as
/// a mutation; a failure names the operation, the role and the policy.
fn role_policy_call<O, E>(
    host: &Host,
    c: &Clients,
    op: &str,
    role: &str,
    policy: &str,
    send: impl Future<
        Output = Result<
            O,
            aws_sdk_iam::error::SdkError<E, aws_sdk_iam::config::http::HttpResponse>,
        >,
    >,
) -> Result<(), HostError>
where
    E: aws_sdk_iam::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    host.mutate(&format!("{op} {role} {policy}"), async {
        send.await
            .map(|_| ())
            .map_err(|e| sdk_error(c, op, &format!("{role}` / `{policy}"), e))
    })
}

/// One try of a call whose trust policy names an OIDC provider: IAM may refuse it for a few
/// seconds ("Invalid principal in policy") while it propagates a provider created moments ago.
enum Attempt<T> {
    Done(T),
    Propagating(HostError),
}

/// The answer to an IAM call that may be refused while a new OIDC provider propagates: the
/// SDK error's code (`MalformedPolicyDocument`) and IAM's own message name the principal.
fn principal_attempt<T, E>(
    c: &Clients,
    op: &str,
    name: &str,
    result: Result<T, aws_sdk_iam::error::SdkError<E, aws_sdk_iam::config::http::HttpResponse>>,
) -> Result<Attempt<T>, HostError>
where
    E: aws_sdk_iam::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(v) => Ok(Attempt::Done(v)),
        Err(e) => {
            let propagating = has_code(&e, "MalformedPolicyDocument")
                && aws_sdk_iam::error::ProvideErrorMetadata::message(&e)
                    .is_some_and(|m| m.contains("principal"));
            let err = sdk_error(c, op, name, e);
            if propagating {
                Ok(Attempt::Propagating(HostError::new(ErrorKind::Conflict, err.message).with_hint(
                    "the trust policy names an OIDC provider IAM does not know (yet); check `aws::iam::ensure_oidc_provider` ran for this issuer",
                )))
            } else {
                Err(err)
            }
        }
    }
}

/// Runs `f` until it is not refused for a propagating principal (5 retries, 2, 4, ... seconds
/// apart); the last refusal is the error.
fn retry_principal<T>(
    host: &Host,
    mut f: impl FnMut() -> Result<Attempt<T>, HostError>,
) -> Result<T, HostError> {
    let mut attempt = 0;
    loop {
        match f()? {
            Attempt::Done(v) => return Ok(v),
            Attempt::Propagating(e) if attempt >= 5 => return Err(e),
            Attempt::Propagating(_) => {
                attempt += 1;
                host.sleep(std::time::Duration::from_secs(2 * attempt));
            }
        }
    }
}

#[export_module]
pub mod iam_module {
    use super::*;

    /// Ensures the IAM OIDC provider of an EKS issuer exists (what the guide's
    /// `eksctl utils associate-iam-oidc-provider` does): present → unchanged; absent → created
    /// with client id `sts.amazonaws.com` and the issuer's thumbprint (SHA-1 of the last
    /// certificate of its TLS chain, verified with the system's roots or `SSL_CERT_FILE`; when
    /// the issuer cannot be reached none is set, which AWS accepts for EKS; a chain that does
    /// not verify is an error: pass `thumbprints` then). Returns `#{arn, changed, object,
    /// diff}`; in plan mode `arn` is the predictable `arn:aws:iam::ACCOUNT:oidc-provider/HOST/PATH`.
    ///
    /// ```rhai
    /// let provider = aws::iam::ensure_oidc_provider(aws::eks::oidc_issuer(config.cluster_name));
    /// print(provider.arn);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_oidc_provider(ctx: NativeCallContext, issuer: &str) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        super::ensure_oidc_provider(&ctx, issuer, &Map::new())
    }

    /// `ensure_oidc_provider` with options: `thumbprints` (list of SHA-1 hex; replaces the
    /// provider's list when it differs), `client_ids` (added when missing; default
    /// `["sts.amazonaws.com"]`), `tags` (map).
    ///
    /// ```rhai
    /// let issuer = aws::eks::oidc_issuer(config.cluster_name);
    /// aws::iam::ensure_oidc_provider(issuer, #{
    ///     thumbprints: ["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"],
    ///     tags: #{ "managed-by": "collate-run" },
    /// });
    /// ```
    #[rhai_fn(name = "ensure_oidc_provider", return_raw)]
    pub fn ensure_oidc_provider_with(
        ctx: NativeCallContext,
        issuer: &str,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        super::ensure_oidc_provider(&ctx, issuer, &opts)
    }

    /// The IAM OIDC provider of an issuer as `#{arn, url, client_ids, thumbprints, tags}`, or
    /// `()` when there is none.
    ///
    /// ```rhai
    /// let p = aws::iam::get_oidc_provider(aws::eks::oidc_issuer(config.cluster_name));
    /// if p == () { print("no OIDC provider yet"); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn get_oidc_provider(ctx: NativeCallContext, issuer: &str) -> RhaiResult<Dynamic> {
        let host = Host::of(&ctx)?;
        let hp = issuer_host_path(issuer)?;
        let c = &*clients(&host)?;
        let arn = oidc_provider_arn(&identity(&host, c)?, &hp);
        Ok(match get_provider(&host, c, &arn, &hp)? {
            Some(l) => from_json(&provider_object(
                &arn,
                &hp,
                &l.client_ids,
                &l.thumbprints,
                &l.tags,
            )),
            None => Dynamic::UNIT,
        })
    }

    /// The guide's IRSA trust policy: the issuer's OIDC provider may assume the role for the
    /// ServiceAccount `namespace/service_account`, with `:sub` =
    /// `system:serviceaccount:NAMESPACE:SA` and `:aud` = `sts.amazonaws.com`. The issuer may be
    /// given with or without `https://`.
    ///
    /// ```rhai
    /// let issuer = aws::eks::oidc_issuer(config.cluster_name);
    /// let trust = aws::iam::irsa_trust(issuer, "collate", "openmetadata");
    /// aws::iam::ensure_role("collate-server-role", #{ trust: trust });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn irsa_trust(
        ctx: NativeCallContext,
        issuer: &str,
        namespace: &str,
        service_account: &str,
    ) -> RhaiResult<Map> {
        let host = Host::of(&ctx)?;
        let hp = issuer_host_path(issuer)?;
        if namespace.is_empty() || service_account.is_empty() {
            return Err(HostError::input(
                "`aws::iam::irsa_trust` needs a namespace and a service account name",
            )
            .into());
        }
        let c = &*clients(&host)?;
        let arn = oidc_provider_arn(&identity(&host, c)?, &hp);
        Ok(from_json(&irsa_trust_policy(&arn, &hp, namespace, service_account)).cast::<Map>())
    }

    /// Ensures an IAM role: created when absent; otherwise the trust policy is updated when it
    /// differs as JSON (IAM's URL-encoding, key order and whitespace do not count), missing
    /// managed `policies` (ARNs) are attached, `inline` policies (map of name → policy map or
    /// JSON text) are put when they differ, `tags` are added or changed, `description` and
    /// `max_session` (seconds) updated. With `exclusive: true`, attached policies and inline
    /// policies the script does not list are removed. `path` (default `/`) is used on create.
    /// Returns `#{arn, changed, object, diff}`; `object` is `#{name, arn, role_id, path, trust,
    /// description, max_session, tags, created, policies, inline}`. In plan mode nothing
    /// changes and `arn` is the predictable `arn:aws:iam::ACCOUNT:role/NAME`.
    ///
    /// ```rhai
    /// let issuer = aws::eks::oidc_issuer(config.cluster_name);
    /// let role = aws::iam::ensure_role("collate-server-role", #{
    ///     trust: aws::iam::irsa_trust(issuer, "collate", "openmetadata"),
    ///     policies: ["arn:aws:iam::aws:policy/AmazonS3FullAccess"],
    ///     tags: #{ "managed-by": "collate-run" },
    /// });
    /// print(role.arn);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_role(ctx: NativeCallContext, name: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        super::ensure_role(&ctx, name, &opts)
    }

    /// An IAM role as `#{name, arn, role_id, path, trust, description, max_session, tags,
    /// created, policies: [attached ARNs], inline: #{name: document}}`, or `()` when absent.
    ///
    /// ```rhai
    /// let role = aws::iam::get_role("collate-server-role");
    /// if role != () { print(role.policies); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn get_role(ctx: NativeCallContext, name: &str) -> RhaiResult<Dynamic> {
        let host = Host::of(&ctx)?;
        let c = &*clients(&host)?;
        Ok(match read_role(&host, c, name, &[], true)? {
            Some(r) => role_object(name, &r).into(),
            None => Dynamic::UNIT,
        })
    }

    /// The ARN a role of this name has in the account of the run (no call besides the account
    /// id), e.g. for a ServiceAccount annotation in plan mode.
    ///
    /// ```rhai
    /// let arn = aws::iam::role_arn("collate-ingestion-role");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn role_arn(ctx: NativeCallContext, name: &str) -> RhaiResult<String> {
        let host = Host::of(&ctx)?;
        let c = &*clients(&host)?;
        Ok(super::role_arn(&identity(&host, c)?, "/", name))
    }
}
