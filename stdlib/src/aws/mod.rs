//! The `aws` namespace (`aws::account_id()`, `aws::region()`) and its sub-namespaces, one file
//! each: `aws::sts`, `aws::eks`, `aws::iam`, `aws::s3`, `aws::ecr`. The clients of a run are
//! built once from aws-config's chain (env, profiles incl. SSO, web identity) with `--profile`,
//! `--region` and `AWS_ENDPOINT_URL` honoured, and fail with one clear error when unusable.

pub mod ecr;
pub mod eks;
pub mod iam;
pub mod policy;
pub mod s3;
pub mod secrets;
pub mod sts;
pub mod thumbprint;

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use rhai::Module;
use rhai::plugin::*;

use crate::error::{ErrorKind, HostError, error_chain, root_cause};
use crate::host::{Host, Settings};

/// The AWS clients of a run, built once from aws-config's chain.
pub struct Clients {
    pub config: SdkConfig,
    /// The region every call uses unless a function is told otherwise.
    pub region: String,
    pub sts: aws_sdk_sts::Client,
    pub iam: aws_sdk_iam::Client,
    pub eks: aws_sdk_eks::Client,
    pub ecr: aws_sdk_ecr::Client,
    identity: tokio::sync::OnceCell<Identity>,
}

/// Who the credentials belong to (STS GetCallerIdentity), fetched once per run.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
    /// `aws`, `aws-cn`, `aws-us-gov`: the partition of every ARN we predict.
    pub partition: String,
}

impl Clients {
    /// An S3 client for `region` (path-style addressing when an endpoint override is set, as
    /// S3-compatible test servers such as moto need).
    pub fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let path_style = self.config.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let conf = aws_sdk_s3::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .force_path_style(path_style)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// An ECR client for `region`.
    pub fn ecr_in(&self, region: &str) -> aws_sdk_ecr::Client {
        if region == self.region {
            return self.ecr.clone();
        }
        let conf = aws_sdk_ecr::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .build();
        aws_sdk_ecr::Client::from_conf(conf)
    }
}

/// The AWS clients of a run (a [`Host::slot`]).
#[derive(Default)]
struct AwsSlot(tokio::sync::OnceCell<Arc<Clients>>);

/// The AWS clients of `host`, built (and the credentials checked) on first use.
pub(crate) fn clients(host: &Host) -> Result<Arc<Clients>, HostError> {
    let slot = host.slot::<AwsSlot>();
    if let Some(c) = slot.0.get() {
        return Ok(c.clone());
    }
    host.guard_remote("aws: load credentials")?;
    let load = || async { load(host.settings(), None).await.map(Arc::new) };
    host.block_on(slot.0.get_or_try_init(load)).cloned()
}

/// Builds clients from aws-config's chain, with the command line's `--profile`/`--region`
/// (or `profile`, when given, for a second set of credentials such as the ECR one).
pub(crate) async fn load(settings: &Settings, profile: Option<&str>) -> Result<Clients, HostError> {
    let config = sdk_config(settings, profile).await?;
    let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
        HostError::config("no AWS region is set")
            .with_hint("set `AWS_REGION`, pass `--region`, or set `region` in the AWS profile")
    })?;
    Ok(Clients::new(config, region))
}

impl Clients {
    fn new(config: SdkConfig, region: String) -> Clients {
        Clients {
            region,
            sts: aws_sdk_sts::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            eks: aws_sdk_eks::Client::new(&config),
            ecr: aws_sdk_ecr::Client::new(&config),
            config,
            identity: tokio::sync::OnceCell::new(),
        }
    }
}

/// The SDK configuration, with credentials resolved once so a missing or expired credential
/// is one clear error before any call.
async fn sdk_config(settings: &Settings, profile: Option<&str>) -> Result<SdkConfig, HostError> {
    let profile = profile.or(settings.aws_profile.as_deref());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::adaptive()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(500)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(p) = profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &settings.aws_region {
        loader = loader.region(Region::new(r.clone()));
    }
    let config = loader.load().await;
    let from = match profile {
        Some(p) => format!(" for profile `{p}`"),
        None => String::new(),
    };
    let hint = "set `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, or `AWS_PROFILE` / `--profile` \
                (for an SSO profile run `aws sso login --profile NAME` first)";
    // No credentials at all (or a profile that is not set up) is a configuration problem, like a
    // missing region: exit 3. Credentials that exist but cannot be loaded (an SSO session to log
    // in again, a failing credential process) are an auth error: exit 4.
    let Some(provider) = config.credentials_provider() else {
        return Err(HostError::config(format!("no AWS credentials{from}")).with_hint(hint));
    };
    if let Err(e) = provider.provide_credentials().await {
        use aws_credential_types::provider::error::CredentialsError;
        let err = match &e {
            CredentialsError::CredentialsNotLoaded(_) => {
                HostError::config(format!("no AWS credentials found{from}"))
            }
            CredentialsError::InvalidConfiguration(_) => HostError::config(format!(
                "the AWS credential configuration{from} is invalid: {}",
                error_chain(&e)
            )),
            _ => HostError::new(
                ErrorKind::Auth,
                format!("cannot load AWS credentials{from}: {}", error_chain(&e)),
            ),
        };
        return Err(err.with_hint(hint).with_source(e));
    }
    Ok(config)
}

