//! The integration-test harness of collate-run: a builder that runs the real binary
//! ([`run::Run`]), and helpers that start the loopback servers each test needs on ephemeral
//! ports (moto, the Kubernetes API test server, the OpenMetadata/Argo test server).

pub mod api_server;
pub mod fault_proxy;
pub mod json_server;
pub mod kube;
pub mod mariadb;
pub mod moto;
pub mod postgres;
pub mod run;

pub use run::{Output, Run};
