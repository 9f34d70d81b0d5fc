//! The coordinator's heart: the engine behind a lock, and the committer that
//! makes its events durable before anyone is told about them.
//!
//! Every mutating call runs the engine under the lock and, still under the
//! lock, queues the events it produced to the committer, so the log's order
//! is the engine's order. The committer appends queued records in batches
//! (one fsync for many concurrent calls) and only then releases the
//! replies (I6). If a commit fails, the in-memory engine is ahead of the
//! durable state: the coordinator stops serving at once and exits, and the
//! durable state is the truth at the next start.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use medic_policy::{
    Action, ClockMark, ClockStep, Denial, DurableState, Engine, Event, HostId, Time,
};
use medic_store::{Entry, Record, Retention, Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::clock::{Clock, STEP_THRESHOLD, StepWatch};
use crate::config::CoordinatorConfig;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::sample::{DenialSampler, RefusalSampler};

/// Why a call could not be served.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The core stopped deciding; the coordinator is stopping.
    #[error("the coordinator cannot make decisions durable ({0}); it is stopping")]
    Halted(Halt),
}

/// Why the core refuses every call, from the moment it does.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Halt {
    /// The store failed a write or its check: the in-memory engine may be
    /// ahead of the durable state, which is the truth at the next start.
    #[error("{0}")]
    Store(Arc<StoreError>),
    /// The committer task ended other than by `close` (a panic).
    #[error("the committer failed")]
    CommitterFailed,
    /// `close` was called: the server is draining.
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    /// This replica's lease ended (why).
    #[error("this replica lost its leadership ({0})")]
    LostLeadership(String),
}

/// What the committer is asked to do, in order.
enum Write {
    Append {
        records: Vec<(Time, Record)>,
    },
    Snapshot {
        state: Box<DurableState>,
    },
    /// Commit what is queued, then stop.
    Close(oneshot::Sender<()>),
}

/// Runs `f`, a call into the store, on a blocking thread; or on the
/// caller's task when the store is `inline` ([`Store::inline`]), so that a
/// simulated fleet on one thread never waits on another.
pub async fn off_task<T, F>(inline: bool, f: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if inline {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await
    }
}

/// The core's store, shared with handlers and blocking reads. The last
/// holder may drop it on any thread (a blocking read that outlived the
/// core), and a store's drop is work (redb closes its file, then the state
/// directory's lock goes): `closed` is dropped after the store, so its
/// receivers learn when that work is done.
#[derive(Debug)]
pub struct SharedStore<S> {
    // Field order is drop order.
    store: S,
    closed: watch::Sender<()>,
}

impl<S> std::ops::Deref for SharedStore<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.store
    }
}

/// See [`Core::store_watch`].
pub(crate) struct StoreWatch(watch::Receiver<()>);

impl StoreWatch {
    /// Waits up to `limit` for the store to be dropped; says whether it
    /// has.
    pub(crate) async fn closed_within(mut self, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, async { while self.0.changed().await.is_ok() {} })
            .await
            .is_ok()
    }
}

/// State shared by every handler.
#[derive(Debug)]
pub struct Core<S: Store> {
    engine: Mutex<Engine>,
    store: Arc<SharedStore<S>>,
    writes: mpsc::UnboundedSender<Write>,
    /// History entries as they become durable, for `WatchEvents`.
    events: broadcast::Sender<Entry>,
    metrics: Arc<Metrics>,
    /// The configuration in force.
    live: Arc<Live>,
    denials: Mutex<DenialSampler>,
    refusals: Mutex<RefusalSampler>,
    started_at: SystemTime,
    clock: Arc<dyn Clock>,
    /// The last reading of the wall and boot clocks, to find steps between
    /// readings. Locked inside the engine's lock.
    steps: Mutex<StepWatch>,
    /// Steps found since start, for `status`.
    stepped: Mutex<ClockSteps>,
    /// Set when the store failed or leadership was lost: handlers refuse,
    /// the server stops.
    fatal: watch::Sender<Option<Halt>>,
    /// Set when the server starts draining: long-lived streams end.
    draining: watch::Sender<bool>,
    /// Set when a commit failed because this replica no longer leads
    /// (`StoreError::NotLeader`): the fence did its work before the
    /// leadership watchdog noticed.
    deposed: std::sync::atomic::AtomicBool,
    notifier: Notifier,
    /// Append writes sent to the committer so far: each write's number.
    submitted: std::sync::atomic::AtomicU64,
    /// Append writes durable so far (in the order they were sent), and
    /// whether the committer stopped: what every answer waits for (see
    /// [`Core::wait_durable`]).
    durable: Arc<Durable>,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Append { records, .. } => write!(f, "Append({} records)", records.len()),
            Write::Snapshot { .. } => f.write_str("Snapshot"),
            Write::Close(_) => f.write_str("Close"),
        }
    }
}

