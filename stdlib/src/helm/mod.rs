//! The `helm` namespace: Helm releases through the real `helm` binary.

use rhai::plugin::*;

#[export_module]
pub mod helm_module {}
