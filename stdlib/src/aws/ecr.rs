//! The `aws::ecr` namespace: the `.dockerconfigjson` document Kubernetes needs to pull Collate's
//! images from ECR, from GetAuthorizationToken, held in a [`Secret`] (the token never shows).

use base64::Engine as _;
use rhai::Map;
use rhai::plugin::*;
use serde_json::json;

use crate::aws::{Clients, sdk_error};
use crate::error::{HostError, RhaiResult};
use crate::host::Host;
use crate::secret_value::Secret;
use crate::value::{check_keys, opt};

/// A registry host split into its parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Registry {
    /// `118146679784.dkr.ecr.eu-west-1.amazonaws.com`
    pub host: String,
    /// The account id, which is the registry id.
    pub account: String,
    pub region: String,
}

/// Parses `118146679784.dkr.ecr.eu-west-1.amazonaws.com` (with or without `https://` or a
/// path), or `ACCOUNT/REGION`.
pub fn parse_registry(s: &str) -> Result<Registry, HostError> {
    let bad = || {
        HostError::input(format!("`{s}` is not an ECR registry"))
            .with_hint("write it as `ACCOUNT.dkr.ecr.REGION.amazonaws.com` (e.g. `118146679784.dkr.ecr.eu-west-1.amazonaws.com`)")
    };
    let t = s.trim();
    let t = t.strip_prefix("https://").unwrap_or(t);
    let account_ok = |a: &str| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit());
    if let Some((account, region)) = t
        .split_once('/')
        .filter(|(a, r)| account_ok(a) && !r.contains('.') && !r.is_empty())
    {
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        return Ok(Registry {
            host: format!("{account}.dkr.ecr.{region}.{suffix}"),
            account: account.into(),
            region: region.into(),
        });
    }
    let host = t.split('/').next().unwrap_or(t);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() >= 6 && account_ok(parts[0]) && parts[1] == "dkr" && parts[2].starts_with("ecr")
    {
        return Ok(Registry {
            host: host.to_string(),
            account: parts[0].into(),
            region: parts[3].into(),
        });
    }
    Err(bad())
}

/// The `.dockerconfigjson` text for `registry` with `password`.
pub fn docker_config_json(registry: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    json!({"auths": {registry: {"username": "AWS", "password": password, "auth": auth}}})
        .to_string()
}

