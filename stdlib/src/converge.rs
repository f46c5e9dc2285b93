//! The one converge driver: every `ensure_*`, `apply`, `delete` and helm release goes through
//! [`ensure`] or [`remove`]; many objects of one kind at once (`k8s::apply` of a list) through
//! [`ensure_all`], which takes the same decisions for each object.
//!
//! A resource kind supplies what only it knows — how to read the live object, the fields that
//! differ, the object a plan predicts, and the calls that create, update or delete it — as an
//! implementation of [`Resource`]. The driver owns the sequence and everything that must be the
//! same for every kind:
//!
//! 1. read (a remote read, allowed in plan mode);
//! 2. diff → the action (`create` when absent, `update` when fields differ, else `unchanged`);
//! 3. in a plan: the resource's prediction, no change; in an apply: `create`/`update` (their
//!    remote calls go through [`Host::mutate`], which refuses outside apply mode);
//! 4. a create that lost a race (somebody created the object between our read and our create)
//!    reads again and converges that object;
//! 5. masking: every before/after string passes through the secret mask;
//! 6. the journal entry, and the result map scripts get: `#{changed, object, diff}`.
//!
//! The same desired state ensured again in one run (recipes ensure a namespace in every part that
//! needs it) is answered from the run's record ([`Settled`]) without a request: it was converged
//! earlier in this run. Kinds opt in with [`Resource::desired`].
//!
//! [`ensure_all`] runs step 1 for many objects side by side (bounded), step 2 in input order, the
//! creates and updates of step 3 side by side again, and steps 4 to 6 in input order: the
//! journal reads as if the objects had been converged one after the other.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Map};
use sha1::{Digest, Sha1};

use crate::error::{ErrorKind, HostError};
use crate::host::Host;
use crate::journal::{Action, Change, FieldChange};
use crate::secret_value::mask_json;

/// What a diff found: the fields that differ (secrets may still be in them: the driver masks)
/// and an optional note for the journal ("namespace does not exist yet: will be created").
#[derive(Debug, Default, Clone)]
pub struct Planned {
    pub fields: Vec<FieldChange>,
    pub note: Option<String>,
}

impl Planned {
    pub fn fields(fields: Vec<FieldChange>) -> Planned {
        Planned { fields, note: None }
    }
    pub fn with_note(mut self, note: impl Into<String>) -> Planned {
        self.note = Some(note.into());
        self
    }
    /// `true` when some field's top-level key is `key` (`trust` for `trust.Statement.0.Effect`).
    pub fn touches(&self, key: &str) -> bool {
        self.fields.iter().any(|f| top_field(&f.path) == key)
    }
}

/// The top-level key of a diff path: `trust` for `trust.Statement[0]`.
pub fn top_field(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// What a create or update did.
pub enum Applied<O> {
    /// The object as it is now.
    Done(O),
    /// Somebody else created the object between our read and our create (IAM's
    /// `EntityAlreadyExists`, Kubernetes' `AlreadyExists`): the driver reads it and converges it.
    Raced,
}

/// A remote call as a future, and what it does (`k8s: get + dry-run apply secrets collate/x`):
/// what [`ensure_all`] runs side by side with other objects' calls (through [`Host::read_all`]
/// and [`Host::mutate_all`]), and what a kind's `read`/`create` run alone (through [`Call::read`]
/// and [`Call::mutate`]).
pub struct Call<'a, T> {
    pub what: String,
    pub fut: Pin<Box<dyn Future<Output = Result<T, HostError>> + 'a>>,
}

impl<'a, T> Call<'a, T> {
    pub fn new(
        what: impl Into<String>,
        fut: impl Future<Output = Result<T, HostError>> + 'a,
    ) -> Call<'a, T> {
        Call {
            what: what.into(),
            fut: Box::pin(fut),
        }
    }
    /// Runs this read alone ([`Host::read`]).
    pub fn read(self, host: &Host) -> Result<T, HostError> {
        host.read(&self.what, self.fut)
    }
    /// Runs this change alone ([`Host::mutate`]: refused outside apply mode).
    pub fn mutate(self, host: &Host) -> Result<T, HostError> {
        host.mutate(&self.what, self.fut)
    }
}

