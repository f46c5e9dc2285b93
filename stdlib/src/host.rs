//! The host context every namespace reads: the run mode (plan, apply, check), the change
//! journal, the one async bridge, and the settings from the command line.
//!
//! The runtime builds one [`Host`] per run and stores it as the engine's default tag; host
//! functions get it back with [`Host::of`]. Remote calls go through [`Host::read`] and
//! [`Host::mutate`]: the first is allowed in every mode but `check`, the second only in apply
//! mode, so plan mode cannot change anything even by mistake.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use rhai::{Dynamic, NativeCallContext};

use crate::error::{ErrorKind, HostError, RhaiResult};
use crate::journal::{Journal, Reporter};

/// How a run treats converge calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads are real; converge calls compute and record the diff but change nothing.
    Plan,
    /// Converge calls change what differs.
    Apply,
    /// `collate-run check`: the script runs until its first remote call, then stops.
    Check,
}

/// Settings from the command line that host modules read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// `--profile`: the AWS shared-config profile.
    pub aws_profile: Option<String>,
    /// `--region`: overrides the AWS region from the environment/profile.
    pub aws_region: Option<String>,
    /// `--context`: the kubeconfig context.
    pub kube_context: Option<String>,
    /// `--allow-exec`: scripts may run arbitrary processes.
    pub allow_exec: bool,
    /// The folder of the main script; relative paths given to host functions resolve here.
    pub base_dir: PathBuf,
    /// `-v` count.
    pub verbosity: u8,
    /// `--skip-preflight`: a failed preflight requirement does not stop an apply.
    pub skip_preflight: bool,
    /// Folders scripts may read files from without `--allow-exec`: the recipes folder and the
    /// folders of the config files.
    pub read_roots: Vec<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Apply,
            aws_profile: None,
            aws_region: None,
            kube_context: None,
            allow_exec: false,
            base_dir: PathBuf::from("."),
            verbosity: 0,
            read_roots: Vec::new(),
            skip_preflight: false,
        }
    }
}

/// Set by the runtime's SIGINT handler: the engine stops at its next operation, and no new
/// remote call starts (calls in flight finish).
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The run lock an apply takes before its first call to Kubernetes, AWS or Helm (`run_lock:` in
/// the config): a Kubernetes Lease, see `k8s::lock`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLock {
    pub namespace: String,
    pub name: String,
    /// Seconds the lease lasts unless renewed.
    pub ttl: i64,
    /// How long to wait for another holder.
    pub wait: Duration,
}

/// Takes a run lock: `k8s::take_run_lock`, handed in by the runtime (the host does not import
/// the namespaces that build on it).
pub type TakeLock = fn(&Arc<Host>, &RunLock) -> Result<(), HostError>;

#[derive(Default)]
enum LockState {
    #[default]
    Off,
    Pending(RunLock, TakeLock),
    Held,
    Refused(HostError),
}

/// The run lock of a run (a slot, like the namespaces' state).
#[derive(Default)]
struct RunLockSlot {
    state: Mutex<LockState>,
    /// The thread taking the lock right now: its own calls must not wait for it.
    taking: Mutex<Option<ThreadId>>,
}

