//! The worker pool behind the global `parallel(jobs)`: at most `limit` jobs at once, taken in
//! list order; each job's journal events are held until the jobs before it are done, so output
//! follows job order; the first error (in list order) is raised at its own call site.

use rhai::FnPtr;
use rhai::plugin::*;

use crate::error::RhaiResult;
use crate::host::Host;

/// `parallel` with at most `limit` jobs at once.
pub(crate) fn parallel_impl(
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
