//! The `log` namespace (`log::info(..)`, `log::warn(..)`): messages for the run's journal, with
//! Secret values masked. The global helpers (`step`, `parallel`, ...) are in `globals.rs`.

use rhai::plugin::*;

use crate::error::RhaiResult;
use crate::host::Host;
use crate::journal::Level;

fn emit(ctx: &NativeCallContext, level: Level, message: &Dynamic) -> RhaiResult<()> {
    let host = Host::of(ctx)?;
    host.journal().log(level, &crate::value::display(message));
    Ok(())
}

/// The `log` namespace. Secret values are masked in every message.
#[export_module]
pub mod log_module {
    use super::*;

    /// Logs a detail shown only with `-v` (`debug` is a reserved word in Rhai).
    ///
    /// ```rhai
    /// log::verbose(`issuer is ${issuer}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn verbose(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        crate::host::track(&ctx);
        emit(&ctx, Level::Debug, &message)
    }

    /// Logs at info level.
    ///
    /// ```rhai
    /// log::info("argo server answers");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn info(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        crate::host::track(&ctx);
        emit(&ctx, Level::Info, &message)
    }

    /// Logs a warning.
    ///
    /// ```rhai
    /// log::warn("AmazonS3FullAccess grants every bucket; consider s3.scoped_policy: true");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn warn(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        crate::host::track(&ctx);
        emit(&ctx, Level::Warn, &message)
    }

    /// Logs an error (does not stop the script; use `throw` for that).
    ///
    /// ```rhai
    /// log::error("re-index failed");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn error(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        crate::host::track(&ctx);
        emit(&ctx, Level::Error, &message)
    }
}