impl<S: Store> Core<S> {
    /// Loads the durable state from `store` and starts the committer task.
    /// Warm-up begins now.
    pub async fn start(
        live: Arc<Live>,
        store: S,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StoreError> {
        let config = live.current();
        let metrics = live.metrics().clone();
        let store = Arc::new(SharedStore {
            store,
            closed: watch::channel(()).0,
        });
        let loaded = {
            let store = store.clone();
            crate::core::off_task(store.inline(), move || store.load())
                .await
                .map_err(|e| StoreError::Backend(format!("loading task failed: {e}")))??
        };
        // A step of the wall clock while the coordinator was stopped is
        // found first: the state is restored as of the clock it was
        // recorded in, then moved with the step.
        let mark = clock.mark();
        let now = mark.wall;
        let (step, detail) = start_check(&loaded.state, &mark);
        let restore_at = step.map_or(now, |s| s.inverse().shift(now));
        let mut engine = Engine::restore(config.policy.clone(), loaded.state, restore_at);
        let mut stepped = ClockSteps::default();
        if let Some(detail) = detail {
            if let Some(step) = step {
                stepped.found(step, now, &detail, &metrics);
            }
            engine.clock_checked(step, detail, mark.clone(), now);
        }
        let checked = engine.take_events();
        let (writes, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let (fatal, _) = watch::channel(None);
        let (draining, _) = watch::channel(false);
        let notifier = Notifier::new(&config.notify, metrics.clone());
        let core = Arc::new(Self {
            engine: Mutex::new(engine),
            store: store.clone(),
            writes,
            events,
            metrics,
            denials: Mutex::new(DenialSampler::new(config.audit.denial_sample_interval)),
            refusals: Mutex::new(RefusalSampler::new(config.audit.denial_sample_interval)),
            live,
            started_at: now,
            clock,
            steps: Mutex::new(StepWatch::new(&mark)),
            stepped: Mutex::new(stepped),
            fatal,
            draining,
            deposed: std::sync::atomic::AtomicBool::new(false),
            notifier,
            submitted: std::sync::atomic::AtomicU64::new(0),
            durable: Arc::default(),
        });
        tokio::spawn(committer(core.clone(), rx, loaded.last_id));
        if !checked.is_empty() {
            // Durable before anything is decided on the times it moved,
            // and a store that cannot write stops start-up here.
            let upto = core.queue(checked);
            core.wait_durable(upto)
                .await
                .map_err(|CoreError::Halted(why)| match why {
                    Halt::Store(e) => {
                        Arc::try_unwrap(e).unwrap_or_else(|e| StoreError::Backend(e.to_string()))
                    }
                    other => StoreError::Backend(other.to_string()),
                })?;
        }
        Ok(core)
    }

    /// The wall clock, checked against the boot clock: a step found since
    /// the last reading is recorded (the engine moves every recorded time
    /// with it) before anything is decided at the new time. Called under
    /// the engine's lock.
    fn now_checked(&self, engine: &mut Engine) -> Time {
        let (now, since_boot) = (self.clock.now(), self.clock.since_boot());
        let Some(step) = lock(&self.steps).observe(now, since_boot) else {
            return now;
        };
        let mark = ClockMark {
            wall: now,
            since_boot,
            boot: self.clock.boot_id(),
        };
        let detail = format!(
            "seen live: between two readings the wall clock moved {step} against the boot clock"
        );
        lock(&self.stepped).found(step, now, &detail, &self.metrics);
        engine.clock_checked(Some(step), detail, mark, now);
        now
    }

    /// Wall-clock steps found since start: how many, and the latest.
    pub fn clock_steps(&self) -> (u64, Option<(ClockStep, SystemTime, String)>) {
        let s = lock(&self.stepped);
        (s.count, s.last.clone())
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<CoordinatorConfig> {
        self.live.current()
    }

    /// The configuration in force and what follows it.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The coordinator's clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// When this process started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// When the configuration in force was loaded.
    pub fn config_loaded_at(&self) -> SystemTime {
        self.live.loaded_at()
    }

    /// Whether a write was refused because this replica no longer leads.
    pub fn deposed(&self) -> bool {
        self.deposed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The store, for reads (history).
    pub fn store(&self) -> &Arc<SharedStore<S>> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// History entries from now on, as they become durable.
    pub fn subscribe(&self) -> broadcast::Receiver<Entry> {
        self.events.subscribe()
    }

    /// Why the core refuses every call, from the moment it does (`None`
    /// while it decides).
    pub fn failure(&self) -> watch::Receiver<Option<Halt>> {
        self.fatal.subscribe()
    }

    /// Refuses every call from now on: this replica no longer leads
    /// (`why`).
    pub fn lost_leadership(&self, why: String) {
        self.fatal.send_replace(Some(Halt::LostLeadership(why)));
    }

    /// Tells long-lived streams to end: the server is draining.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// Whether the server is draining, and when it starts.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// A watch on the store that outlives the core: it tells when the last
    /// holder (a handler, a blocking read) has let go and the store has
    /// closed, so that its state directory is free for the next owner.
    pub(crate) fn store_watch(&self) -> StoreWatch {
        StoreWatch(self.store.closed.subscribe())
    }

    /// Runs `f` on the engine; queues the events it produced (in order,
    /// under the lock) and waits until they are durable before returning.
    ///
    /// A call that produced no events of its own still answers from state
    /// that earlier calls changed, which may not be durable yet: a request
    /// replayed while its grant is being written, an outcome reported
    /// twice. It waits until everything queued before it is durable, so
    /// that no answer ever rests on a write that could still fail (I6);
    /// when nothing is in flight, that costs nothing.
    pub async fn apply<T>(&self, f: impl FnOnce(&mut Engine, Time) -> T) -> Result<T, CoreError> {
        self.check_fatal()?;
        let (value, upto) = self.run(f);
        self.wait_durable(upto).await?;
        Ok(value)
    }

    /// Runs `f` on the engine at the checked time and queues the events it
    /// produced, under the lock so that the log's order is the engine's;
    /// returns its value and the number of the last write queued: its own
    /// events if any, and everything queued before them.
    fn run<T>(&self, f: impl FnOnce(&mut Engine, Time) -> T) -> (T, u64) {
        let mut engine = lock(&self.engine);
        let now = self.now_checked(&mut engine);
        let value = f(&mut engine, now);
        let events = engine.take_events();
        if !events.is_empty() {
            self.queue(events);
        }
        let upto = self.submitted.load(std::sync::atomic::Ordering::SeqCst);
        (value, upto)
    }

    /// Waits until the Append writes numbered up to `upto` are durable; the
    /// store's error if the committer failed first.
    async fn wait_durable(&self, upto: u64) -> Result<(), CoreError> {
        let (written, _) = self.durable.wait_for(upto).await;
        if written >= upto {
            return Ok(());
        }
        // A failed commit sets `fatal` (with why) before the committer stops.
        self.check_fatal()?;
        Err(CoreError::Halted(Halt::CommitterFailed))
    }

    /// Reads the engine (and lets time pass in it): events that time
    /// passing produced are queued but not waited for.
    pub fn read<T>(&self, f: impl FnOnce(&mut Engine, Time) -> T) -> Result<T, CoreError> {
        self.check_fatal()?;
        Ok(self.run(f).0)
    }

    fn check_fatal(&self) -> Result<(), CoreError> {
        match &*self.fatal.borrow() {
            Some(why) => Err(CoreError::Halted(why.clone())),
            None => Ok(()),
        }
    }

    /// Queues `events` for the committer; returns the write's number.
    fn queue(&self, events: Vec<Event>) -> u64 {
        for e in &events {
            if matches!(
                e,
                Event::PermitEnded {
                    state: medic_policy::PermitState::Expired,
                    ..
                }
            ) {
                self.metrics.permits_expired.inc();
            }
        }
        let records = events
            .into_iter()
            .map(|e| (e.at(), Record::Policy(e)))
            .collect();
        self.submit(records)
    }

    /// Sends `records` to the committer; returns the write's number, for
    /// [`Core::wait_durable`]. If the committer is gone, the write is lost
    /// and waiting for it reports that.
    fn submit(&self, records: Vec<(Time, Record)>) -> u64 {
        let n = self
            .submitted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let _ = self.writes.send(Write::Append { records });
        n
    }

    /// Counts a denial and, if it is the first for this host and reason in
    /// the sampling interval, records it in the audit history.
    pub fn sample_denial(&self, host: &HostId, action: Action, denial: &Denial) {
        let now = self.clock.now();
        let sample = lock(&self.denials).observe(host, denial, now);
        if let Some(count) = sample {
            self.metrics.denials_sampled.inc();
            self.submit(vec![(
                now,
                Record::Denied {
                    host: host.clone(),
                    action,
                    denial: denial.clone(),
                    count,
                },
            )]);
        }
    }

    /// Samples a refusal: returns `true` for the first of this identity and
    /// call in the sampling interval (the one worth logging), and records
    /// that one in the audit history when it is a PERMISSION_DENIED.
    pub fn sample_refusal(
        &self,
        refusal: &crate::auth::Refusal,
        call: &str,
        host: Option<&HostId>,
        peer: String,
    ) -> bool {
        let now = self.clock.now();
        let key = format!("{} {call}", refusal.identity);
        let Some(count) = lock(&self.refusals).observe(key, now) else {
            return false;
        };
        if refusal.audited() {
            self.submit(vec![(
                now,
                Record::AccessDenied {
                    identity: refusal.identity.clone(),
                    call: call.to_owned(),
                    host: host.cloned(),
                    peer,
                    reason: refusal.message.clone(),
                    count,
                },
            )]);
        }
        true
    }

    /// Records in the audit history the configuration a newly elected
    /// replica decides with (I9): where it came from, and the errors of a
    /// fleet config it could not use (then it runs its last valid one).
    pub async fn audit_election_config(
        &self,
        errors: Vec<medic_policy::ConfigError>,
    ) -> Result<(), CoreError> {
        let c = self.config();
        let reason = match (errors.is_empty(), c.fleet_revision) {
            (true, Some(r)) => format!("elected: fleet config of etcd revision {r}"),
            (true, None) => "elected: no fleet config pushed, the embedded defaults".to_owned(),
            (false, _) => "elected: the fleet config in etcd was rejected; deciding with the \
                           last valid configuration this replica read"
                .to_owned(),
        };
        self.audit_reload("election", &reason, errors).await
    }

    /// Records a reload attempt in the audit history (durably).
    async fn audit_reload(
        &self,
        actor: &str,
        reason: &str,
        errors: Vec<medic_policy::ConfigError>,
    ) -> Result<(), CoreError> {
        let n = self.submit(vec![(
            self.clock.now(),
            Record::ConfigReloaded {
                actor: actor.to_owned(),
                reason: reason.to_owned(),
                errors,
            },
        )]);
        self.wait_durable(n).await
    }

    /// Re-reads the config and applies it all-or-nothing (I10): to the
    /// engine, the samplers and the notifier here, and to everything else
    /// through [`Live::install`]. SIGHUP and `Admin.ReloadConfig` both come
    /// here. Returns every error; the running config stays in force when
    /// there is any.
    pub async fn reload(
        &self,
        actor: &str,
        reason: &str,
    ) -> Result<Result<Arc<CoordinatorConfig>, Vec<medic_policy::ConfigError>>, CoreError> {
        let _one = self.live.reloading().await;
        match self.live.read().await {
            Ok(new) => {
                let new = Arc::new(new);
                self.apply(|engine, now| engine.set_config(new.policy.clone(), now))
                    .await?;
                lock(&self.denials).interval = new.audit.denial_sample_interval;
                lock(&self.refusals).interval = new.audit.denial_sample_interval;
                self.notifier.update(&new.notify);
                self.live.install(new.clone(), self.clock.now());
                self.live.count_reload(true);
                tracing::info!(%actor, %reason, summary = %new.summary(), "configuration reloaded");
                self.audit_reload(actor, reason, Vec::new()).await?;
                Ok(Ok(new))
            }
            Err(errors) => {
                self.live.count_reload(false);
                for e in &errors {
                    tracing::error!(%actor, error = %e, "configuration reload rejected; the running configuration stays in force");
                }
                self.audit_reload(actor, reason, errors.clone()).await?;
                Ok(Err(errors))
            }
        }
    }

    /// Periodic work: expiries, breakers, pauses (through the engine's
    /// tick), metrics, denial sampler upkeep.
    pub async fn tick(&self) -> Result<(), CoreError> {
        let status = self
            .apply(|engine, now| {
                engine.tick(now);
                engine.status(now)
            })
            .await?;
        self.metrics.set_status(&status);
        lock(&self.denials).prune(self.clock.now());
        lock(&self.refusals).prune(self.clock.now());
        // An idle coordinator must notice too that its state file was
        // deleted or replaced: nothing it acknowledged after would survive.
        let store = self.store.clone();
        let verified = crate::core::off_task(store.inline(), move || store.verify())
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(format!("store check failed: {e}"))));
        if let Err(e) = verified {
            tracing::error!(error = %e, "the state store cannot keep writes; the coordinator stops");
            let why = Halt::Store(Arc::new(e));
            self.fatal.send_replace(Some(why.clone()));
            return Err(CoreError::Halted(why));
        }
        Ok(())
    }

    /// Queues a snapshot of the durable state, taken under the lock so it
    /// matches exactly the events queued before it.
    pub fn snapshot(&self) {
        let engine = lock(&self.engine);
        let state = Box::new(engine.durable().clone());
        let _ = self.writes.send(Write::Snapshot { state });
    }

    /// Makes everything queued durable and stops the committer; later calls
    /// fail. The store closes when the last reference to the core goes.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        self.fatal.send_replace(Some(Halt::ShuttingDown));
        if self.writes.send(Write::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Removes history beyond the retention (on a blocking thread).
    pub async fn compact(&self) -> Result<u64, StoreError> {
        let audit = self.config().audit.clone();
        let store = self.store.clone();
        let now = self.clock.now();
        let removed = crate::core::off_task(store.inline(), move || {
            store.compact(
                Retention {
                    max_age: audit.retention,
                    max_entries: audit.max_entries,
                },
                now,
            )
        })
        .await
        .map_err(|e| StoreError::Backend(format!("compaction task failed: {e}")))??;
        self.metrics.audit_compacted.inc_by(removed);
        Ok(removed)
    }
}

/// Steps found since start.
#[derive(Debug, Default)]
struct ClockSteps {
    count: u64,
    last: Option<(ClockStep, SystemTime, String)>,
}

impl ClockSteps {
    fn found(&mut self, step: ClockStep, at: SystemTime, detail: &str, metrics: &Metrics) {
        tracing::warn!(
            step = %step,
            detail,
            "the wall clock was stepped {step}; every recorded time (permits, pauses, \
             quarantines, breakers, budgets) moves with it, so no expiry, window or budget \
             takes the jump for time passing"
        );
        metrics
            .clock_steps
            .get_or_create(&crate::metrics::DirectionLabel {
                direction: if step.forward { "ahead" } else { "back" }.to_owned(),
            })
            .inc();
        self.count += 1;
        self.last = Some((step, at, detail.to_owned()));
    }
}

/// What start-up makes of the wall clock against the state's last mark:
/// the step found (if any), and the detail of the `ClockChecked` event to
/// record (`None`: nothing to record, the mark in the state stays good).
fn start_check(state: &DurableState, now: &ClockMark) -> (Option<ClockStep>, Option<String>) {
    let at = medic_policy::rfc3339;
    match &state.clock {
        Some(prev) if prev.boot == now.boot => match prev.step_to(now) {
            Some(step) if step.by >= STEP_THRESHOLD => (
                Some(step),
                Some(format!(
                    "at start-up: since the mark of {} (same boot), the wall clock moved {step} \
                     against the boot clock",
                    at(prev.wall)
                )),
            ),
            _ => (None, None),
        },
        _ => match state.latest_recorded() {
            // Another boot: the time spent stopped is unknown, but a wall
            // clock behind the latest record was certainly stepped back.
            Some(latest) if now.wall + STEP_THRESHOLD < latest => {
                let step = ClockStep::between(latest, now.wall);
                (
                    Some(step),
                    Some(format!(
                        "at start-up: the wall clock reads {}, before the latest record ({}); \
                         the time spent stopped counts as none",
                        at(now.wall),
                        at(latest)
                    )),
                )
            }
            _ => (
                None,
                Some("at start-up: first mark of this boot; no step can be measured".to_owned()),
            ),
        },
    }
}

/// Locks a mutex, recovering from poisoning: a panicking handler must not
/// take the whole coordinator down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Append writes durable so far, and whether the committer stopped, with
/// a wake-up for the replies that wait on them. A `Notify` wakes its
/// waiters in the order they began to wait (a `watch` channel wakes them in
/// a random order), so that replies go out in the same order run after run
/// (the simulator's virtual time repeats a run exactly).
#[derive(Debug, Default)]
struct Durable {
    state: Mutex<(u64, bool)>,
    changed: tokio::sync::Notify,
}

impl Durable {
    fn update(&self, f: impl FnOnce(&mut (u64, bool))) {
        f(&mut lock(&self.state));
        self.changed.notify_waiters();
    }

    /// Waits until writes up to `upto` are durable or the committer
    /// stopped; returns the state then.
    async fn wait_for(&self, upto: u64) -> (u64, bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read: no change is missed.
            notified.as_mut().enable();
            let d = *lock(&self.state);
            if d.1 || d.0 >= upto {
                return d;
            }
            notified.await;
        }
    }
}

/// Appends queued records in batches, releases the waiting replies, and
/// feeds watchers. Stops the coordinator on the first failure.
async fn committer<S: Store>(
    core: Arc<Core<S>>,
    mut rx: mpsc::UnboundedReceiver<Write>,
    last_id: u64,
) {
    const MAX_BATCH: usize = 1024;
    /// However the committer ends, nothing more becomes durable: callers
    /// waiting for earlier writes are told. One that ends other than by
    /// Close (a panic) also stops the coordinator, which could decide
    /// nothing durable any more.
    struct Stopped(Arc<Durable>, watch::Sender<Option<Halt>>);
    impl Drop for Stopped {
        fn drop(&mut self) {
            self.0.update(|d| d.1 = true);
            if std::thread::panicking() {
                self.1.send_if_modified(|f| {
                    f.is_none()
                        .then(|| *f = Some(Halt::CommitterFailed))
                        .is_some()
                });
            }
        }
    }
    let _stopped = Stopped(core.durable.clone(), core.fatal.clone());
    let mut c = Committer {
        core,
        pending: Vec::new(),
        last_id,
        since_snapshot: 0,
        crash: CrashPoint::from_env(),
    };
    while let Some(first) = rx.recv().await {
        let mut writes = vec![first];
        while writes.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => writes.push(j),
                Err(_) => break,
            }
        }
        // Appends up to the first snapshot write go in one batch; a snapshot
        // is written after the batch before it.
        for write in writes {
            match write {
                Write::Close(done) => {
                    let _ = c.flush().await;
                    let _ = done.send(());
                    return;
                }
                Write::Append { records } => c.pending.push(records),
                Write::Snapshot { state } => {
                    if !c.flush().await {
                        return;
                    }
                    c.snapshot(state).await;
                }
            }
        }
        if !c.flush().await {
            return;
        }
        if c.since_snapshot >= c.core.config().audit.snapshot_every {
            c.since_snapshot = 0;
            c.core.snapshot();
        }
    }
}

