//! The integration-test harness of collate-run: a builder that runs the real binary
//! ([`run::Run`]), and helpers that start the loopback servers each test needs on ephemeral
//! ports (moto, the Kubernetes API test server, the OpenMetadata/Argo test server, a TLS server
//! standing in for an OIDC issuer).

pub mod api_server;
pub mod chart_repo;
pub mod fault_proxy;
pub mod json_server;
pub mod kube;
pub mod loopback;
pub mod mariadb;
pub mod moto;
pub mod needs;
pub mod postgres;
pub mod run;
pub mod tls_server;
pub mod world;

pub use base64;
pub use run::{Output, Run};
