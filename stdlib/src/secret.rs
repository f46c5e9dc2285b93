//! The `secret` namespace: secrets from the environment, files and scripts. The [`Secret`] value
//! and the mask registry live in the leaf module [`crate::secret_value`] (re-exported here).

use rhai::plugin::*;

use crate::error::{HostError, RhaiResult};
pub use crate::secret_value::{MASK, Secret, mask_text};

/// Reads a secret from an environment variable.
pub fn from_env(name: &str) -> Result<Secret, HostError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v, format!("env {name}"))),
        Ok(_) => Err(
            HostError::config(format!("environment variable `{name}` is empty"))
                .with_hint(format!("export {name}=... before running")),
        ),
        Err(_) => Err(
            HostError::config(format!("environment variable `{name}` is not set"))
                .with_hint(format!("export {name}=... before running")),
        ),
    }
}

/// Reads a secret from a file (trailing newlines are dropped).
pub fn from_file(path: &std::path::Path) -> Result<Secret, HostError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HostError::io(format!("cannot read secret file `{}`: {e}", path.display())))?;
    Ok(Secret::new(
        text.trim_end_matches(['\n', '\r']).to_string(),
        format!("file {}", path.display()),
    ))
}

/// The `secret` namespace.
#[export_module]
pub mod secret_module {
    use super::*;

    /// A secret value, shown as `***`.
    pub type Secret = super::Secret;

    /// Reads a secret from the environment variable `name`.
    ///
    /// ```rhai
    /// let pw = secret::env("DB_PASSWORD");
    /// print(pw);   // ***
    /// ```
    #[rhai_fn(return_raw)]
    pub fn env(ctx: NativeCallContext, name: &str) -> RhaiResult<Secret> {
        crate::host::track(&ctx);
        Ok(from_env(name)?)
    }

    /// Reads a secret from a file; a trailing newline is dropped.
    ///
    /// ```rhai
    /// let token = secret::file("/run/secrets/om-admin-token");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn file(ctx: NativeCallContext, path: &str) -> RhaiResult<Secret> {
        let host = crate::host::Host::of(&ctx)?;
        let full = host.check_read(&host.resolve_from(&ctx, path))?;
        Ok(from_file(&full)?)
    }

    /// The secret `name_or_arn` of AWS Secrets Manager, whole (its text).
    ///
    /// ```rhai
    /// let token = secret::aws_secret("collate/om-admin-token");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn aws_secret(ctx: NativeCallContext, name_or_arn: &str) -> RhaiResult<Secret> {
        let host = crate::host::Host::of(&ctx)?;
        Ok(crate::aws::secrets::secrets_manager(
            &host,
            name_or_arn,
            None,
        )?)
    }

    /// Key `key` of the JSON object stored in the AWS Secrets Manager secret `name_or_arn` (the
    /// console's key/value form). A missing secret or key is an error naming it.
    ///
    /// ```rhai
    /// let pw = secret::aws_secret("collate/db", "password");
    /// ```
    #[rhai_fn(name = "aws_secret", return_raw)]
    pub fn aws_secret_key(
        ctx: NativeCallContext,
        name_or_arn: &str,
        key: &str,
    ) -> RhaiResult<Secret> {
        let host = crate::host::Host::of(&ctx)?;
        Ok(crate::aws::secrets::secrets_manager(
            &host,
            name_or_arn,
            Some(key),
        )?)
    }

    /// The SSM Parameter Store parameter `name`, decrypted (SecureString).
    ///
    /// ```rhai
    /// let pw = secret::ssm("/collate/db-password");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ssm(ctx: NativeCallContext, name: &str) -> RhaiResult<Secret> {
        let host = crate::host::Host::of(&ctx)?;
        Ok(crate::aws::secrets::ssm(&host, name)?)
    }

    /// Marks a plain string as secret (for values computed in a script).
    ///
    /// ```rhai
    /// let s = secret::from("hunter2");
    /// print(`${s}`);   // ***
    /// ```
    #[rhai_fn(name = "from")]
    pub fn from_string(value: &str) -> Secret {
        super::Secret::new(value, "script")
    }

    /// `true` when the value is a Secret.
    ///
    /// ```rhai
    /// secret::is_secret(secret::from("x"))   // true
    /// ```
    pub fn is_secret(value: Dynamic) -> bool {
        value.is::<Secret>()
    }

    /// Where the secret came from (`env DB_PASSWORD`, `file ...`, `config db.password`).
    ///
    /// ```rhai
    /// secret::env("DB_PASSWORD").source   // "env DB_PASSWORD"
    /// ```
    #[rhai_fn(get = "source", pure)]
    pub fn get_source(s: &mut Secret) -> String {
        s.source().to_string()
    }

    /// The length of the secret value (the value itself is never shown).
    #[rhai_fn(get = "len", pure)]
    pub fn get_len(s: &mut Secret) -> i64 {
        s.expose().chars().count() as i64
    }

    /// Secrets print as `***`.
    ///
    /// ```rhai
    /// print(secret::env("DB_PASSWORD"));        // ***
    /// let line = `password: ${secret::env("DB_PASSWORD")}`;   // "password: ***"
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn to_string(_s: &mut Secret) -> String {
        MASK.to_string()
    }

    /// Secrets debug-print as `Secret(*** from SOURCE)`.
    ///
    /// ```rhai
    /// debug(secret::env("DB_PASSWORD"));        // Secret(*** from env DB_PASSWORD)
    /// ```
    #[rhai_fn(global, name = "to_debug", pure)]
    pub fn to_debug(s: &mut Secret) -> String {
        format!("{s:?}")
    }

    /// Two secrets are equal when their values are.
    #[rhai_fn(global, name = "==", pure)]
    pub fn eq(a: &mut Secret, b: Secret) -> bool {
        *a == b
    }
}