/// One kind of remote object, as the driver sees it.
pub trait Resource {
    /// What [`Resource::read`] finds (usually `Option<Live>`).
    type State;
    /// The object scripts get back (JSON for Kubernetes, a Rhai map elsewhere).
    type Object;

    /// The journal's kind: `aws.iam.role`, `k8s.Secret`, `helm.release`.
    fn kind(&self) -> String;
    /// The journal's name: `collate-server-role`, `collate/db-credentials`.
    fn name(&self) -> String;
    /// Reads the live object (through [`Host::read`]).
    fn read(&self, host: &Host) -> Result<Self::State, HostError>;
    /// [`Resource::read`] as a [`Call`] (at most two requests at once), so that [`ensure_all`]
    /// reads many objects side by side. `None` (the default): it reads them one at a time.
    fn read_call<'a>(&'a self, host: &'a Host) -> Option<Call<'a, Self::State>> {
        let _ = host;
        None
    }
    /// The remote change of [`Resource::create`] (`Action::Create`) or [`Resource::update`]
    /// (`Action::Update`) as a [`Call`] (one request), so that [`ensure_all`] makes many side by
    /// side; only for kinds whose create/update add no note. `None` (the default): it calls
    /// `create`/`update` one at a time.
    fn write_call<'a>(
        &'a self,
        action: Action,
        state: &'a Self::State,
    ) -> Option<Call<'a, Applied<Self::Object>>> {
        let _ = (action, state);
        None
    }
    /// `true` when the state holds a live object.
    fn exists(&self, state: &Self::State) -> bool;
    /// The fields the converge changes (for an absent object: the fields it sets). May read
    /// more (a server-side dry-run), never change anything. Kinds that are only deleted keep
    /// the default (nothing to change).
    fn diff(&self, host: &Host, state: &Self::State) -> Result<Planned, HostError> {
        let _ = (host, state);
        Ok(Planned::default())
    }
    /// The live object, when nothing differs (and the object a delete removes).
    fn current(&self, state: &Self::State) -> Self::Object;
    /// The object as it would be after the converge (plan mode). May check more (a chart's
    /// schema), never change anything. Default: the live object.
    fn predict(
        &self,
        host: &Host,
        state: &Self::State,
        planned: &Planned,
    ) -> Result<Self::Object, HostError> {
        let _ = (host, planned);
        Ok(self.current(state))
    }
    /// Creates the object (apply mode). May add a note on what it did to `planned`. Kinds that
    /// are only deleted keep the default (an internal error: `ensure` is never called on them).
    fn create(
        &self,
        host: &Host,
        state: &Self::State,
        planned: &mut Planned,
    ) -> Result<Applied<Self::Object>, HostError> {
        let _ = (host, state, planned);
        Err(HostError::input(format!(
            "internal: `{}` is only deleted, never created",
            self.kind()
        )))
    }
    /// Changes what differs (apply mode). May add a note on what it did to `planned`.
    fn update(
        &self,
        host: &Host,
        state: &Self::State,
        planned: &mut Planned,
    ) -> Result<Applied<Self::Object>, HostError> {
        self.create(host, state, planned)
    }
    /// Deletes the live object (apply mode). Kinds that cannot be deleted keep the default.
    fn delete(&self, host: &Host, state: &Self::State) -> Result<(), HostError> {
        let _ = (host, state);
        Err(HostError::input(format!(
            "`{}` objects cannot be deleted by collate-run",
            self.kind()
        )))
    }
    /// Everything that decides the converge's outcome (the body, its options), when the kind
    /// takes part in the run's record of converged objects: ensured again with the same desired
    /// state in one run, the object is answered from the record, without a request. `None` (the
    /// default): always read.
    fn desired(&self) -> Option<String> {
        None
    }
    /// The fields a delete removes (shown in the plan); none by default.
    fn deletion_fields(&self, state: &Self::State) -> Vec<FieldChange> {
        let _ = state;
        Vec::new()
    }
}

/// The result of converging one object.
pub struct Converged<O> {
    pub change: Change,
    /// The live object after the change, or the predicted one in plan mode.
    pub object: O,
}

