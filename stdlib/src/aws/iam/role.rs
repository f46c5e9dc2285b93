//! IAM roles as a converge resource (see [`crate::converge`]): the trust policy compared as
//! JSON, managed and inline policies (with `exclusive`, the unlisted ones removed), tags,
//! description and session length; calls IAM refuses while a new OIDC provider propagates are
//! retried.

use rhai::{Dynamic, Map, NativeCallContext};
use serde_json::{Value, json};

use super::{TagSpec, UNKNOWN, iam_tags, policy_value, role_arn, tags_map};
use crate::aws::{Clients, clients, has_code, identity, policy, sdk_error};
use crate::converge::{self, Applied, Planned, Resource};
use crate::diff;
use crate::error::{ErrorKind, HostError, RhaiResult};
use crate::host::Host;
use crate::journal::FieldChange;
use crate::value::{check_keys, from_json, opt};

#[derive(Clone)]
pub(super) struct LiveRole {
    arn: String,
    role_id: String,
    path: String,
    /// The ARN of the permissions boundary, if any.
    boundary: Option<String>,
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
pub(super) fn read_role(
    host: &Host,
    c: &Clients,
    name: &str,
    docs_for: &[String],
    all_docs: bool,
) -> Result<Option<LiveRole>, HostError> {
    host.read(&format!("iam:GetRole {name}"), async {
        // The role, its attached policies and its inline policy names in one round: a missing
        // role fails all three, and the role's answer decides.
        let (role, attached, names) = futures::join!(
            c.iam.get_role().role_name(name).send(),
            c.iam
                .list_attached_role_policies()
                .role_name(name)
                .into_paginator()
                .items()
                .send()
                .try_collect(),
            c.iam
                .list_role_policies()
                .role_name(name)
                .into_paginator()
                .items()
                .send()
                .try_collect(),
        );
        let role = match role {
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
        let attached =
            attached.map_err(|e| sdk_error(c, "iam:ListAttachedRolePolicies", name, e))?;
        let names: Vec<String> =
            names.map_err(|e| sdk_error(c, "iam:ListRolePolicies", name, e))?;
        // The documents wanted, in one more round.
        let docs = futures::future::try_join_all(names.iter().map(|pn| async move {
            if !(all_docs || docs_for.contains(pn)) {
                return Ok(None);
            }
            let out = c
                .iam
                .get_role_policy()
                .role_name(name)
                .policy_name(pn)
                .send()
                .await
                .map_err(|e| sdk_error(c, "iam:GetRolePolicy", &format!("{name}/{pn}"), e))?;
            Ok::<_, HostError>(Some(policy::parse_document(out.policy_document())?))
        }))
        .await?;
        let inline: Vec<(String, Option<Value>)> = names.into_iter().zip(docs).collect();
        Ok(Some(LiveRole {
            arn: role.arn().to_string(),
            role_id: role.role_id().to_string(),
            path: role.path().to_string(),
            boundary: role
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_string),
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

pub(super) fn role_object(name: &str, r: &LiveRole) -> Map {
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    m.insert("arn".into(), r.arn.clone().into());
    m.insert("role_id".into(), r.role_id.clone().into());
    m.insert("path".into(), r.path.clone().into());
    m.insert(
        "permissions_boundary".into(),
        r.boundary
            .clone()
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT),
    );
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
    tags: TagSpec,
    description: Option<String>,
    max_session: Option<i32>,
    exclusive: bool,
    /// Asked for: checked against an existing role's (IAM cannot move a role); `/` on create.
    path: Option<String>,
    /// `None`: left as it is; `Some(None)`: removed; `Some(Some(arn))`: that policy.
    boundary: Option<Option<String>>,
}

impl RoleSpec {
    /// Nothing asked, every policy unlisted (`exclusive`): what a role to delete is read with,
    /// and how its policies are removed.
    fn none() -> RoleSpec {
        RoleSpec {
            trust: Value::Null,
            policies: Vec::new(),
            inline: Vec::new(),
            tags: TagSpec::default(),
            description: None,
            max_session: None,
            exclusive: true,
            path: None,
            boundary: None,
        }
    }
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
    "permissions_boundary",
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
    let max_session = opt::<i64>(opts, "max_session")?
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
    let path = opt::<String>(opts, "path")?;
    if let Some(path) = path
        .as_ref()
        .filter(|p| !p.starts_with('/') || !p.ends_with('/'))
    {
        return Err(HostError::input(format!(
            "option `path` is `{path}`; an IAM path starts and ends with `/`"
        )));
    }
    let boundary = opt::<String>(opts, "permissions_boundary")?
        .map(|arn| {
            if arn.is_empty() {
                Ok(None)
            } else if arn.starts_with("arn:") && arn.contains(":policy/") {
                Ok(Some(arn))
            } else {
                Err(HostError::input(format!(
                    "option `permissions_boundary` is `{arn}`, not a managed policy ARN"
                ))
                .with_hint("e.g. `arn:aws:iam::123456789012:policy/DeveloperBoundary`; `\"\"` removes the boundary"))
            }
        })
        .transpose()?;
    Ok(RoleSpec {
        trust,
        policies: opt::<Vec<String>>(opts, "policies")?.unwrap_or_default(),
        inline,
        tags: TagSpec::parse(opts)?,
        description: opt::<String>(opts, "description")?,
        max_session,
        exclusive: opt::<bool>(opts, "exclusive")?.unwrap_or(false),
        path,
        boundary,
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
    if let Some(b) = &spec.boundary {
        desired.insert("permissions_boundary".into(), json!(b));
    }
    if !spec.tags.is_empty() {
        desired.insert("tags".into(), spec.tags.desired());
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
        current.insert("permissions_boundary".into(), json!(l.boundary));
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

/// The role the script asks for (to ensure), or the one to delete ([`RoleSpec::none`]).
struct Role<'a> {
    c: &'a Clients,
    name: &'a str,
    spec: RoleSpec,
    /// The ARN it has (or will have) in the run's account.
    arn: String,
    /// The inline policies the script names (their documents are read).
    inline_names: Vec<String>,
}

impl Role<'_> {
    fn trust_text(&self) -> String {
        serde_json::to_string(&self.spec.trust).unwrap_or_default()
    }
}

impl Resource for Role<'_> {
    type State = Option<LiveRole>;
    type Object = Map;

    fn kind(&self) -> String {
        "aws.iam.role".into()
    }
    fn name(&self) -> String {
        self.name.to_string()
    }
    fn read(&self, host: &Host) -> Result<Option<LiveRole>, HostError> {
        read_role(
            host,
            self.c,
            self.name,
            &self.inline_names,
            self.spec.exclusive,
        )
    }
    fn exists(&self, live: &Option<LiveRole>) -> bool {
        live.is_some()
    }
    fn diff(&self, _: &Host, live: &Option<LiveRole>) -> Result<Planned, HostError> {
        if let (Some(l), Some(want)) = (live, &self.spec.path)
            && &l.path != want
        {
            // IAM has no call that moves a role to another path (UpdateRole takes none).
            return Err(HostError::new(
                ErrorKind::Conflict,
                format!(
                    "IAM role `{}` exists with path `{}`, not `{want}`: IAM cannot change the path of a role",
                    self.name, l.path
                ),
            )
            .with_hint(format!(
                "keep path `{}`, or delete the role (`aws::iam::delete_role(\"{}\")`) and run again to create it under `{want}`",
                l.path, self.name
            )));
        }
        Ok(Planned::fields(role_fields(&self.spec, live.as_ref())))
    }
    fn current(&self, live: &Option<LiveRole>) -> Map {
        match live {
            Some(l) => role_object(self.name, l),
            None => Map::new(),
        }
    }
    fn predict(&self, _: &Host, live: &Option<LiveRole>, _: &Planned) -> Result<Map, HostError> {
        let spec = &self.spec;
        let mut predicted = match live {
            Some(l) => l.clone(),
            None => LiveRole {
                arn: self.arn.clone(),
                role_id: UNKNOWN.into(),
                path: spec.path.clone().unwrap_or_else(|| "/".into()),
                boundary: None,
                trust: Value::Null,
                description: None,
                max_session: None,
                tags: json!({}),
                created: Dynamic::from(UNKNOWN.to_string()),
                policies: Vec::new(),
                inline: Vec::new(),
            },
        };
        apply_spec(&mut predicted, spec);
        Ok(role_object(self.name, &predicted))
    }
    fn create(
        &self,
        host: &Host,
        _: &Option<LiveRole>,
        _: &mut Planned,
    ) -> Result<Applied<Map>, HostError> {
        let (c, name, spec) = (self.c, self.name, &self.spec);
        let op = "iam:CreateRole";
        let tags = iam_tags(&spec.tags.set)?;
        let trust_text = self.trust_text();
        let created = retry_principal(host, || {
            host.mutate(&format!("{op} {name}"), async {
                match c
                    .iam
                    .create_role()
                    .role_name(name)
                    .path(spec.path.as_deref().unwrap_or("/"))
                    .set_permissions_boundary(spec.boundary.clone().flatten())
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
            return Ok(Applied::Raced);
        }
        converge_policies(host, c, name, spec, &[], &[])?;
        self.after(host)
    }
    fn update(
        &self,
        host: &Host,
        live: &Option<LiveRole>,
        planned: &mut Planned,
    ) -> Result<Applied<Map>, HostError> {
        let (c, name, spec) = (self.c, self.name, &self.spec);
        let Some(l) = live else {
            return Ok(Applied::Raced);
        };
        if planned.touches("trust") {
            let op = "iam:UpdateAssumeRolePolicy";
            let trust_text = self.trust_text();
            retry_principal(host, || {
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
        if planned.touches("description") || planned.touches("max_session") {
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
        if planned.touches("permissions_boundary") {
            match spec.boundary.clone().flatten() {
                Some(arn) => {
                    let op = "iam:PutRolePermissionsBoundary";
                    host.mutate(&format!("{op} {name}"), async {
                        c.iam
                            .put_role_permissions_boundary()
                            .role_name(name)
                            .permissions_boundary(&arn)
                            .send()
                            .await
                            .map_err(|e| sdk_error(c, op, name, e))
                    })?;
                }
                None => {
                    let op = "iam:DeleteRolePermissionsBoundary";
                    host.mutate(&format!("{op} {name}"), async {
                        c.iam
                            .delete_role_permissions_boundary()
                            .role_name(name)
                            .send()
                            .await
                            .map_err(|e| sdk_error(c, op, name, e))
                    })?;
                }
            }
        }
        let gone_tags = spec.tags.to_remove(&l.tags);
        if !gone_tags.is_empty() {
            let op = "iam:UntagRole";
            host.mutate(&format!("{op} {name}"), async {
                c.iam
                    .untag_role()
                    .role_name(name)
                    .set_tag_keys(Some(gone_tags.clone()))
                    .send()
                    .await
                    .map_err(|e| sdk_error(c, op, name, e))
            })?;
        }
        let changed_tags = spec.tags.to_set(&l.tags);
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
        converge_policies(host, c, name, spec, &l.policies, &l.inline)?;
        self.after(host)
    }
    fn deletion_fields(&self, live: &Option<LiveRole>) -> Vec<FieldChange> {
        let Some(l) = live else { return Vec::new() };
        let gone = |path: String, before: Value| FieldChange {
            path,
            before: Some(before),
            after: None,
        };
        let mut f = vec![gone("trust".into(), l.trust.clone())];
        f.extend(
            l.policies
                .iter()
                .map(|p| gone(crate::value::join_path("policies", p), json!(true))),
        );
        f.extend(
            l.inline
                .iter()
                .map(|(n, _)| gone(crate::value::join_path("inline", n), json!(true))),
        );
        f
    }
    /// Deletes the role (`self.spec` is [`RoleSpec::none`]): IAM refuses to delete a role that
    /// has policies or instance profiles, so they go first.
    fn delete(&self, host: &Host, live: &Option<LiveRole>) -> Result<(), HostError> {
        let (c, name) = (self.c, self.name);
        let Some(l) = live else { return Ok(()) };
        // Managed policies detached, inline ones deleted: what an `exclusive` converge to no
        // policies does.
        converge_policies(host, c, name, &self.spec, &l.policies, &l.inline)?;
        let op = "iam:ListInstanceProfilesForRole";
        let profiles = host.read(&format!("{op} {name}"), async {
            c.iam
                .list_instance_profiles_for_role()
                .role_name(name)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| sdk_error(c, op, name, e))
        })?;
        for p in profiles {
            let profile = p.instance_profile_name().to_string();
            let send = c
                .iam
                .remove_role_from_instance_profile()
                .role_name(name)
                .instance_profile_name(&profile)
                .send();
            role_policy_call(
                host,
                c,
                "iam:RemoveRoleFromInstanceProfile",
                name,
                &profile,
                send,
            )?;
        }
        let op = "iam:DeleteRole";
        host.mutate(&format!("{op} {name}"), async {
            match c.iam.delete_role().role_name(name).send().await {
                // Deleted by somebody else since our read: what we want.
                Err(e) if has_code(&e, "NoSuchEntity") => Ok(()),
                other => other.map(|_| ()).map_err(|e| sdk_error(c, op, name, e)),
            }
        })
    }
}

impl Role<'_> {
    /// The role as it is after a change; deleted since (by somebody else): read and converge
    /// again.
    fn after(&self, host: &Host) -> Result<Applied<Map>, HostError> {
        Ok(
            match read_role(host, self.c, self.name, &self.inline_names, false)? {
                Some(l) => Applied::Done(role_object(self.name, &l)),
                None => Applied::Raced,
            },
        )
    }
}

/// `aws::iam::delete_role(name)`.
pub(super) fn delete(ctx: &NativeCallContext, name: &str) -> RhaiResult<Map> {
    let host = Host::of(ctx)?;
    let c = &*clients(&host)?;
    let role = Role {
        c,
        name,
        spec: RoleSpec::none(),
        arn: String::new(),
        inline_names: Vec::new(),
    };
    let gone = converge::remove(&host, &role, Map::new())?;
    Ok(gone.outcome())
}

/// `aws::iam::ensure_role(name, opts)`.
pub(super) fn ensure(ctx: &NativeCallContext, name: &str, opts: &Map) -> RhaiResult<Map> {
    let spec = role_spec(name, opts)?;
    let host = Host::of(ctx)?;
    let c = &*clients(&host)?;
    let arn = role_arn(
        &identity(&host, c)?,
        spec.path.as_deref().unwrap_or("/"),
        name,
    );
    let role = Role {
        c,
        name,
        inline_names: spec.inline.iter().map(|(n, _)| n.clone()).collect(),
        spec,
        arn,
    };
    let done = converge::ensure(&host, &role)?;
    let arn = done.object.get("arn").cloned().unwrap_or(Dynamic::UNIT);
    let mut out = done.outcome();
    out.insert("arn".into(), arn);
    Ok(out)
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
    if let Some(b) = &spec.boundary {
        r.boundary = b.clone();
    }
    spec.tags.apply(&mut r.tags);
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
