//! The `http` namespace: small JSON calls to the OpenMetadata and Argo APIs.

use rhai::plugin::*;

#[export_module]
pub mod http_module {}
