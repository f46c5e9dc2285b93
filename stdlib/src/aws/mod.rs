//! The `aws` namespace (`aws::account_id()`, `aws::region()`) and its sub-namespaces, one file
//! each: `aws::sts`, `aws::eks`, `aws::iam`, `aws::s3`, `aws::ecr`.

use rhai::Module;
use rhai::plugin::*;

/// The AWS clients of a run, built once from aws-config's chain.
pub struct Clients {
    pub config: aws_config::SdkConfig,
}

/// The `aws` module with its sub-modules.
pub fn module() -> Module {
    exported_module!(aws_module)
}

#[export_module]
pub mod aws_module {}