/// The committer's state between batches.
struct Committer<S: Store> {
    core: Arc<Core<S>>,
    /// The records of Append writes not yet appended, one entry per write.
    pending: Vec<Vec<(Time, Record)>>,
    /// The last id appended.
    last_id: u64,
    /// Records appended since the last snapshot.
    since_snapshot: u64,
    crash: CrashPoint,
}

impl<S: Store> Committer<S> {
    /// Appends what is pending as one batch. Returns false if the store
    /// failed (the coordinator is then stopping).
    async fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.pending);
        let writes = batch.len() as u64;
        let records: Vec<(Time, Record)> = batch.into_iter().flatten().collect();
        let n = records.len();
        let core = &self.core;
        let store = core.store.clone();
        let started = Instant::now();
        let result = crate::core::off_task(store.inline(), move || store.append(records))
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(format!("commit task failed: {e}"))));
        core.metrics
            .store_commit_duration
            .observe(started.elapsed().as_secs_f64());
        core.metrics.store_commit_records.observe(n as f64);
        match result {
            Ok(entries) => {
                self.crash.after_commit();
                if let Some(last) = entries.last() {
                    self.last_id = last.id;
                }
                self.since_snapshot += n as u64;
                // Releases the replies that waited for these writes.
                core.durable.update(|d| d.0 += writes);
                for entry in entries {
                    core.notifier.offer(&entry);
                    let _ = core.events.send(entry);
                }
                true
            }
            Err(e) => {
                if matches!(e, StoreError::NotLeader { .. }) {
                    core.deposed
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
                tracing::error!(error = %e, "store commit failed; the coordinator stops (the durable state is the truth at the next start)");
                core.fatal.send_replace(Some(Halt::Store(Arc::new(e))));
                core.durable.update(|d| d.1 = true);
                false
            }
        }
    }

    /// Writes a snapshot of `state`, which matches the log up to the last
    /// id appended. A failed snapshot costs a longer replay at start-up.
    async fn snapshot(&mut self, state: Box<DurableState>) {
        let store = self.core.store.clone();
        let upto = self.last_id;
        match crate::core::off_task(store.inline(), move || store.snapshot(&state, upto)).await {
            Ok(Ok(())) => self.since_snapshot = 0,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "snapshot failed; start-up will replay more of the log")
            }
            Err(e) => tracing::warn!(error = %e, "snapshot task failed"),
        }
    }
}

/// Fault injection for crash tests: with `MEDIC_CRASH_AFTER_COMMITS=N` in
/// the environment, the process aborts right after its N-th durable commit
/// and before any reply of that batch is released, the worst moment for
/// I6 and I7. Unset (always, in production), it does nothing.
#[derive(Debug)]
struct CrashPoint(Option<u64>);

impl CrashPoint {
    fn from_env() -> Self {
        let n = std::env::var("MEDIC_CRASH_AFTER_COMMITS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = n {
            tracing::warn!(
                commits = n,
                "fault injection armed: aborting after commit {n}"
            );
        }
        Self(n)
    }

    fn after_commit(&mut self) {
        if let Some(n) = &mut self.0 {
            *n = n.saturating_sub(1);
            if *n == 0 {
                std::process::abort();
            }
        }
    }
}
