//! The options shared by every way of running a script (a recipe, `-e`, `check`, `repl`).

use std::path::PathBuf;

use clap::Args;

use crate::report::Format;

/// Options shared by every way of running a script.
#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    /// A customer config file (YAML); repeatable, later files override earlier ones.
    #[arg(long = "config", short = 'c', value_name = "FILE", global = true)]
    pub(crate) config: Vec<PathBuf>,
    /// Override one config key, e.g. `--set images.server.tag=om-1.12.4` (the value is read as YAML).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub(crate) set: Vec<String>,
    /// Show what would change, per field, and change nothing.
    #[arg(long, global = true)]
    pub plan: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "human", global = true)]
    pub(crate) output: Format,
    /// Exit 2 when the run succeeded and the plan has changes, 0 when there are none.
    #[arg(long, global = true)]
    pub(crate) detailed_exitcode: bool,
    /// AWS shared-config profile (default: the AWS_PROFILE chain).
    #[arg(long, value_name = "NAME", global = true)]
    pub(crate) profile: Option<String>,
    /// AWS region (default: AWS_REGION or the profile's region).
    #[arg(long, value_name = "REGION", global = true)]
    pub(crate) region: Option<String>,
    /// kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME", global = true)]
    pub(crate) context: Option<String>,
    /// Allow scripts to run arbitrary processes and touch files outside the recipe folder.
    #[arg(long, global = true)]
    pub(crate) allow_exec: bool,
    /// `check`: a secret whose environment variable or file is missing is an error (by default
    /// it is listed as needed at run time, so a fork's CI can check configs without secrets).
    #[arg(long, global = true)]
    pub(crate) require_secrets: bool,
    /// Run even when a preflight requirement is not met.
    #[arg(long, global = true)]
    pub(crate) skip_preflight: bool,
    /// An extra folder searched by `import` (after the importing script's own folder).
    #[arg(long = "lib", value_name = "DIR", global = true)]
    pub(crate) lib: Vec<PathBuf>,
    /// More output (-v: debug logs and step timings).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
}
