//! The IAM OIDC provider of an EKS issuer as a converge resource (see [`crate::converge`]):
//! client ids are a set the script adds to, thumbprints (when given) the whole list, tags are
//! added or changed.

use rhai::{Map, NativeCallContext};
use serde_json::{Value, json};

use super::{STS_AUDIENCE, TagSpec, iam_tags, issuer_host_path, oidc_provider_arn, tags_map};
use crate::aws::{Clients, clients, has_code, identity, sdk_error};
use crate::converge::{self, Applied, Planned, Resource};
use crate::diff;
use crate::error::{HostError, RhaiResult};
use crate::host::Host;
use crate::value::{check_keys, from_json, opt};

pub(super) struct LiveProvider {
    pub url: String,
    pub client_ids: Vec<String>,
    pub thumbprints: Vec<String>,
    pub tags: Value,
}

pub(super) fn get_provider(
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

pub(super) fn provider_object(
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
    use crate::aws::thumbprint::{Failure, of_issuer};
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

/// The provider the script asks for (to ensure), or the one to delete (nothing asked).
struct Provider<'a> {
    c: &'a Clients,
    /// The issuer without `https://`.
    hp: String,
    /// The ARN it has (or will have) in the run's account.
    arn: String,
    client_ids: Vec<String>,
    /// Sorted; `None`: keep what the provider has (or take the issuer's on create).
    thumbprints: Option<Vec<String>>,
    tags: TagSpec,
}

impl Provider<'_> {
    fn object(&self, ids: &[String], thumbprints: &[String], tags: &Value) -> Value {
        provider_object(&self.arn, &self.hp, ids, thumbprints, tags)
    }
    /// The tags a new provider gets.
    fn tags_json(&self) -> Value {
        let mut t = json!({});
        self.tags.apply(&mut t);
        t
    }
}

impl Resource for Provider<'_> {
    type State = Option<LiveProvider>;
    type Object = Value;

    fn kind(&self) -> String {
        "aws.iam.oidc_provider".into()
    }
    fn name(&self) -> String {
        self.hp.clone()
    }
    fn read(&self, host: &Host) -> Result<Option<LiveProvider>, HostError> {
        get_provider(host, self.c, &self.arn, &self.hp)
    }
    fn exists(&self, live: &Option<LiveProvider>) -> bool {
        live.is_some()
    }
    fn diff(&self, _: &Host, live: &Option<LiveProvider>) -> Result<Planned, HostError> {
        let set = |ids: &[String]| {
            Value::Object(ids.iter().map(|i| (i.clone(), Value::Bool(true))).collect())
        };
        let mut desired = json!({
            "url": format!("https://{}", self.hp),
            "client_ids": set(&self.client_ids),
        });
        if let Some(t) = &self.thumbprints {
            desired["thumbprints"] = json!(t);
        }
        if !self.tags.is_empty() {
            desired["tags"] = self.tags.desired();
        }
        let live_json = live.as_ref().map(|l| {
            let mut t = l.thumbprints.clone();
            t.sort();
            json!({
                "url": format!("https://{}", l.url.trim_start_matches("https://")),
                "client_ids": set(&l.client_ids),
                "thumbprints": t,
                "tags": l.tags,
            })
        });
        Ok(Planned::fields(diff::diff(
            &desired,
            live_json.as_ref(),
            &|_| false,
        )))
    }
    fn current(&self, live: &Option<LiveProvider>) -> Value {
        match live {
            Some(l) => self.object(&l.client_ids, &l.thumbprints, &l.tags),
            None => self.object(&self.client_ids, &[], &self.tags_json()),
        }
    }
    fn predict(
        &self,
        _: &Host,
        live: &Option<LiveProvider>,
        _: &Planned,
    ) -> Result<Value, HostError> {
        let l = live.as_ref();
        let mut ids: Vec<String> = l.map(|l| l.client_ids.clone()).unwrap_or_default();
        for i in &self.client_ids {
            if !ids.contains(i) {
                ids.push(i.clone());
            }
        }
        let th = self
            .thumbprints
            .clone()
            .or_else(|| l.map(|l| l.thumbprints.clone()))
            .unwrap_or_default();
        let mut tags = l.map(|l| l.tags.clone()).unwrap_or_else(|| json!({}));
        self.tags.apply(&mut tags);
        Ok(self.object(&ids, &th, &tags))
    }
    fn create(
        &self,
        host: &Host,
        _: &Option<LiveProvider>,
        planned: &mut Planned,
    ) -> Result<Applied<Value>, HostError> {
        let (c, hp) = (self.c, &self.hp);
        let th = match self.thumbprints.clone() {
            Some(t) => t,
            None => {
                let (t, why) = issuer_thumbprints(host, hp)?;
                planned.note = why;
                t
            }
        };
        let op = "iam:CreateOpenIDConnectProvider";
        let tag_list = iam_tags(&self.tags.set)?;
        let created = host.mutate(&format!("{op} {hp}"), async {
            match c
                .iam
                .create_open_id_connect_provider()
                .url(format!("https://{hp}"))
                .set_client_id_list(Some(self.client_ids.clone()))
                .set_thumbprint_list(Some(th.clone()))
                .set_tags((!tag_list.is_empty()).then_some(tag_list))
                .send()
                .await
            {
                Ok(o) => Ok(Some(o)),
                Err(e) if has_code(&e, "EntityAlreadyExists") => Ok(None),
                Err(e) => Err(sdk_error(c, op, hp, e)),
            }
        })?;
        let Some(created) = created else {
            return Ok(Applied::Raced);
        };
        let arn = created
            .open_id_connect_provider_arn()
            .unwrap_or(&self.arn)
            .to_string();
        Ok(Applied::Done(provider_object(
            &arn,
            hp,
            &self.client_ids,
            &th,
            &self.tags_json(),
        )))
    }
    fn update(
        &self,
        host: &Host,
        live: &Option<LiveProvider>,
        planned: &mut Planned,
    ) -> Result<Applied<Value>, HostError> {
        let (c, hp, arn) = (self.c, &self.hp, &self.arn);
        let Some(l) = live else {
            return Ok(Applied::Raced);
        };
        for cid in self.client_ids.iter().filter(|i| !l.client_ids.contains(i)) {
            let op = "iam:AddClientIDToOpenIDConnectProvider";
            host.mutate(&format!("{op} {hp}"), async {
                c.iam
                    .add_client_id_to_open_id_connect_provider()
                    .open_id_connect_provider_arn(arn)
                    .client_id(cid)
                    .send()
                    .await
                    .map_err(|e| sdk_error(c, op, hp, e))
            })?;
        }
        if planned.touches("thumbprints") {
            let op = "iam:UpdateOpenIDConnectProviderThumbprint";
            host.mutate(&format!("{op} {hp}"), async {
                c.iam
                    .update_open_id_connect_provider_thumbprint()
                    .open_id_connect_provider_arn(arn)
                    .set_thumbprint_list(self.thumbprints.clone())
                    .send()
                    .await
                    .map_err(|e| sdk_error(c, op, hp, e))
            })?;
        }
        let gone_tags = self.tags.to_remove(&l.tags);
        if !gone_tags.is_empty() {
            let op = "iam:UntagOpenIDConnectProvider";
            host.mutate(&format!("{op} {hp}"), async {
                c.iam
                    .untag_open_id_connect_provider()
                    .open_id_connect_provider_arn(arn)
                    .set_tag_keys(Some(gone_tags.clone()))
                    .send()
                    .await
                    .map_err(|e| sdk_error(c, op, hp, e))
            })?;
        }
        let changed_tags = self.tags.to_set(&l.tags);
        if !changed_tags.is_empty() {
            let op = "iam:TagOpenIDConnectProvider";
            let tag_list = iam_tags(&changed_tags)?;
            host.mutate(&format!("{op} {hp}"), async {
                c.iam
                    .tag_open_id_connect_provider()
                    .open_id_connect_provider_arn(arn)
                    .set_tags(Some(tag_list))
                    .send()
                    .await
                    .map_err(|e| sdk_error(c, op, hp, e))
            })?;
        }
        // Deleted since our read: the driver reads again and creates it.
        Ok(match get_provider(host, c, arn, hp)? {
            Some(l) => Applied::Done(self.current(&Some(l))),
            None => Applied::Raced,
        })
    }
    fn delete(&self, host: &Host, _: &Option<LiveProvider>) -> Result<(), HostError> {
        let (c, hp) = (self.c, &self.hp);
        let op = "iam:DeleteOpenIDConnectProvider";
        host.mutate(&format!("{op} {hp}"), async {
            match c
                .iam
                .delete_open_id_connect_provider()
                .open_id_connect_provider_arn(&self.arn)
                .send()
                .await
            {
                Err(e) if has_code(&e, "NoSuchEntity") => Ok(()),
                other => other.map(|_| ()).map_err(|e| sdk_error(c, op, hp, e)),
            }
        })
    }
}