impl<O: Clone + Into<Dynamic>> Converged<O> {
    /// `#{changed, object, diff}` for the script.
    pub fn outcome(&self) -> Map {
        self.change.outcome(self.object.clone().into())
    }
}

/// How often a create that lost a race is retried before the driver gives up.
const RACE_PASSES: usize = 2;

/// The objects this run has converged (a [`Host::slot`]): by kind and name, the digest of the
/// desired state they were converged to, and the object. Another run starts empty; a delete
/// through [`remove`] forgets the object.
#[derive(Default)]
pub struct Settled(Mutex<HashMap<(String, String), SettledObject>>);

/// The digest of the desired state, and the object converged to it.
type SettledObject = ([u8; 20], Arc<dyn Any + Send + Sync>);

impl Settled {
    fn key<R: Resource>(r: &R) -> (String, String) {
        (r.kind(), r.name())
    }
    fn digest(desired: &str) -> [u8; 20] {
        Sha1::digest(desired.as_bytes()).into()
    }
    /// The object converged to `desired` earlier in this run, if any.
    fn get<R: Resource>(&self, r: &R, desired: &str) -> Option<R::Object>
    where
        R::Object: Clone + Send + Sync + 'static,
    {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (digest, object) = map.get(&Self::key(r))?;
        (*digest == Self::digest(desired))
            .then(|| object.downcast_ref::<R::Object>().cloned())
            .flatten()
    }
    fn put<R: Resource>(&self, r: &R, desired: &str, object: &R::Object)
    where
        R::Object: Clone + Send + Sync + 'static,
    {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            Self::key(r),
            (Self::digest(desired), Arc::new(object.clone())),
        );
    }
    fn forget<R: Resource>(&self, r: &R) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&Self::key(r));
    }
}

/// Converges `r`: reads it, diffs, and in apply mode creates or updates what differs; in plan
/// mode predicts. Journals the change and returns it with the object. The same desired state
/// again in this run is answered from the run's record: `unchanged`, no request, no journal
/// entry.
pub fn ensure<R: Resource>(host: &Host, r: &R) -> Result<Converged<R::Object>, HostError>
where
    R::Object: Clone + Send + Sync + 'static,
{
    let desired = r.desired();
    if let Some(d) = &desired
        && let Some(object) = host.slot::<Settled>().get(r, d)
    {
        let change = Change::new(r.kind(), r.name(), Action::Unchanged)
            .with_note("converged earlier in this run");
        return Ok(Converged { change, object });
    }
    let done = ensure_passes(host, r, RACE_PASSES)?;
    if let Some(d) = &desired {
        host.slot::<Settled>().put(r, d, &done.object);
    }
    Ok(done)
}

/// [`ensure`] with `passes` reads left before a lost create race is an error.
fn ensure_passes<R: Resource>(
    host: &Host,
    r: &R,
    passes: usize,
) -> Result<Converged<R::Object>, HostError> {
    for _ in 0..passes {
        let state = r.read(host)?;
        let mut planned = r.diff(host, &state)?;
        let action = action(r, &state, &planned);
        let write = |p: &mut Planned| create_or_update(host, r, action, &state, p);
        if let Some(object) = settle(host, r, action, &state, &mut planned, write)? {
            let change = record(host, r, action, planned);
            return Ok(Converged { change, object });
        }
    }
    Err(lost_races(r))
}

/// How many objects [`ensure_all`] reads or writes side by side: a read is at most two
/// requests, so at most 64 requests are in flight.
pub const OBJECTS_IN_FLIGHT: usize = 32;

/// How many objects [`ensure_all`] reads, diffs, writes and journals before it reads the next
/// ones: what it holds at once (their states) stays bounded however many objects there are.
const CHUNK: usize = 256;

/// Converges every object of `rs` as [`ensure`] would, one after the other — the same
/// decisions, the journal in input order, the first error (in input order) returned — but reads
/// them side by side, at most [`OBJECTS_IN_FLIGHT`] at once, and in apply mode creates and
/// updates those that differ side by side too. Objects go in chunks of 256: read, diff, write,
/// journal, then the next chunk. The converged objects come back in input order.
pub fn ensure_all<R: Resource>(
    host: &Host,
    rs: &[R],
) -> Result<Vec<Converged<R::Object>>, HostError> {
    let mut out = Vec::with_capacity(rs.len());
    for chunk in rs.chunks(CHUNK) {
        ensure_chunk(host, chunk, &mut out)?;
    }
    Ok(out)
}