/// Per-run values, one per type, created on first use: the namespaces' clients and caches
/// (`aws::Clients`, the cluster connection, held leases, helm repositories) and the run lock.
/// A run's state lives and dies with its [`Host`]; nothing is kept in process-wide statics.
#[derive(Default)]
struct Slots(Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

/// The per-run context shared by all host functions.
pub struct Host {
    settings: Settings,
    journal: Journal,
    rt: tokio::runtime::Handle,
    remote_reads: AtomicU64,
    remote_writes: AtomicU64,
    /// Set when the run is over (the runtime's clean-up, e.g. giving the run lock back), so
    /// those calls still go through after an interrupt.
    closing: std::sync::atomic::AtomicBool,
    /// Per-run state, see [`Host::slot`].
    slots: Slots,
    /// This host, for the lock's renewal task.
    me: std::sync::Weak<Host>,
}

/// The wrapper stored in the engine's tag.
#[derive(Clone)]
pub struct HostHandle(pub Arc<Host>);

impl Host {
    pub fn new(
        settings: Settings,
        rt: tokio::runtime::Handle,
        reporter: Arc<dyn Reporter>,
    ) -> Arc<Host> {
        Arc::new_cyclic(|me| Host {
            settings,
            journal: Journal::new(reporter),
            rt,
            remote_reads: AtomicU64::new(0),
            remote_writes: AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            slots: Slots::default(),
            me: me.clone(),
        })
    }

    /// The per-run value of type `T`, created with `T::default()` on first use. Each namespace
    /// keeps its state of a run in a type of its own (interior mutability where it changes), so
    /// two runs in one process never share it.
    pub fn slot<T: Any + Default + Send + Sync>(&self) -> Arc<T> {
        let mut slots = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        let value = slots
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        drop(slots);
        value
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("a slot holds the type it is keyed by"))
    }

    /// Asks for the run lock: in apply mode it is taken (by `take`) before the first change to
    /// Kubernetes, AWS or Helm (not before calls to the applications' HTTP APIs), and given back
    /// by `k8s::release_locks` when the run ends. A run that changes nothing (a diagnosis, a
    /// converged cluster) never takes it.
    pub fn set_run_lock(&self, lock: RunLock, take: TakeLock) {
        if self.settings.mode == Mode::Apply {
            let slot = self.slot::<RunLockSlot>();
            *slot.state.lock().unwrap_or_else(|e| e.into_inner()) = LockState::Pending(lock, take);
        }
    }

    /// Takes the run lock if it is asked for and not held yet; every call after a refusal
    /// is refused the same way. Other threads (`parallel`) wait while it is being taken.
    fn take_run_lock(&self) -> Result<(), HostError> {
        let slot = self.slot::<RunLockSlot>();
        let me = std::thread::current().id();
        if *slot.taking.lock().unwrap_or_else(|e| e.into_inner()) == Some(me) {
            return Ok(());
        }
        let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        if let LockState::Pending(lock, take) = &*state {
            let (lock, take) = (lock.clone(), *take);
            *slot.taking.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
            let taken = match self.me.upgrade() {
                Some(host) => take(&host, &lock),
                None => Ok(()),
            };
            *slot.taking.lock().unwrap_or_else(|e| e.into_inner()) = None;
            *state = match taken {
                Ok(()) => LockState::Held,
                Err(e) => LockState::Refused(e),
            };
        }
        match &*state {
            LockState::Refused(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Stores this host in the engine, so host functions find it.
    pub fn install(self: &Arc<Self>, engine: &mut rhai::Engine) {
        engine.set_default_tag(Dynamic::from(HostHandle(self.clone())));
    }

    /// The host of the running script. Also records the call site for error positions.
    pub fn of(ctx: &NativeCallContext) -> RhaiResult<Arc<Host>> {
        track(ctx);
        ctx.tag()
            .and_then(|t| t.read_lock::<HostHandle>().map(|h| h.0.clone()))
            .ok_or_else(|| {
                HostError::new(ErrorKind::Io, "internal: no host context in this engine").into()
            })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }
    /// `true` in plan and check modes: converge calls must not mutate. `false` inside a
    /// [`Host::transient`] scope allowed in a plan: what it creates is removed before it ends.
    pub fn is_plan(&self) -> bool {
        self.settings.mode != Mode::Apply
            && !(self.settings.mode == Mode::Plan && transient_in_plan())
    }

    /// Runs `f` as a transient change: objects made for a moment (a check's Job) and removed
    /// again before `f` returns. Their converges are journaled as `transient` and not counted as
    /// changes (a converged re-run still reports none). With `in_plan` the scope also changes
    /// things in plan mode, where nothing else does: the caller says so explicitly (preflight's
    /// `--set preflight.in_cluster=true`). Per thread, like the journal's steps.
    pub fn transient<T>(&self, in_plan: bool, f: impl FnOnce() -> T) -> T {
        scoped(&TRANSIENT, Some(in_plan), f)
    }
    pub fn journal(&self) -> &Journal {
        &self.journal
    }
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Resolves a path given by a script against the main script's folder.
    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.settings.base_dir.join(path)
        }
    }

    /// Resolves a path given by a script against the folder of the calling script (so a recipe
    /// and its `templates/` move together), falling back to the main script's folder.
    pub fn resolve_from(&self, ctx: &NativeCallContext, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            return path.to_path_buf();
        }
        if let Some(dir) = ctx
            .call_source()
            .map(Path::new)
            .filter(|s| s.is_file())
            .and_then(Path::parent)
        {
            return dir.join(path);
        }
        self.resolve_path(p)
    }

    /// The sandbox: scripts read files only below the recipes folder or a config file's folder,
    /// unless `--allow-exec` was given. Returns the path to open.
    pub fn check_read(&self, p: &Path) -> Result<PathBuf, HostError> {
        if self.settings.allow_exec {
            return Ok(p.to_path_buf());
        }
        let real = p
            .canonicalize()
            .map_err(|e| HostError::io(format!("cannot read `{}`: {e}", display_path(p))))?;
        let allowed = self
            .settings
            .read_roots
            .iter()
            .filter_map(|r| r.canonicalize().ok())
            .any(|root| real.starts_with(root));
        if allowed {
            Ok(real)
        } else {
            Err(HostError::new(
                ErrorKind::Denied,
                format!(
                    "`{}` is outside the recipes folder; scripts may not read it",
                    display_path(p)
                ),
            )
            .with_hint(
                "move the file next to the recipes, or pass `--allow-exec` to lift the sandbox",
            ))
        }
    }

    /// A path as shown to the user: relative to the working directory when below it.
    pub fn display_path(&self, p: &Path) -> String {
        display_path(p)
    }

    /// The one async bridge: runs a future to completion from a synchronous host function.
    /// Works both from a plain thread and from inside a multi-thread runtime worker.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.rt.block_on(fut))
        } else {
            self.rt.block_on(fut)
        }
    }

    /// Runs `f` even after an interrupt: the removal of what was made for a moment (a check's
    /// Job), which must not outlive the run. Per thread.
    pub fn cleaning_up<T>(&self, f: impl FnOnce() -> T) -> T {
        scoped(&CLEANING_UP, true, f)
    }

    /// Marks the run as over: calls made from now on (the clean-up) ignore an interrupt.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    fn check_stop(&self, what: &str) -> Result<(), HostError> {
        if INTERRUPTED.load(Ordering::Relaxed)
            && !self.closing.load(Ordering::Relaxed)
            && !CLEANING_UP.with(std::cell::Cell::get)
        {
            // Other calls may be in flight (`parallel`): they finish, no new one starts.
            return Err(HostError::new(
                ErrorKind::Interrupted,
                format!("interrupted before `{what}`"),
            ));
        }
        if self.settings.mode == Mode::Check {
            return Err(HostError::new(
                ErrorKind::CheckStop,
                format!("check stops before the first remote call ({what})"),
            ));
        }
        Ok(())
    }

    /// Runs a remote read (allowed in plan and apply modes).
    pub fn read<T, F>(&self, what: &str, fut: F) -> Result<T, HostError>
    where
        F: Future<Output = Result<T, HostError>>,
    {
        self.check_stop(what)?;
        self.remote_reads.fetch_add(1, Ordering::Relaxed);
        self.block_on(fut)
    }

    /// Runs a remote mutation, taking the run lock first (the first change of an apply).
    /// Refused outside apply mode: a plan never changes anything.
    pub fn mutate<T, F>(&self, what: &str, fut: F) -> Result<T, HostError>
    where
        F: Future<Output = Result<T, HostError>>,
    {
        self.check_stop(what)?;
        self.take_run_lock()?;
        self.mutate_unlocked(what, fut)
    }

    /// [`Host::mutate`] without taking the run lock: for the applications' HTTP APIs, which
    /// guard themselves (OpenMetadata refuses a second re-index while one runs).
    pub fn mutate_unlocked<T, F>(&self, what: &str, fut: F) -> Result<T, HostError>
    where
        F: Future<Output = Result<T, HostError>>,
    {
        self.check_stop(what)?;
        if self.is_plan() {
            return Err(HostError::new(
                ErrorKind::Io,
                format!("internal: `{what}` would change something in plan mode; refused"),
            ));
        }
        self.remote_writes.fetch_add(1, Ordering::Relaxed);
        self.block_on(fut)
    }

    /// Runs remote reads side by side, at most `limit` at once, started in order (no new one
    /// after an interrupt); their results in the same order. Each is `(what, future)`, as for
    /// [`Host::read`].
    pub fn read_all<T, F>(
        &self,
        calls: impl IntoIterator<Item = (String, F)>,
        limit: usize,
    ) -> Vec<Result<T, HostError>>
    where
        F: Future<Output = Result<T, HostError>>,
    {
        self.side_by_side(calls, limit, &self.remote_reads)
    }

    /// Runs remote mutations side by side like [`Host::read_all`], taking the run lock first;
    /// refused outside apply mode (every one fails, none runs), as [`Host::mutate`].
    pub fn mutate_all<T, F>(
        &self,
        calls: impl IntoIterator<Item = (String, F)>,
        limit: usize,
    ) -> Vec<Result<T, HostError>>
    where
        F: Future<Output = Result<T, HostError>>,
    {
        let mut calls = calls.into_iter().peekable();
        let Some((first, _)) = calls.peek() else {
            return Vec::new();
        };
        let refused = self
            .check_stop(first)
            .and_then(|()| self.take_run_lock())
            .and_then(|()| match self.is_plan() {
                true => Err(HostError::new(
                    ErrorKind::Io,
                    format!("internal: `{first}` would change something in plan mode; refused"),
                )),
                false => Ok(()),
            });
        if let Err(e) = refused {
            return calls.map(|_| Err(e.clone())).collect();
        }
        self.side_by_side(calls, limit, &self.remote_writes)
    }

    /// Runs `calls` through the bridge, at most `limit` at once, each counted in `count` when
    /// it starts; the results in order.
    fn side_by_side<T, F>(
        &self,
        calls: impl IntoIterator<Item = (String, F)>,
        limit: usize,
        count: &AtomicU64,
    ) -> Vec<Result<T, HostError>>
    where
        F: Future<Output = Result<T, HostError>>,
    {
        use futures::StreamExt as _;
        let calls = calls.into_iter().map(|(what, fut)| {
            // Checked as each starts: after an interrupt, no new call begins.
            let started = self.check_stop(&what);
            if started.is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
            async move {
                started?;
                fut.await
            }
        });
        self.block_on(
            futures::stream::iter(calls)
                .buffered(limit.max(1))
                .collect(),
        )
    }

    /// Refuses in check mode; for local side effects that still count as "remote" (processes).
    pub fn guard_remote(&self, what: &str) -> Result<(), HostError> {
        self.check_stop(what)
    }

    /// Counts of remote reads and writes so far (shown with `-v` and used by tests).
    pub fn remote_calls(&self) -> (u64, u64) {
        (
            self.remote_reads.load(Ordering::Relaxed),
            self.remote_writes.load(Ordering::Relaxed),
        )
    }

    /// Shows progress of a long wait (a spinner on a terminal, a line otherwise).
    pub fn progress(&self, message: &str) {
        self.journal.progress(message);
    }

    /// Waits `d` (a bridge-aware sleep for polling loops).
    pub fn sleep(&self, d: Duration) {
        // The sleep future must be created inside the runtime: defer it into an async block.
        self.block_on(async move { tokio::time::sleep(d).await });
    }
}

