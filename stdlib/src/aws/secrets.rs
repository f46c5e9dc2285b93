//! Secrets where customers keep them: AWS Secrets Manager and SSM Parameter Store (decrypted).
//! The values never leave the [`Secret`] type; a missing secret or a refused read is an error
//! naming the reference. Used by the `secret` namespace (`secret::aws_secret`, `secret::ssm`)
//! and by config references `{aws_secret: NAME_OR_ARN, key: JSON_KEY}` and `{ssm: /path}`.

use serde_json::Value;

use super::{clients, has_code, sdk_error};
use crate::error::{ErrorKind, HostError};
use crate::host::Host;
use crate::secret_value::Secret;

/// The secret `id` (a name or an ARN) of Secrets Manager; with `key`, that key of its JSON
/// object (the form the console's key/value secrets take).
pub fn secrets_manager(host: &Host, id: &str, key: Option<&str>) -> Result<Secret, HostError> {
    let c = clients(host)?;
    let client = aws_sdk_secretsmanager::Client::new(&c.config);
    let op = "secretsmanager:GetSecretValue";
    let text = host.read(&format!("{op} {id}"), async {
        match client.get_secret_value().secret_id(id).send().await {
            Ok(out) => Ok(out.secret_string().map(str::to_string)),
            Err(e) if has_code(&e, "ResourceNotFoundException") => {
                Err(HostError::not_found(format!(
                    "AWS Secrets Manager secret `{id}` does not exist (region `{}`)",
                    c.region
                ))
                .with_hint("check the name (or give its ARN) and the region"))
            }
            Err(e) => Err(sdk_error(&c, op, id, e)),
        }
    })?;
    let Some(text) = text else {
        return Err(HostError::input(format!(
            "AWS Secrets Manager secret `{id}` holds binary data, not text"
        )));
    };
    let source = match key {
        Some(k) => format!("aws secret {id} key {k}"),
        None => format!("aws secret {id}"),
    };
    let Some(key) = key else {
        return Ok(Secret::new(text, source));
    };
    // Register the whole text first: nothing of it may show in an error below.
    let whole = Secret::new(text.clone(), format!("aws secret {id}"));
    let doc: Value = serde_json::from_str(whole.expose()).map_err(|_| {
        HostError::input(format!(
            "AWS Secrets Manager secret `{id}` is not a JSON object, so it has no key `{key}`"
        ))
        .with_hint("leave `key` out to take the whole secret")
    })?;
    match doc.get(key) {
        Some(Value::String(v)) => Ok(Secret::new(v.clone(), source)),
        Some(Value::Number(n)) => Ok(Secret::new(n.to_string(), source)),
        Some(_) => Err(HostError::input(format!(
            "key `{key}` of AWS Secrets Manager secret `{id}` is not a string"
        ))),
        None => {
            let keys: Vec<&str> = doc
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            Err(HostError::new(
                ErrorKind::NotFound,
                format!("AWS Secrets Manager secret `{id}` has no key `{key}`"),
            )
            .with_hint(format!("its keys: {}", keys.join(", "))))
        }
    }
}

/// The SSM parameter `name`, decrypted (a SecureString's plain value).
pub fn ssm(host: &Host, name: &str) -> Result<Secret, HostError> {
    let c = clients(host)?;
    let client = aws_sdk_ssm::Client::new(&c.config);
    let op = "ssm:GetParameter";
    let value = host.read(&format!("{op} {name}"), async {
        match client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .parameter()
                .and_then(|p| p.value())
                .unwrap_or_default()
                .to_string()),
            Err(e) if has_code(&e, "ParameterNotFound") => Err(HostError::not_found(format!(
                "SSM parameter `{name}` does not exist (region `{}`)",
                c.region
            ))
            .with_hint("check the name (a path like `/collate/db-password`) and the region")),
            Err(e) => Err(sdk_error(&c, op, name, e)),
        }
    })?;
    Ok(Secret::new(value, format!("ssm {name}")))
}
