//! The one integration test binary: every test runs the real `collate-run` against loopback
//! servers. Modules are by area.

mod aws;
mod bad_input;
mod preflight;
mod helm;
mod k8s;
mod runtime;