/// A path as shown to the user: relative to the working directory when below it.
pub fn display_path(p: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    let shown = cwd
        .as_deref()
        .and_then(|c| p.strip_prefix(c).ok())
        .unwrap_or(p);
    shown.display().to_string()
}

/// Runs `f` with this thread's `flag` set to `value`, and puts the old value back afterwards
/// (also when `f` panics).
fn scoped<V: Copy + 'static, T>(
    flag: &'static std::thread::LocalKey<std::cell::Cell<V>>,
    value: V,
    f: impl FnOnce() -> T,
) -> T {
    struct Restore<V: Copy + 'static>(&'static std::thread::LocalKey<std::cell::Cell<V>>, V);
    impl<V: Copy + 'static> Drop for Restore<V> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|c| c.replace(value)));
    f()
}

/// Whether this thread runs in a [`Host::transient`] scope (`Some(in_plan)`).
pub fn in_transient() -> bool {
    TRANSIENT.with(|t| t.get().is_some())
}

fn transient_in_plan() -> bool {
    TRANSIENT.with(|t| t.get() == Some(true))
}

thread_local! {
    static TRANSIENT: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    static CLEANING_UP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static CALL_SITE: std::cell::RefCell<Option<(String, rhai::Position)>> =
        const { std::cell::RefCell::new(None) };
}

