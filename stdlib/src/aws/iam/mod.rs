//! The `aws::iam` namespace: the cluster's OIDC provider and the IRSA roles of the guide —
//! trust policies built for a ServiceAccount and compared as JSON, managed and inline
//! policies, tags. Plan mode predicts the ARNs. The provider and the role are converge resources
//! (`oidc.rs`, `role.rs`); this file holds the namespace and what both share.

use rhai::plugin::*;
use rhai::{Dynamic, Map};
use serde_json::{Value, json};

use crate::aws::{Identity, clients, identity};
use crate::error::{HostError, RhaiResult};
use crate::host::Host;
use crate::value::{Secrets, Tags, from_json, opt, to_json};

mod oidc;
mod role;

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

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME` (`path` starts and ends with `/`).
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

/// The `tags` option of a role or an OIDC provider: a map of key to value, where a value of `()`
/// removes the tag. Tags the map does not name stay (others may have set them).
#[derive(Default)]
struct TagSpec {
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

impl TagSpec {
    fn parse(opts: &Map) -> Result<TagSpec, HostError> {
        let Some(map) = opts.get("tags").filter(|t| !t.is_unit()) else {
            return Ok(TagSpec::default());
        };
        let Some(map) = map.read_lock::<Map>().map(|m| m.clone()) else {
            return Err(HostError::input(format!(
                "option `tags` must be a map, not `{}`",
                map.type_name()
            )));
        };
        let (gone, kept): (Map, Map) = map.into_iter().partition(|(_, v)| v.is_unit());
        let mut set = Map::new();
        set.insert("tags".into(), kept.into());
        Ok(TagSpec {
            set: Tags::non_empty(opt::<Tags>(&set, "tags")?).unwrap_or_default(),
            remove: gone.into_keys().map(|k| k.to_string()).collect(),
        })
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// The tags asked for as JSON (`null`: to remove), for the per-field diff.
    fn desired(&self) -> Value {
        let mut m: serde_json::Map<String, Value> = self
            .set
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        for k in &self.remove {
            m.insert(k.clone(), Value::Null);
        }
        Value::Object(m)
    }

    /// The tags `live` (a map) lacks or holds with another value.
    fn to_set(&self, live: &Value) -> Vec<(String, String)> {
        self.set
            .iter()
            .filter(|(k, v)| live.get(k).and_then(Value::as_str) != Some(v.as_str()))
            .cloned()
            .collect()
    }

    /// The tags to remove that `live` has.
    fn to_remove(&self, live: &Value) -> Vec<String> {
        self.remove
            .iter()
            .filter(|k| live.get(k.as_str()).is_some())
            .cloned()
            .collect()
    }

    /// `live` as it is once the tags are applied (plan mode).
    fn apply(&self, live: &mut Value) {
        for (k, v) in &self.set {
            live[k] = json!(v);
        }
        if let Some(m) = live.as_object_mut() {
            for k in &self.remove {
                m.remove(k);
            }
        }
    }
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
        oidc::ensure(&ctx, issuer, &Map::new())
    }

    /// `ensure_oidc_provider` with options: `thumbprints` (list of SHA-1 hex; replaces the
    /// provider's list when it differs), `client_ids` (added when missing; default
    /// `["sts.amazonaws.com"]`), `tags` (map: missing or different tags are set, a tag whose
    /// value is `()` is removed, tags not named stay: other workloads may have set them).
    ///
    /// ```rhai
    /// let issuer = aws::eks::oidc_issuer(config.cluster_name);
    /// aws::iam::ensure_oidc_provider(issuer, #{
    ///     thumbprints: ["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"],
    ///     tags: #{ "managed-by": "collate-run", "old-team": () },
    /// });
    /// ```
    #[rhai_fn(name = "ensure_oidc_provider", return_raw)]
    pub fn ensure_oidc_provider_with(
        ctx: NativeCallContext,
        issuer: &str,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        oidc::ensure(&ctx, issuer, &opts)
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
        Ok(match oidc::get_provider(&host, c, &arn, &hp)? {
            Some(l) => from_json(&oidc::provider_object(
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
    /// JSON text) are put when they differ, `tags` are added or changed (a tag whose value is
    /// `()` is removed), `description` and `max_session` (seconds) updated,
    /// `permissions_boundary` (a managed policy ARN; `""` removes it) put when it differs. With
    /// `exclusive: true`, attached policies and inline policies the script does not list are
    /// removed. `path` (default `/`) is the path a new role gets; IAM cannot move a role, so an
    /// existing role under another path is an error (a `conflict`, in plan mode too) naming both
    /// paths. Returns `#{arn, changed, object, diff}`; `object` is `#{name, arn, role_id, path,
    /// permissions_boundary, trust, description, max_session, tags, created, policies, inline}`.
    /// In plan mode nothing changes and `arn` is the predictable
    /// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
    ///
    /// ```rhai
    /// let issuer = aws::eks::oidc_issuer(config.cluster_name);
    /// let partition = aws::sts::caller_identity().partition;
    /// let role = aws::iam::ensure_role("collate-server-role", #{
    ///     trust: aws::iam::irsa_trust(issuer, "collate", "openmetadata"),
    ///     policies: [`arn:${partition}:iam::aws:policy/AmazonS3FullAccess`],
    ///     permissions_boundary: `arn:${partition}:iam::${aws::account_id()}:policy/Boundary`,
    ///     path: "/collate/",
    ///     tags: #{ "managed-by": "collate-run" },
    /// });
    /// print(role.arn);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_role(ctx: NativeCallContext, name: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        role::ensure(&ctx, name, &opts)
    }

    /// Deletes an IAM role: its managed policies are detached, its inline policies deleted and
    /// it is taken out of instance profiles first (IAM refuses otherwise). An absent role is
    /// `unchanged` ("already absent"). A plan lists what would go. Returns `#{changed, object,
    /// diff}` (`object`: the role as it was).
    ///
    /// ```rhai
    /// aws::iam::delete_role("collate-ingestion-role");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn delete_role(ctx: NativeCallContext, name: &str) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        role::delete(&ctx, name)
    }

    /// Deletes the IAM OIDC provider of an issuer (other workloads of the cluster may trust it:
    /// teardown deletes it only when asked). An absent provider is `unchanged`. Returns
    /// `#{changed, object, diff}`.
    ///
    /// ```rhai
    /// aws::iam::delete_oidc_provider(aws::eks::oidc_issuer(config.cluster_name));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn delete_oidc_provider(ctx: NativeCallContext, issuer: &str) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        oidc::delete(&ctx, issuer)
    }

    /// An IAM role as `#{name, arn, role_id, path, permissions_boundary, trust, description,
    /// max_session, tags, created, policies: [attached ARNs], inline: #{name: document}}`, or
    /// `()` when absent.
    ///
    /// ```rhai
    /// let role = aws::iam::get_role("collate-server-role");
    /// if role != () { print(role.policies); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn get_role(ctx: NativeCallContext, name: &str) -> RhaiResult<Dynamic> {
        let host = Host::of(&ctx)?;
        let c = &*clients(&host)?;
        Ok(match role::read_role(&host, c, name, &[], true)? {
            Some(r) => role::role_object(name, &r).into(),
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

    /// The ARN a role of this name has under IAM path `path` (`/collate/`: it starts and ends
    /// with `/`, as `ensure_role`'s `path` option) in the account of the run.
    ///
    /// ```rhai
    /// let arn = aws::iam::role_arn("collate-ingestion-role", "/collate/");
    /// ```
    #[rhai_fn(name = "role_arn", return_raw)]
    pub fn role_arn_under(ctx: NativeCallContext, name: &str, path: &str) -> RhaiResult<String> {
        let host = Host::of(&ctx)?;
        if !path.starts_with('/') || !path.ends_with('/') {
            return Err(HostError::input(format!(
                "`aws::iam::role_arn`: path `{path}` must start and end with `/`"
            ))
            .with_hint("e.g. `/` or `/collate/`")
            .into());
        }
        let c = &*clients(&host)?;
        Ok(super::role_arn(&identity(&host, c)?, path, name))
    }
}