/// The caller identity, fetched once per run (a read).
pub(crate) fn identity(host: &Host, c: &Clients) -> Result<Identity, HostError> {
    if let Some(id) = c.identity.get() {
        return Ok(id.clone());
    }
    let id = host.read("sts:GetCallerIdentity", async {
        c.identity
            .get_or_try_init(|| async {
                let out = c
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| sdk_error(c, "sts:GetCallerIdentity", "the caller", e))?;
                let arn = out.arn().unwrap_or_default().to_string();
                let partition = arn.split(':').nth(1).unwrap_or("aws").to_string();
                Ok::<_, HostError>(Identity {
                    account: out.account().unwrap_or_default().to_string(),
                    user_id: out.user_id().unwrap_or_default().to_string(),
                    partition: if partition.is_empty() {
                        "aws".into()
                    } else {
                        partition
                    },
                    arn,
                })
            })
            .await
            .cloned()
    })?;
    Ok(id)
}

/// `true` when the SDK error carries the service error `code`.
pub(crate) fn has_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, code: &str) -> bool {
    match e {
        SdkError::ServiceError(se) => se.err().code() == Some(code),
        _ => false,
    }
}

/// The HTTP status of a service error, if any.
pub(crate) fn status<E>(e: &SdkError<E, aws_sdk_sts::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// The attempts the SDK makes for a retryable error (5xx, throttling, I/O).
const MAX_ATTEMPTS: u32 = 5;

impl Clients {
    /// Where requests of `service` (`sts`, `iam`, `s3` ...) go: `AWS_ENDPOINT_URL_<SERVICE>`,
    /// else the endpoint override of these clients, else AWS's public endpoint in their region.
    /// Named in "cannot reach AWS" errors (the SDK does not say which URL it could not reach).
    pub fn endpoint_of(&self, service: &str) -> String {
        let own = std::env::var(format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase()));
        if let Some(url) = own.ok().filter(|u| !u.is_empty()) {
            return url;
        }
        match self.config.endpoint_url() {
            Some(url) => url.to_string(),
            None if service == "iam" || self.region.is_empty() => {
                format!("https://{service}.amazonaws.com")
            }
            None => format!("https://{service}.{}.amazonaws.com", self.region),
        }
    }
}

/// Turns an SDK error into a [`HostError`] naming the operation (`iam:CreateRole`), the
/// resource and the HTTP status; the kind says whether it was credentials, a missing object, a
/// conflict or the API. One line, never the SDK's debug form, never a credential.
pub(crate) fn sdk_error<E>(
    c: &Clients,
    op: &str,
    resource: &str,
    e: SdkError<E, aws_sdk_sts::config::http::HttpResponse>,
) -> HostError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failed = format!("`{op}` on `{resource}` failed");
    let service = op.split(':').next().unwrap_or(op);
    let network_hint = "check the network path to AWS (proxy, VPN, `AWS_ENDPOINT_URL`)";
    // A signature mismatch's own message echoes the string to sign: keep it out of the causes.
    let echoes = matches!(
        e.code(),
        Some("SignatureDoesNotMatch" | "InvalidSignatureException")
    );
    let err = match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code();
            let http = se.raw().status().as_u16();
            // A signature mismatch echoes the string to sign: do not repeat it.
            let message = match code {
                Some("SignatureDoesNotMatch" | "InvalidSignatureException") => {
                    Some("the request signature does not match (wrong secret access key?)")
                }
                _ => se.err().message().filter(|m| !m.trim().is_empty()),
            };
            let kind = match code.unwrap_or_default() {
                "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedOperation"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "UnrecognizedClientException"
                | "SignatureDoesNotMatch"
                | "InvalidSignatureException"
                | "InvalidAccessKeyId" => ErrorKind::Auth,
                "NoSuchEntity"
                | "NoSuchBucket"
                | "NotFound"
                | "ResourceNotFoundException"
                | "RepositoryNotFoundException" => ErrorKind::NotFound,
                "EntityAlreadyExists"
                | "BucketAlreadyExists"
                | "ConcurrentModification"
                | "OperationAborted"
                | "ResourceInUseException" => ErrorKind::Conflict,
                _ if http == 401 || http == 403 => ErrorKind::Auth,
                _ if http == 404 => ErrorKind::NotFound,
                _ => ErrorKind::Api,
            };
            let status = match code {
                Some(code) => format!("{code} (HTTP {http})"),
                None => format!("HTTP {http}"),
            };
            let err = HostError::new(
                kind,
                match message {
                    Some(m) => format!("{failed}: {status}: {m}"),
                    None => format!("{failed}: {status}"),
                },
            );
            match kind {
                ErrorKind::Auth => err.with_hint(
                    "the AWS credentials were refused or lack this permission; \
                     check them with `aws sts get-caller-identity` and the IAM policy",
                ),
                ErrorKind::Conflict => err.with_hint("another change is in progress; run again"),
                _ if http >= 500 || http == 429 || code.is_some_and(|c| c.contains("Throttl")) => {
                    err.with_hint(format!(
                        "AWS kept answering {http}; the call was retried with backoff ({MAX_ATTEMPTS} attempts at most), \
                         then given up. Re-run when it is healthy: the recipe converges from where it stopped"
                    ))
                }
                _ => err,
            }
        }
        SdkError::TimeoutError(_) => HostError::new(
            ErrorKind::Timeout,
            format!(
                "{failed}: no answer from AWS at `{}` in time",
                c.endpoint_of(service)
            ),
        )
        .with_hint(network_hint),
        SdkError::DispatchFailure(_) => HostError::api(format!(
            "{failed}: cannot reach AWS at `{}`: {}",
            c.endpoint_of(service),
            root_cause(&e)
        ))
        .with_hint(network_hint),
        SdkError::ResponseError(r) => HostError::api(format!(
            "{failed}: unreadable answer (HTTP {}): {}",
            r.raw().status().as_u16(),
            root_cause(&e)
        )),
        _ => HostError::api(format!("{failed}: {}", root_cause(&e))),
    };
    if echoes { err } else { err.with_source(e) }
}

