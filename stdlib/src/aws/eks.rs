//! The `aws::eks` namespace: the cluster as EKS describes it, and its OIDC issuer (the first
//! step of the guide's IRSA set-up).

use rhai::plugin::*;
use serde_json::{Value, json};

use crate::aws::{Clients, has_code, sdk_error};
use crate::error::HostError;
use crate::host::Host;

/// DescribeCluster as a JSON value (snake_case keys), or a not_found error naming the region.
pub(crate) fn describe(host: &Host, c: &Clients, name: &str) -> Result<Value, HostError> {
    let op = "eks:DescribeCluster";
    let out = host.read(&format!("{op} {name}"), async {
        match c.eks.describe_cluster().name(name).send().await {
            Ok(out) => Ok(out.cluster),
            Err(e) if has_code(&e, "ResourceNotFoundException") => Ok(None),
            Err(e) => Err(sdk_error(c, op, name, e)),
        }
    })?;
    let Some(cl) = out else {
        return Err(HostError::not_found(format!(
            "EKS cluster `{name}` not found in region `{}`",
            c.region
        ))
        .with_hint(
            "check the cluster name, and the region (`--region`, `AWS_REGION`, the profile)",
        ));
    };
    let issuer = cl
        .identity()
        .and_then(|i| i.oidc())
        .and_then(|o| o.issuer());
    let vpc = cl.resources_vpc_config();
    Ok(json!({
        "name": cl.name(),
        "arn": cl.arn(),
        "status": cl.status().map(|s| s.as_str()),
        "version": cl.version(),
        "platform_version": cl.platform_version(),
        "endpoint": cl.endpoint(),
        "role_arn": cl.role_arn(),
        "created_at": cl.created_at().and_then(|t| t.fmt(aws_sdk_eks::primitives::DateTimeFormat::DateTime).ok()),
        "oidc_issuer": issuer,
        "identity": {"oidc": {"issuer": issuer}},
        "certificate_authority": {"data": cl.certificate_authority().and_then(|c| c.data())},
        "vpc": vpc.map(|v| json!({
            "vpc_id": v.vpc_id(),
            "subnet_ids": v.subnet_ids(),
            "security_group_ids": v.security_group_ids(),
            "cluster_security_group_id": v.cluster_security_group_id(),
            "endpoint_public_access": v.endpoint_public_access(),
            "endpoint_private_access": v.endpoint_private_access(),
        })),
        "tags": cl.tags(),
    }))
}

/// The cluster's OIDC issuer URL (`https://oidc.eks.REGION.amazonaws.com/id/ID`).
pub(crate) fn issuer(host: &Host, c: &Clients, name: &str) -> Result<String, HostError> {
    let cluster = describe(host, c, name)?;
    cluster["oidc_issuer"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            HostError::new(
                crate::error::ErrorKind::Precondition,
                format!("EKS cluster `{name}` has no OIDC issuer"),
            )
            .with_hint("the cluster may still be creating; check `status` with `aws::eks::describe_cluster`")
        })
}

#[export_module]
pub mod eks_module {
    use crate::error::RhaiResult;
    use crate::host::Host;
    use rhai::Map;

    /// Describes an EKS cluster: `#{name, arn, status, version, platform_version, endpoint,
    /// role_arn, created_at, oidc_issuer, identity: #{oidc: #{issuer}}, certificate_authority:
    /// #{data}, vpc: #{vpc_id, subnet_ids, security_group_ids, ...}, tags}`. A missing cluster
    /// is a `not_found` error naming the cluster and the region.
    ///
    /// ```rhai
    /// let cluster = aws::eks::describe_cluster(config.cluster_name);
    /// print(`${cluster.name} runs Kubernetes ${cluster.version} (${cluster.status})`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn describe_cluster(ctx: NativeCallContext, name: &str) -> RhaiResult<Map> {
        let host = Host::of(&ctx)?;
        let c = &*crate::aws::clients(&host)?;
        let v = super::describe(&host, c, name)?;
        Ok(crate::value::from_json(&v).cast::<Map>())
    }

    /// The cluster's OIDC issuer URL, `https://oidc.eks.REGION.amazonaws.com/id/ID` (what the
    /// guide reads with `aws eks describe-cluster --query cluster.identity.oidc.issuer`).
    ///
    /// ```rhai
    /// let issuer = aws::eks::oidc_issuer(config.cluster_name);
    /// aws::iam::ensure_oidc_provider(issuer);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn oidc_issuer(ctx: NativeCallContext, name: &str) -> RhaiResult<String> {
        let host = Host::of(&ctx)?;
        let c = &*crate::aws::clients(&host)?;
        Ok(super::issuer(&host, c, name)?)
    }
}
