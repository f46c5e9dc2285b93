//! The global helpers a script calls without a namespace: `step(name, || {...})` (groups journal
//! entries, shows progress on long steps), `parallel(jobs)` (the worker pool is in `parallel.rs`),
//! `join`, `run_options` and `is_plan`.

use rhai::FnPtr;
use rhai::plugin::*;

use crate::error::RhaiResult;
use crate::host::Host;
use crate::parallel::parallel_impl;

/// Global helpers available without a namespace.
#[export_module]
pub mod globals {
    use super::*;

    /// Runs `body` as a named step: its journal entries are grouped under `name`, and a long
    /// step shows a spinner with the elapsed time on a terminal. Returns what `body` returns.
    ///
    /// ```rhai
    /// step("argo", || {
    ///     k8s::ensure_namespace("argo-workflows");
    /// });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn step(ctx: NativeCallContext, name: &str, body: FnPtr) -> RhaiResult<Dynamic> {
        let host = Host::of(&ctx)?;
        if host.mode() == crate::host::Mode::Check {
            // `check` stops at the first remote call: no step starts or ends there.
            return body.call_within_context::<Dynamic>(&ctx, ());
        }
        host.journal().step(
            name,
            || body.call_within_context::<Dynamic>(&ctx, ()),
            |r| r.is_ok(),
        )
    }

    /// Runs independent closures at the same time and returns their results in order: a pool of
    /// 8 workers takes the jobs in list order, so a slow job holds one worker, not a batch. Use it
    /// for steps that do not depend on each other — roles, secrets in different namespaces — so a
    /// converged re-run costs about one round trip per dependency level (per 8 objects). When
    /// some fail, the others still finish and the first error (in list order) is raised, pointing
    /// at the failing call inside its closure. The jobs' changes and log lines come out in list
    /// order, as a sequential run would print them (the first unfinished job streams, a later
    /// job's output waits for the jobs before it), so plans read the same every time. After Ctrl-C no job starts a new remote call.
    ///
    /// ```rhai
    /// let arns = parallel([
    ///     || aws::iam::ensure_role("collate-argo-controller-role", controller).arn,
    ///     || aws::iam::ensure_role("collate-argo-server-role", server).arn,
    /// ]);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn parallel(ctx: NativeCallContext, jobs: rhai::Array) -> RhaiResult<rhai::Array> {
        crate::host::track(&ctx);
        parallel_impl(&ctx, jobs, 8)
    }

    /// `parallel(jobs)` with at most `limit` jobs at once (1 to 64): more for many objects on a
    /// distant API server, 1 to run them one after the other.
    ///
    /// ```rhai
    /// parallel(jobs, 32);
    /// ```
    #[rhai_fn(name = "parallel", return_raw)]
    pub fn parallel_limit(
        ctx: NativeCallContext,
        jobs: rhai::Array,
        limit: rhai::INT,
    ) -> RhaiResult<rhai::Array> {
        crate::host::track(&ctx);
        if !(1..=64).contains(&limit) {
            return Err(crate::error::HostError::input(format!(
                "`parallel` takes a limit from 1 to 64, not {limit}"
            ))
            .into());
        }
        parallel_impl(&ctx, jobs, limit as usize)
    }

    /// Joins the items of an array into one string, with `sep` between them (Secrets show `***`).
    ///
    /// ```rhai
    /// ["a", "b", 3].join(", ")   // "a, b, 3"
    /// ```
    #[rhai_fn(global, name = "join", pure)]
    pub fn join(items: &mut rhai::Array, sep: &str) -> String {
        items
            .iter()
            .map(crate::value::display)
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// The run's options from the command line: `#{plan, skip_preflight, allow_exec, verbosity}`.
    ///
    /// ```rhai
    /// if !run_options().skip_preflight { preflight::run(cfg); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn run_options(ctx: NativeCallContext) -> RhaiResult<rhai::Map> {
        let host = Host::of(&ctx)?;
        let s = host.settings();
        let mut m = rhai::Map::new();
        m.insert("plan".into(), host.is_plan().into());
        m.insert("skip_preflight".into(), s.skip_preflight.into());
        m.insert("allow_exec".into(), s.allow_exec.into());
        m.insert("verbosity".into(), (s.verbosity as rhai::INT).into());
        Ok(m)
    }

    /// A script's result, for people and for programs: `text` is printed; with `--output json`
    /// one line `{"type": "report", "name", "data"}` carries `data` instead (Secrets masked in
    /// both). For read-only recipes whose output other tools consume (`status.rhai`).
    ///
    /// ```rhai
    /// let rows = [#{ what: "release openmetadata", ok: true }];
    /// report("status", #{ healthy: true, rows: rows }, "everything is healthy");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn report(ctx: NativeCallContext, name: &str, data: Dynamic, text: &str) -> RhaiResult<()> {
        let host = Host::of(&ctx)?;
        let json = crate::value::to_json(&data, crate::value::Secrets::Mask)?;
        host.journal().report(name, &json, text);
        Ok(())
    }

    /// `true` in plan mode (`--plan`): nothing will be changed.
    ///
    /// ```rhai
    /// if is_plan() { log::info("plan only"); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn is_plan(ctx: NativeCallContext) -> RhaiResult<bool> {
        Ok(Host::of(&ctx)?.is_plan())
    }
}