/// The `.dockerconfigjson` Secret and when its token expires (GetAuthorizationToken's
/// `expiresAt`, RFC 3339; `()` when the answer has none).
fn authorize(
    ctx: &NativeCallContext,
    fn_name: &str,
    registry: &str,
    opts: &Map,
) -> RhaiResult<(Secret, Dynamic)> {
    check_keys(fn_name, opts, &["profile"])?;
    let reg = parse_registry(registry)?;
    let host = Host::of(ctx)?;
    let profile = opt::<String>(opts, "profile")?;
    let op = "ecr:GetAuthorizationToken";
    let what = format!("{op} {}", reg.host);
    let (token, expires_at) = match &profile {
        // A second set of credentials, as the guide's `--profile ecr-collate`.
        Some(p) => {
            host.guard_remote(&what)?;
            let settings = crate::host::Settings {
                aws_region: Some(reg.region.clone()),
                ..host.settings().clone()
            };
            let other: Clients = host.block_on(crate::aws::load(&settings, Some(p)))?;
            fetch(&host, &other, &other.ecr, &what, &reg)?
        }
        None => {
            let c = &*crate::aws::clients(&host)?;
            fetch(&host, c, &c.ecr_in(&reg.region), &what, &reg)?
        }
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some(password) = decoded.as_deref().and_then(|d| d.strip_prefix("AWS:")) else {
        return Err(HostError::api(format!(
            "`{op}` for `{}` returned a token that is not `AWS:<password>` in base64",
            reg.host
        ))
        .into());
    };
    // Registered so the password and its base64 forms are masked in any text that leaves.
    let _ = Secret::new(password, "ecr password");
    let _ = Secret::new(token.trim(), "ecr token");
    Ok((
        Secret::new(
            docker_config_json(&reg.host, password),
            format!("ecr GetAuthorizationToken {}", reg.host),
        ),
        expires_at,
    ))
}

fn fetch(
    host: &Host,
    c: &Clients,
    ecr: &aws_sdk_ecr::Client,
    what: &str,
    reg: &Registry,
) -> Result<(String, Dynamic), HostError> {
    let op = "ecr:GetAuthorizationToken";
    host.read(what, async {
        #[allow(deprecated)]
        let out = ecr
            .get_authorization_token()
            .registry_ids(&reg.account)
            .send()
            .await
            .map_err(|e| sdk_error(c, op, &reg.host, e))?;
        out.authorization_data()
            .iter()
            .find_map(|d| {
                d.authorization_token()
                    .map(|t| (t.to_string(), crate::aws::time(d.expires_at())))
            })
            .ok_or_else(|| HostError::api(format!("`{op}` for `{}` returned no token", reg.host)))
    })
}

#[export_module]
pub mod ecr_module {
    use super::*;

    /// A Secret holding the `.dockerconfigjson` document for an ECR registry
    /// (`{"auths": {REGISTRY: {"username": "AWS", "password", "auth"}}}`), from
    /// GetAuthorizationToken in the registry's region with the registry's account as registry
    /// id. The registry is `ACCOUNT.dkr.ecr.REGION.amazonaws.com` or `ACCOUNT/REGION`. The
    /// token is valid for 12 hours.
    ///
    /// ```rhai
    /// let auth = aws::ecr::docker_config("118146679784.dkr.ecr.eu-west-1.amazonaws.com");
    /// k8s::ensure_docker_registry_secret("collate", "ecr-registry-creds", auth);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn docker_config(ctx: NativeCallContext, registry: &str) -> RhaiResult<Secret> {
        crate::host::track(&ctx);
        Ok(authorize(&ctx, "aws::ecr::docker_config", registry, &Map::new())?.0)
    }

    /// `docker_config` with options: `profile`, the AWS profile whose credentials may pull
    /// (the guide's `aws configure --profile ecr-collate`), instead of the run's credentials.
    ///
    /// ```rhai
    /// let auth = aws::ecr::docker_config("118146679784.dkr.ecr.eu-west-1.amazonaws.com",
    ///     #{ profile: "ecr-collate" });
    /// ```
    #[rhai_fn(name = "docker_config", return_raw)]
    pub fn docker_config_with(
        ctx: NativeCallContext,
        registry: &str,
        opts: Map,
    ) -> RhaiResult<Secret> {
        crate::host::track(&ctx);
        Ok(authorize(&ctx, "aws::ecr::docker_config", registry, &opts)?.0)
    }

    /// `docker_config` and when its token expires: `#{docker_config, expires_at}`, where
    /// `expires_at` is GetAuthorizationToken's `expiresAt` (RFC 3339; ECR tokens last 12 hours),
    /// `()` when the answer carries none. The token itself carries no time: ECR documents it only
    /// as `user:password` in base64. Takes the options of `docker_config`.
    ///
    /// ```rhai
    /// let auth = aws::ecr::authorization("118146679784.dkr.ecr.eu-west-1.amazonaws.com", #{});
    /// k8s::ensure_secret("collate", "ecr-registry-creds", #{
    ///     type: "kubernetes.io/dockerconfigjson",
    ///     data: #{ ".dockerconfigjson": auth.docker_config },
    ///     annotations: #{ "collate-run.io/token-expires-at": auth.expires_at },
    /// });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn authorization(ctx: NativeCallContext, registry: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        let (config, expires_at) =
            super::authorize(&ctx, "aws::ecr::authorization", registry, &opts)?;
        let mut m = Map::new();
        m.insert("docker_config".into(), Dynamic::from(config));
        m.insert("expires_at".into(), expires_at);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_parse() {
        let r = parse_registry("118146679784.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(r.account, "118146679784");
        assert_eq!(r.region, "eu-west-1");
        assert_eq!(
            parse_registry("https://118146679784.dkr.ecr.eu-west-1.amazonaws.com/collate").unwrap(),
            r
        );
        assert_eq!(parse_registry("118146679784/eu-west-1").unwrap(), r);
        assert_eq!(
            parse_registry("123456789012/cn-north-1").unwrap().host,
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert!(parse_registry("docker.io").is_err());
        assert!(parse_registry("1181466/eu-west-1").is_err());
    }

    #[test]
    fn docker_config_document() {
        let text = docker_config_json("r.example", "pw");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["auths"]["r.example"]["username"], "AWS");
        assert_eq!(v["auths"]["r.example"]["password"], "pw");
        assert_eq!(v["auths"]["r.example"]["auth"], "QVdTOnB3");
    }
}