/// One chunk of [`ensure_all`]: its converged objects are pushed onto `out`.
fn ensure_chunk<R: Resource>(
    host: &Host,
    rs: &[R],
    out: &mut Vec<Converged<R::Object>>,
) -> Result<(), HostError> {
    // 1. Read, side by side (kinds without a read call: one at a time).
    let calls: Vec<_> = rs.iter().map(|r| r.read_call(host)).collect();
    let states = if calls.iter().all(Option::is_some) {
        let calls = calls.into_iter().flatten().map(|c| (c.what, c.fut));
        host.read_all(calls, OBJECTS_IN_FLIGHT)
    } else {
        drop(calls);
        rs.iter().map(|r| r.read(host)).collect()
    };
    // 2. Diff, in input order.
    let mut read = Vec::with_capacity(rs.len());
    let mut planned = Vec::with_capacity(rs.len());
    for (r, state) in rs.iter().zip(states) {
        let state = state?;
        let p = r.diff(host, &state)?;
        read.push((action(r, &state, &p), state));
        planned.push(p);
    }
    // 3. Create and update what differs, side by side (apply mode only: see `settle`).
    let written: Vec<Option<Result<Applied<R::Object>, HostError>>> = {
        let calls: Vec<_> = rs
            .iter()
            .zip(&read)
            .map(|(r, (action, state))| {
                (action.is_change() && !host.is_plan())
                    .then(|| r.write_call(*action, state))
                    .flatten()
            })
            .collect();
        let slots: Vec<bool> = calls.iter().map(Option::is_some).collect();
        let calls = calls.into_iter().flatten().map(|c| (c.what, c.fut));
        let mut results = host.mutate_all(calls, OBJECTS_IN_FLIGHT).into_iter();
        slots
            .into_iter()
            .map(|called| called.then(|| results.next()).flatten())
            .collect()
    };
    // 4.-6. In input order: the object, a lost race converged again, the journal entry. After
    // an error, no new change starts, but what was changed already is journaled too.
    let mut failed = None;
    let each = rs.iter().zip(read).zip(planned).zip(written);
    for (((r, (action, state)), mut p), done) in each {
        if failed.is_some() {
            if let Some(Ok(Applied::Done(object))) = done {
                let change = record(host, r, action, p);
                out.push(Converged { change, object });
            }
            continue;
        }
        let write =
            |p: &mut Planned| done.unwrap_or_else(|| create_or_update(host, r, action, &state, p));
        let converged = match settle(host, r, action, &state, &mut p, write) {
            Ok(Some(object)) => Ok(Converged {
                change: record(host, r, action, p),
                object,
            }),
            Ok(None) => ensure_passes(host, r, RACE_PASSES - 1),
            Err(e) => Err(e),
        };
        match converged {
            Ok(c) => out.push(c),
            Err(e) => failed = Some(e),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The action the driver takes for an object: `create` when absent, `update` when fields
/// differ, else `unchanged`.
fn action<R: Resource>(r: &R, state: &R::State, planned: &Planned) -> Action {
    match (r.exists(state), planned.fields.is_empty()) {
        (false, _) => Action::Create,
        (true, false) => Action::Update,
        (true, true) => Action::Unchanged,
    }
}

/// The object after the converge of one read and diffed object: the live one when unchanged,
/// the resource's prediction in a plan, else what `write` (its create or update) made; `None`
/// when the create lost a race (the caller reads again).
fn settle<R: Resource>(
    host: &Host,
    r: &R,
    action: Action,
    state: &R::State,
    planned: &mut Planned,
    write: impl FnOnce(&mut Planned) -> Result<Applied<R::Object>, HostError>,
) -> Result<Option<R::Object>, HostError> {
    Ok(Some(match action {
        Action::Unchanged => r.current(state),
        _ if host.is_plan() => r.predict(host, state, planned)?,
        _ => match write(planned)? {
            Applied::Done(o) => o,
            Applied::Raced => return Ok(None),
        },
    }))
}

/// The create or update of `action`, alone.
fn create_or_update<R: Resource>(
    host: &Host,
    r: &R,
    action: Action,
    state: &R::State,
    planned: &mut Planned,
) -> Result<Applied<R::Object>, HostError> {
    match action {
        Action::Create => r.create(host, state, planned),
        _ => r.update(host, state, planned),
    }
}

/// The error when every pass lost its create race.
fn lost_races<R: Resource>(r: &R) -> HostError {
    HostError::new(
        ErrorKind::Conflict,
        format!(
            "{} `{}` is being created and deleted by somebody else at the same time",
            r.kind(),
            r.name()
        ),
    )
    .with_hint("another run or person is changing it: re-run when they are done")
}

/// Deletes `r` when it exists (in apply mode); an absent object is `unchanged` ("already
/// absent"). The object returned is the one deleted, `absent` when there was none.
pub fn remove<R: Resource>(
    host: &Host,
    r: &R,
    absent: R::Object,
) -> Result<Converged<R::Object>, HostError> {
    host.slot::<Settled>().forget(r);
    let state = r.read(host)?;
    if !r.exists(&state) {
        let planned = Planned::default().with_note("already absent");
        let change = record(host, r, Action::Unchanged, planned);
        return Ok(Converged {
            change,
            object: absent,
        });
    }
    let planned = Planned::fields(r.deletion_fields(&state));
    if !host.is_plan() {
        r.delete(host, &state)?;
    }
    let object = r.current(&state);
    let change = record(host, r, Action::Delete, planned);
    Ok(Converged { change, object })
}

/// Journals one converge with its fields masked.
fn record<R: Resource>(host: &Host, r: &R, action: Action, planned: Planned) -> Change {
    let fields = planned.fields.into_iter().map(mask_field).collect();
    let mut change = Change::new(r.kind(), r.name(), action).with_fields(fields);
    if let Some(n) = planned.note {
        change = change.with_note(n);
    }
    if crate::host::in_transient() && action.is_change() {
        change.transient = true;
        change.planned = host.is_plan();
        let note = change
            .note
            .take()
            .map(|n| format!("{n}; "))
            .unwrap_or_default();
        change = change.with_note(format!("{note}transient: removed again by the same call"));
    }
    host.journal().record(change)
}

/// A field with every string in its before/after values passed through the secret mask.
fn mask_field(mut f: FieldChange) -> FieldChange {
    f.before = f.before.map(mask_json);
    f.after = f.after.map(mask_json);
    f
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::host::{Mode, Settings};
    use crate::journal::Silent;
    use crate::secret_value::Secret;

    /// An in-memory resource: the driver's sequence is what is under test.
    #[derive(Default)]
    struct Memory {
        name: String,
        live: Mutex<Option<String>>,
        want: String,
        /// Creates that lose a race before succeeding.
        races: Mutex<usize>,
        /// Creates and updates fail.
        refuse: bool,
        calls: Mutex<Vec<&'static str>>,
        /// Takes part in the run's record ([`Resource::desired`]).
        recorded: bool,
    }

    impl Memory {
        fn read_now(&self) -> Result<Option<String>, HostError> {
            self.calls.lock().unwrap().push("read");
            Ok(self.live.lock().unwrap().clone())
        }
        /// A create or update: its lost races and refusals, else the wanted value stored.
        fn write(&self, action: Action) -> Result<Applied<String>, HostError> {
            let call = if action == Action::Create {
                "create"
            } else {
                "update"
            };
            self.calls.lock().unwrap().push(call);
            if self.refuse {
                return Err(HostError::input(format!("{} refused", self.name)));
            }
            let mut races = self.races.lock().unwrap();
            if action == Action::Create && *races > 0 {
                *races -= 1;
                if *races == 0 {
                    *self.live.lock().unwrap() = Some("theirs".into());
                }
                return Ok(Applied::Raced);
            }
            *self.live.lock().unwrap() = Some(self.want.clone());
            Ok(Applied::Done(self.want.clone()))
        }
    }

    impl Resource for Memory {
        type State = Option<String>;
        type Object = String;
        fn kind(&self) -> String {
            "test.memory".into()
        }
        fn name(&self) -> String {
            self.name.clone()
        }
        fn read(&self, _: &Host) -> Result<Option<String>, HostError> {
            self.read_now()
        }
        fn read_call<'a>(&'a self, _: &'a Host) -> Option<Call<'a, Option<String>>> {
            Some(Call::new("read", async { self.read_now() }))
        }
        fn write_call<'a>(
            &'a self,
            action: Action,
            _: &'a Option<String>,
        ) -> Option<Call<'a, Applied<String>>> {
            Some(Call::new("write", async move { self.write(action) }))
        }
        fn exists(&self, s: &Option<String>) -> bool {
            s.is_some()
        }
        fn desired(&self) -> Option<String> {
            self.recorded.then(|| self.want.clone())
        }
        fn diff(&self, _: &Host, s: &Option<String>) -> Result<Planned, HostError> {
            Ok(Planned::fields(crate::diff::diff(
                &json!({"value": self.want}),
                s.as_ref().map(|l| json!({"value": l})).as_ref(),
                &|_| false,
            )))
        }
        fn current(&self, s: &Option<String>) -> String {
            s.clone().unwrap_or_default()
        }
        fn predict(&self, _: &Host, _: &Option<String>, _: &Planned) -> Result<String, HostError> {
            Ok(self.want.clone())
        }
        fn create(
            &self,
            host: &Host,
            _: &Option<String>,
            _: &mut Planned,
        ) -> Result<Applied<String>, HostError> {
            host.mutate("create", async { self.write(Action::Create) })
        }
        fn update(
            &self,
            host: &Host,
            s: &Option<String>,
            p: &mut Planned,
        ) -> Result<Applied<String>, HostError> {
            assert!(s.is_some() && !p.fields.is_empty());
            host.mutate("update", async { self.write(Action::Update) })
        }
        fn delete(&self, host: &Host, _: &Option<String>) -> Result<(), HostError> {
            self.calls.lock().unwrap().push("delete");
            host.mutate("delete", async { Ok(()) })?;
            *self.live.lock().unwrap() = None;
            Ok(())
        }
    }

    fn host(mode: Mode) -> (tokio::runtime::Runtime, Arc<Host>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let settings = Settings {
            mode,
            ..Settings::default()
        };
        let h = Host::new(settings, rt.handle().clone(), Arc::new(Silent));
        h.journal().set_planned(mode == Mode::Plan);
        (rt, h)
    }

    fn memory(live: Option<&str>, want: &str) -> Memory {
        named("m", live, want)
    }

    fn named(name: &str, live: Option<&str>, want: &str) -> Memory {
        Memory {
            name: name.into(),
            live: Mutex::new(live.map(str::to_string)),
            want: want.into(),
            ..Memory::default()
        }
    }

    #[test]
    fn creates_updates_and_then_changes_nothing() {
        let (_rt, h) = host(Mode::Apply);
        let m = memory(None, "a");
        let c = ensure(&h, &m).unwrap();
        assert_eq!((c.change.action, c.object.as_str()), (Action::Create, "a"));
        let c = ensure(&h, &m).unwrap();
        assert_eq!(c.change.action, Action::Unchanged);
        assert!(c.change.fields.is_empty());
        let m = memory(Some("a"), "b");
        let c = ensure(&h, &m).unwrap();
        assert_eq!(c.change.action, Action::Update);
        assert_eq!(c.change.fields[0].path, "value");
        assert_eq!(*m.live.lock().unwrap(), Some("b".into()));
        assert_eq!(h.remote_calls().1, 2, "one write per change");
    }

    #[test]
    fn the_same_desired_state_again_in_one_run_is_answered_without_a_read() {
        let (_rt, h) = host(Mode::Apply);
        let m = Memory {
            recorded: true,
            ..memory(None, "a")
        };
        assert_eq!(ensure(&h, &m).unwrap().change.action, Action::Create);
        let again = ensure(&h, &m).unwrap();
        assert_eq!(
            (again.change.action, again.object.as_str()),
            (Action::Unchanged, "a")
        );
        assert_eq!(
            again.change.note.as_deref(),
            Some("converged earlier in this run")
        );
        assert_eq!(
            *m.calls.lock().unwrap(),
            ["read", "create"],
            "no second read"
        );
        assert_eq!(
            h.journal().counts(),
            (1, 0, 0, 0),
            "the answer is not journaled"
        );
        // Another desired state for the same object is converged again.
        let b = Memory {
            recorded: true,
            ..memory(Some("a"), "b")
        };
        assert_eq!(ensure(&h, &b).unwrap().change.action, Action::Update);
        // A delete forgets: the next ensure reads (and re-creates).
        remove(&h, &b, String::new()).unwrap();
        assert_eq!(ensure(&h, &b).unwrap().change.action, Action::Create);
        // Another run (host) starts with an empty record.
        let (_rt2, h2) = host(Mode::Apply);
        assert_eq!(ensure(&h2, &b).unwrap().change.action, Action::Unchanged);
        assert_eq!(
            *b.calls.lock().unwrap(),
            ["read", "update", "read", "delete", "read", "create", "read"]
        );
    }

    #[test]
    fn a_plan_predicts_and_changes_nothing() {
        let (_rt, h) = host(Mode::Plan);
        let m = memory(Some("a"), "b");
        let c = ensure(&h, &m).unwrap();
        assert_eq!((c.change.action, c.object.as_str()), (Action::Update, "b"));
        assert!(c.change.planned);
        assert_eq!(*m.live.lock().unwrap(), Some("a".into()));
        assert_eq!(*m.calls.lock().unwrap(), ["read"]);
        let c = remove(&h, &m, String::new()).unwrap();
        assert_eq!(c.change.action, Action::Delete);
        assert_eq!(*m.live.lock().unwrap(), Some("a".into()));
        assert_eq!(h.remote_calls().1, 0);
    }

    #[test]
    fn a_lost_create_race_converges_the_winners_object() {
        let (_rt, h) = host(Mode::Apply);
        let m = memory(None, "a");
        *m.races.lock().unwrap() = 1;
        let c = ensure(&h, &m).unwrap();
        assert_eq!(c.change.action, Action::Update, "theirs → ours");
        assert_eq!(
            *m.calls.lock().unwrap(),
            ["read", "create", "read", "update"]
        );
        // The object keeps vanishing: created by somebody, deleted before we read it.
        let m = memory(None, "a");
        *m.races.lock().unwrap() = 5;
        let e = ensure(&h, &m).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("test.memory `m`"), "{}", e.message);
    }

    #[test]
    fn a_transient_scope_changes_in_a_plan_only_when_asked_and_counts_no_change() {
        let (_rt, h) = host(Mode::Plan);
        let m = memory(None, "a");
        let c = h.transient(false, || ensure(&h, &m)).unwrap();
        assert!(c.change.planned && c.change.transient);
        assert_eq!(*m.live.lock().unwrap(), None, "not asked: predicted only");
        let c = h.transient(true, || ensure(&h, &m)).unwrap();
        assert!(!c.change.planned && c.change.transient);
        assert_eq!(*m.live.lock().unwrap(), Some("a".into()));
        let c = h.transient(true, || remove(&h, &m, String::new())).unwrap();
        assert_eq!(c.change.action, Action::Delete);
        assert_eq!(*m.live.lock().unwrap(), None);
        assert_eq!(h.journal().counts(), (0, 0, 0, 0));
        assert!(!h.journal().has_changes());
        // Outside the scope the plan is a plan again.
        assert!(h.is_plan());
        assert!(h.mutate("x", async { Ok(()) }).is_err());
    }

    #[test]
    fn delete_of_an_absent_object_is_unchanged_and_secrets_are_masked() {
        let (_rt, h) = host(Mode::Apply);
        let m = memory(None, "x");
        let c = remove(&h, &m, "gone".into()).unwrap();
        assert_eq!(c.change.action, Action::Unchanged);
        assert_eq!(c.change.note.as_deref(), Some("already absent"));
        assert_eq!(c.object, "gone");
        let _s = Secret::new("hunter2-very-secret", "test");
        let m = memory(Some("old"), "pw=hunter2-very-secret");
        let c = ensure(&h, &m).unwrap();
        let shown = serde_json::to_string(&c.change.fields).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        let c = remove(&h, &m, String::new()).unwrap();
        assert_eq!(c.change.action, Action::Delete);
        assert_eq!(*m.live.lock().unwrap(), None);
    }

    /// `(name, action)` of the journal's entries.
    fn journaled(h: &Host) -> Vec<(String, Action)> {
        h.journal()
            .entries()
            .into_iter()
            .map(|c| (c.name, c.action))
            .collect()
    }

    fn a(name: &str, action: Action) -> (String, Action) {
        (name.to_string(), action)
    }

    #[test]
    fn ensure_all_takes_ensures_decisions_and_journals_in_input_order() {
        let (_rt, h) = host(Mode::Apply);
        // 600 objects: three chunks.
        let rs: Vec<Memory> = (0..600)
            .map(|i| match i % 3 {
                0 => named(&format!("m{i}"), None, "a"),
                1 => named(&format!("m{i}"), Some("a"), "b"),
                _ => named(&format!("m{i}"), Some("a"), "a"),
            })
            .collect();
        let done = ensure_all(&h, &rs).unwrap();
        let want: Vec<_> = (0..600)
            .map(|i| {
                let action = [Action::Create, Action::Update, Action::Unchanged][i % 3];
                a(&format!("m{i}"), action)
            })
            .collect();
        assert_eq!(journaled(&h), want);
        let objects: Vec<&str> = done.iter().map(|c| c.object.as_str()).collect();
        assert_eq!(objects[..3], ["a", "b", "a"]);
        assert_eq!(
            h.remote_calls(),
            (600, 400),
            "one read each, one write per change"
        );
        assert_eq!(*rs[1].calls.lock().unwrap(), ["read", "update"]);
        // Converged: reads only.
        let again = ensure_all(&h, &rs).unwrap();
        assert!(again.iter().all(|c| c.change.action == Action::Unchanged));
        assert_eq!(h.remote_calls(), (1200, 400));
    }

    #[test]
    fn ensure_all_in_a_plan_predicts_and_writes_nothing() {
        let (_rt, h) = host(Mode::Plan);
        let rs = [named("x", None, "a"), named("y", Some("a"), "b")];
        let done = ensure_all(&h, &rs).unwrap();
        assert_eq!(
            journaled(&h),
            [a("x", Action::Create), a("y", Action::Update)]
        );
        assert!(done.iter().all(|c| c.change.planned));
        assert_eq!(
            (done[0].object.as_str(), done[1].object.as_str()),
            ("a", "b")
        );
        assert_eq!(h.remote_calls().1, 0);
        assert_eq!(*rs[1].live.lock().unwrap(), Some("a".into()));
        assert!(h.mutate_all([("x".to_string(), async { Ok(()) })], 4)[0].is_err());
    }

    #[test]
    fn ensure_all_converges_a_lost_race_and_journals_what_changed_before_an_error() {
        let (_rt, h) = host(Mode::Apply);
        let rs = [named("x", None, "a"), named("y", None, "a")];
        *rs[0].races.lock().unwrap() = 1;
        let done = ensure_all(&h, &rs).unwrap();
        assert_eq!(
            journaled(&h),
            [a("x", Action::Update), a("y", Action::Create)]
        );
        assert_eq!(
            *rs[0].calls.lock().unwrap(),
            ["read", "create", "read", "update"]
        );
        assert_eq!(done[0].object, "a");

        let (_rt, h) = host(Mode::Apply);
        let mut refused = named("r", Some("a"), "b");
        refused.refuse = true;
        let rs = [
            named("before", None, "a"),
            refused,
            named("after", None, "a"),
            named("same", Some("a"), "a"),
        ];
        let e = ensure_all(&h, &rs).err().unwrap();
        assert_eq!(e.message, "r refused");
        // Both creates were made side by side with the refused update: both are journaled.
        assert_eq!(
            journaled(&h),
            [a("before", Action::Create), a("after", Action::Create)]
        );
        assert_eq!(*rs[2].live.lock().unwrap(), Some("a".into()));
    }
}
