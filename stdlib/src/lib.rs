//! The standard library of collate-run: one Rhai namespace per file (`aws::iam`, `k8s`, `helm`,
//! `template`, `yaml`, `json`, `http`, `secret`, `log`, `time`; the global helpers in `globals`, the
//! `parallel` worker pool in `parallel`), all reading the per-run [`host::Host`] for the run
//! mode, the journal and the async bridge.

pub mod aws;
pub mod checks;
pub mod converge;
pub mod db;
pub mod diff;
pub mod error;
pub mod globals;
pub mod helm;
pub mod host;
pub mod http;
pub mod journal;
pub mod json;
pub mod k8s;
pub mod log;
pub mod parallel;
pub mod secret;
pub mod secret_value;
pub mod suggest;
pub mod template;
pub mod time;
pub mod value;
pub mod yaml;

use rhai::{Engine, exported_module};

pub use error::{ErrorKind, HostError};
pub use host::{Host, Mode, RunLock, Settings};
pub use secret_value::Secret;

/// Registers every namespace and global helper of the standard library with `engine`.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Secret>("Secret");
    engine.register_type_with_name::<HostError>("error");
    engine.register_global_module(exported_module!(error::error_api).into());
    engine.register_global_module(exported_module!(globals::globals).into());
    engine.register_static_module("log", exported_module!(log::log_module).into());
    engine.register_static_module("secret", exported_module!(secret::secret_module).into());
    engine.register_static_module(
        "template",
        exported_module!(template::template_module).into(),
    );
    engine.register_static_module("time", exported_module!(time::time_module).into());
    engine.register_static_module("yaml", exported_module!(yaml::yaml_module).into());
    engine.register_static_module("json", exported_module!(json::json_module).into());
    engine.register_static_module("http", exported_module!(http::http_module).into());
    engine.register_static_module("aws", aws::module().into());
    engine.register_static_module("k8s", exported_module!(k8s::k8s_module).into());
    engine.register_static_module("helm", exported_module!(helm::helm_module).into());
    engine.register_static_module("db", exported_module!(db::db_module).into());
    engine.register_static_module("checks", exported_module!(checks::checks_module).into());
}