/// `aws::iam::delete_oidc_provider(issuer)`.
pub(super) fn delete(ctx: &NativeCallContext, issuer: &str) -> RhaiResult<Map> {
    let host = Host::of(ctx)?;
    let hp = issuer_host_path(issuer)?;
    let c = &*clients(&host)?;
    let arn = oidc_provider_arn(&identity(&host, c)?, &hp);
    let provider = Provider {
        c,
        hp,
        arn,
        client_ids: Vec::new(),
        thumbprints: None,
        tags: TagSpec::default(),
    };
    let gone = converge::remove(&host, &provider, Value::Null)?;
    let object = if gone.object.is_null() {
        rhai::Dynamic::UNIT
    } else {
        from_json(&gone.object)
    };
    Ok(gone.change.outcome(object))
}

/// `aws::iam::ensure_oidc_provider(issuer, opts)`.
pub(super) fn ensure(ctx: &NativeCallContext, issuer: &str, opts: &Map) -> RhaiResult<Map> {
    check_keys(
        "aws::iam::ensure_oidc_provider",
        opts,
        &["thumbprints", "client_ids", "tags"],
    )?;
    let host = Host::of(ctx)?;
    let hp = issuer_host_path(issuer)?;
    let mut thumbprints = opt::<Vec<String>>(opts, "thumbprints")?
        .map(|t| t.into_iter().map(|s| s.to_lowercase()).collect::<Vec<_>>());
    if let Some(bad) = thumbprints
        .iter()
        .flatten()
        .find(|t| !crate::aws::thumbprint::is_valid(t))
    {
        return Err(HostError::input(format!(
            "thumbprint `{bad}` is not a SHA-1 fingerprint (40 hex digits)"
        ))
        .into());
    }
    if let Some(t) = thumbprints.as_mut() {
        t.sort();
    }
    let c = &*clients(&host)?;
    let arn = oidc_provider_arn(&identity(&host, c)?, &hp);
    let provider = Provider {
        c,
        hp,
        arn,
        client_ids: opt::<Vec<String>>(opts, "client_ids")?
            .unwrap_or_else(|| vec![STS_AUDIENCE.into()]),
        thumbprints,
        tags: TagSpec::parse(opts)?,
    };
    let done = converge::ensure(&host, &provider)?;
    let mut out = done.change.outcome(from_json(&done.object));
    let arn = done.object["arn"].as_str().unwrap_or(&provider.arn);
    out.insert("arn".into(), arn.to_string().into());
    Ok(out)
}