/// An SDK timestamp as RFC 3339 text for maps handed to scripts.
pub(crate) fn time(t: Option<&aws_smithy_types_dt::DateTime>) -> rhai::Dynamic {
    t.and_then(|t| t.fmt(aws_smithy_types_dt::Format::DateTime).ok())
        .map(rhai::Dynamic::from)
        .unwrap_or(rhai::Dynamic::UNIT)
}

/// The SDK's date-time type, reached through the STS crate's re-exports.
mod aws_smithy_types_dt {
    pub use aws_sdk_sts::primitives::{DateTime, DateTimeFormat as Format};
}

/// The `aws` module with its sub-modules.
pub fn module() -> Module {
    let mut m = exported_module!(aws_module);
    m.set_sub_module("sts", exported_module!(sts::sts_module));
    m.set_sub_module("eks", exported_module!(eks::eks_module));
    m.set_sub_module("iam", exported_module!(iam::iam_module));
    m.set_sub_module("s3", exported_module!(s3::s3_module));
    m.set_sub_module("ecr", exported_module!(ecr::ecr_module));
    m
}

#[export_module]
pub mod aws_module {
    use crate::error::RhaiResult;

    /// The AWS account id of the credentials in use (STS GetCallerIdentity, asked once a run).
    ///
    /// ```rhai
    /// let account = aws::account_id();
    /// print(`deploying into ${account}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn account_id(ctx: NativeCallContext) -> RhaiResult<String> {
        let host = Host::of(&ctx)?;
        let c = &*super::clients(&host)?;
        Ok(super::identity(&host, c)?.account)
    }

    /// The AWS region of the run: `--region`, else `AWS_REGION`, else the profile's `region`.
    ///
    /// ```rhai
    /// let bucket = `collate-argo-artifacts-${aws::region()}`;
    /// ```
    #[rhai_fn(return_raw)]
    pub fn region(ctx: NativeCallContext) -> RhaiResult<String> {
        let host = Host::of(&ctx)?;
        Ok(super::clients(&host)?.region.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(endpoint: Option<&str>, region: &str) -> Clients {
        let mut b = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()));
        if let Some(e) = endpoint {
            b = b.endpoint_url(e);
        }
        Clients::new(b.build(), region.to_string())
    }

    /// Errors name the endpoint of the clients that made the call: building a second set of
    /// clients (another run, another profile) does not change what the first one reports.
    #[test]
    fn each_set_of_clients_names_its_own_endpoint() {
        let a = clients(Some("http://127.0.0.1:1"), "eu-west-1");
        let b = clients(None, "us-east-2");
        assert_eq!(a.endpoint_of("eks"), "http://127.0.0.1:1");
        assert_eq!(b.endpoint_of("eks"), "https://eks.us-east-2.amazonaws.com");
        assert_eq!(a.endpoint_of("eks"), "http://127.0.0.1:1");
    }
}
