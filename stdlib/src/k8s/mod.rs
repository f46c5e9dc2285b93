//! The `k8s` namespace: Kubernetes through kube-rs.

use rhai::plugin::*;

#[export_module]
pub mod k8s_module {}
