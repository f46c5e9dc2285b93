//! Exit codes, decided in one place. Documented in the README.

use collate_stdlib::ErrorKind;

/// Success; with `--detailed-exitcode`, success and nothing to change.
pub const OK: i32 = 0;
/// The script failed: a syntax error, an undefined variable, a bad argument, a `throw`.
pub const SCRIPT: i32 = 1;
/// `--detailed-exitcode`: the run succeeded and the plan has changes.
pub const PLAN_HAS_CHANGES: i32 = 2;
/// The customer config is missing a key, has a mistyped or unknown key, or is not valid YAML.
pub const CONFIG: i32 = 3;
/// A remote API (AWS, Kubernetes, Helm, HTTP) failed or refused.
pub const API: i32 = 4;
/// A preflight requirement is not met.
pub const PRECONDITION: i32 = 5;
/// The command line is wrong.
pub const USAGE: i32 = 64;
/// Interrupted by SIGINT between two calls.
pub const INTERRUPTED: i32 = 130;

/// The exit code for an error raised by a host function.
pub fn for_kind(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Config => CONFIG,
        ErrorKind::Api
        | ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::Timeout
        | ErrorKind::Auth => API,
        ErrorKind::Precondition => PRECONDITION,
        ErrorKind::CheckStop => OK,
        ErrorKind::Interrupted => INTERRUPTED,
        _ => SCRIPT,
    }
}
