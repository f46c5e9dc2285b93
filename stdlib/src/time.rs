//! The `time` namespace: timestamps as epoch milliseconds, the unit the OpenMetadata API and
//! `helm::status(..).deployed_at` use, so scripts compare times as integers.

use rhai::plugin::*;

use crate::error::{HostError, RhaiResult};

/// Epoch milliseconds of an RFC 3339 timestamp (`2026-12-02T13:00:00Z`, with an offset or
/// fractional seconds too).
pub fn parse_ms(text: &str) -> Result<i64, HostError> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            HostError::input(format!("`{text}` is not an RFC 3339 timestamp: {e}"))
                .with_hint("e.g. \"2026-12-02T13:00:00Z\", as Kubernetes writes them")
        })
}

/// The `time` namespace.
#[export_module]
pub mod time_module {
    use super::*;

    /// Epoch milliseconds of an RFC 3339 timestamp, as Kubernetes writes them
    /// (`metadata.creationTimestamp`, a Pod's `status.startTime`).
    ///
    /// ```rhai
    /// let started = time::parse("2026-12-02T13:00:00Z");   // 1796216400000
    /// ```
    #[rhai_fn(return_raw)]
    pub fn parse(ctx: NativeCallContext, text: &str) -> RhaiResult<i64> {
        crate::host::track(&ctx);
        Ok(parse_ms(text)?)
    }

    /// The current time in epoch milliseconds.
    ///
    /// ```rhai
    /// let t0 = time::now();
    /// ```
    pub fn now() -> i64 {
        jiff::Timestamp::now().as_millisecond()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn rfc3339_to_epoch_ms() {
        assert_eq!(parse_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_ms("2026-12-02T13:00:00Z").unwrap(), 1_796_216_400_000);
        assert_eq!(
            parse_ms("2026-12-02T14:00:00.250+01:00").unwrap(),
            1_796_216_400_250
        );
        assert!(parse_ms("2026-12-02 13:00").is_err());
        assert!(parse_ms("").unwrap_err().message.contains("RFC 3339"));
    }
}