/// Records where the running host function was called from. Rhai does not attach a position
/// to errors of namespaced native functions (`aws::iam::ensure_role`), so every host function
/// records its call site (through [`Host::of`], or this for functions without a host) and the
/// runtime uses it to point at the failing call.
pub fn track(ctx: &NativeCallContext) {
    let site = (
        ctx.call_source().unwrap_or_default().to_string(),
        ctx.call_position(),
    );
    CALL_SITE.with(|c| *c.borrow_mut() = Some(site));
}

/// The call site recorded last by [`track`]: (source, position).
pub fn last_call_site() -> Option<(String, rhai::Position)> {
    CALL_SITE.with(|c| c.borrow().clone())
}

/// Sets this thread's call site: `parallel` hands the site of a failed job (recorded on its
/// worker thread) to the thread that raises the error.
pub(crate) fn set_call_site(site: Option<(String, rhai::Position)>) {
    CALL_SITE.with(|c| *c.borrow_mut() = site);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::{Host, Settings};

    #[derive(Default)]
    struct Counter(AtomicU32);

    /// A slot is one value per host and type: the same `Arc` on every call, another one for
    /// another host (two runs in one process share no state).
    #[test]
    fn slots_are_per_host_and_per_type() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let host = |_| {
            let silent = Arc::new(crate::journal::Silent);
            Host::new(Settings::default(), rt.handle().clone(), silent)
        };
        let (a, b) = (host(1), host(2));
        a.slot::<Counter>().0.fetch_add(1, Ordering::Relaxed);
        a.slot::<Counter>().0.fetch_add(1, Ordering::Relaxed);
        assert!(Arc::ptr_eq(&a.slot::<Counter>(), &a.slot::<Counter>()));
        assert_eq!(a.slot::<Counter>().0.load(Ordering::Relaxed), 2);
        assert_eq!(b.slot::<Counter>().0.load(Ordering::Relaxed), 0);
        assert!(
            a.slot::<std::sync::Mutex<Vec<String>>>()
                .lock()
                .unwrap()
                .is_empty()
        );
    }

    /// The files holding `#[export_module]` namespaces.
    const NAMESPACES: &[(&str, &str)] = &[
        ("aws/mod.rs", include_str!("aws/mod.rs")),
        ("aws/ecr.rs", include_str!("aws/ecr.rs")),
        ("aws/eks.rs", include_str!("aws/eks.rs")),
        ("aws/iam/mod.rs", include_str!("aws/iam/mod.rs")),
        ("aws/s3.rs", include_str!("aws/s3.rs")),
        ("aws/sts.rs", include_str!("aws/sts.rs")),
        ("checks.rs", include_str!("checks.rs")),
        ("db/mod.rs", include_str!("db/mod.rs")),
        ("globals.rs", include_str!("globals.rs")),
        ("helm/mod.rs", include_str!("helm/mod.rs")),
        ("http.rs", include_str!("http.rs")),
        ("json.rs", include_str!("json.rs")),
        ("k8s/mod.rs", include_str!("k8s/mod.rs")),
        ("log.rs", include_str!("log.rs")),
        ("secret.rs", include_str!("secret.rs")),
        ("template.rs", include_str!("template.rs")),
        ("time.rs", include_str!("time.rs")),
        ("yaml.rs", include_str!("yaml.rs")),
    ];

    /// Rhai gives errors of namespaced native functions no position, so the call site recorded
    /// by `track` is where an error points: every host function that can fail records it before
    /// anything else (an option check first would leave the site of the previous host call).
    #[test]
    fn every_fallible_host_function_records_its_call_site_first() {
        let mut missing = Vec::new();
        for (file, text) in NAMESPACES {
            let Some(start) = text.find("#[export_module]") else {
                panic!("{file} has no `#[export_module]`")
            };
            let lines: Vec<&str> = text[start..].lines().collect();
            let mut i = 0;
            while i < lines.len() {
                let Some(name) = lines[i]
                    .trim_start()
                    .strip_prefix("pub fn ")
                    .and_then(|r| r.split('(').next())
                else {
                    i += 1;
                    continue;
                };
                let mut signature = String::new();
                while !lines[i].trim_end().ends_with('{') {
                    signature.push_str(lines[i]);
                    i += 1;
                }
                signature.push_str(lines[i]);
                let first = lines.get(i + 1).copied().unwrap_or_default();
                let records = ["track(&ctx)", "Host::of(&ctx)", "setup(&ctx)"]
                    .iter()
                    .any(|r| first.contains(r));
                if signature.contains("RhaiResult") && !records {
                    missing.push(format!("{file}: `{name}`"));
                }
                i += 1;
            }
        }
        assert!(
            missing.is_empty(),
            "these host functions can fail before recording their call site \
             (start them with `crate::host::track(&ctx);`): {missing:?}"
        );
    }
}
