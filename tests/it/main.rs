//! The one integration test binary: every test runs the real `collate-run` against loopback
//! servers. Modules are by area.

mod aws;
mod bad_input;
mod customise;
mod helm;
mod image;
mod incluster;
mod k8s;
mod pins;
mod portforward;
mod preflight;
mod recipes;
mod reliability;
mod runtime;
