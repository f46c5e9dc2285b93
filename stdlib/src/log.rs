//! The `log` namespace (`log::info(..)`, `log::warn(..)`) and the global `step(name, || {...})`
//! that groups journal entries and shows progress on long steps.

use rhai::FnPtr;
use rhai::plugin::*;

use crate::error::RhaiResult;
use crate::host::Host;
use crate::journal::Level;

fn emit(ctx: &NativeCallContext, level: Level, message: &Dynamic) -> RhaiResult<()> {
    let host = Host::of(ctx)?;
    host.journal().log(level, &crate::value::display(message));
    Ok(())
}

/// The `log` namespace. Secret values are masked in every message.
#[export_module]
pub mod log_module {
    use super::*;

    /// Logs a detail shown only with `-v` (`debug` is a reserved word in Rhai).
    ///
    /// ```rhai
    /// log::verbose(`issuer is ${issuer}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn verbose(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        crate::host::track(&ctx);
        emit(&ctx, Level::Debug, &message)
    }

    /// Logs at info level.
    ///
    /// ```rhai
    /// log::info("argo server answers");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn info(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        crate::host::track(&ctx);
        emit(&ctx, Level::Info, &message)
    }

    /// Logs a warning.
    ///
    /// ```rhai
    /// log::warn("AmazonS3FullAccess grants every bucket; consider s3.scoped_policy: true");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn warn(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        crate::host::track(&ctx);
        emit(&ctx, Level::Warn, &message)
    }

    /// Logs an error (does not stop the script; use `throw` for that).
    ///
    /// ```rhai
    /// log::error("re-index failed");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn error(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        crate::host::track(&ctx);
        emit(&ctx, Level::Error, &message)
    }
}

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

/// `parallel` with at most `limit` jobs at once.
fn parallel_impl(
    ctx: &NativeCallContext,
    jobs: rhai::Array,
    limit: usize,
) -> RhaiResult<rhai::Array> {
    crate::host::track(ctx);
    let fns: Vec<FnPtr> = jobs
        .into_iter()
        .map(|j| {
            j.try_cast::<FnPtr>().ok_or_else(|| {
                crate::error::HostError::input("`parallel` takes an array of closures")
            })
        })
        .collect::<Result<_, _>>()?;
    // A pool of at most `limit` workers takes the jobs in order: a slow job holds one worker,
    // not a whole batch.
    let host = Host::of(ctx)?;
    let journal = host.journal();
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Slot = Option<(RhaiResult<Dynamic>, Option<(String, rhai::Position)>)>;
    let results: Vec<std::sync::Mutex<Slot>> = (0..fns.len())
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    // Each job's journal events are held until the jobs before it are done (the head job
    // streams): the output lists them in job order (see `journal::Hold`). `released` is the
    // first job not done yet.
    let parent = crate::journal::current_hold();
    let holds: Vec<crate::journal::Hold> = (0..fns.len())
        .map(|_| crate::journal::new_hold(parent.clone()))
        .collect();
    if let Some(first) = holds.first() {
        journal.stream(first);
    }
    let done: Vec<std::sync::atomic::AtomicBool> = (0..fns.len())
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect();
    let released = std::sync::Mutex::new(0usize);
    let steps = crate::journal::current_steps();
    let workers = fns.len().min(limit);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    crate::journal::set_steps(steps.clone());
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = fns.get(i) else { break };
                        let r = crate::journal::with_hold(holds[i].clone(), || {
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                f.call_within_context::<Dynamic>(ctx, ())
                            }))
                        })
                        .unwrap_or_else(|_| {
                            Err(crate::error::HostError::input("a parallel job panicked").into())
                        });
                        // Where a failed job's host call was made (a thread-local).
                        let site = r.is_err().then(crate::host::last_call_site).flatten();
                        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some((r, site));
                        done[i].store(true, std::sync::atomic::Ordering::Release);
                        let mut first = released.lock().unwrap_or_else(|e| e.into_inner());
                        // Pass the finished jobs at the head on; the next one streams.
                        while *first < holds.len()
                            && done[*first].load(std::sync::atomic::Ordering::Acquire)
                        {
                            journal.stream(&holds[*first]);
                            *first += 1;
                        }
                        if let Some(head) = holds.get(*first) {
                            journal.stream(head);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    });
    let mut out = rhai::Array::with_capacity(results.len());
    for slot in results {
        match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some((Ok(v), _)) => out.push(v),
            Some((Err(e), site)) => {
                if site.is_some() {
                    crate::host::set_call_site(site);
                }
                return Err(e);
            }
            None => out.push(Dynamic::UNIT),
        }
    }
    Ok(out)
}
