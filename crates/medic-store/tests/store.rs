//! `RedbStore` through the `Store` trait: recovery (I6), locking, refusal of
//! damaged or newer files, history and compaction.
//!
//! A few tests open `medic.redb` with redb directly to damage it; they name
//! the tables the way the store lays them out (`meta`, `log`), which also
//! pins that layout: changing it needs a schema version bump.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use medic_policy::{
    Action, BreakerCause, BreakerScope, BreakerTrip, ConfigError, Decision, Denial, DenyReason,
    DurableState, Engine, Event, Heartbeat, HostId, Labels, Outcome, Pause, PermitRef,
    PermitRequest, PolicyConfig, Problem, Quarantine, QuarantineCause, RequestId, ResumeTarget,
    Scope, Time,
};
use medic_store::{
    Entry, HistoryQuery, Record, RecordKind, RedbStore, Retention, SCHEMA_VERSION, Store,
    StoreError,
};
use redb::ReadableDatabase;

// === Fixture ===

/// 2023-11-14T22:13:20Z.
fn t0() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn host(name: &str) -> HostId {
    HostId::new(name).unwrap()
}

fn open(dir: &Path) -> RedbStore {
    RedbStore::open(dir).unwrap_or_else(|e| panic!("open failed: {e}"))
}

fn new_store() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    (dir, store)
}

fn pause_event(id: u64, action: Option<Action>, at: Time) -> Event {
    Event::Paused(Pause {
        id,
        scope: Scope {
            selector: Labels::new(),
            action,
        },
        actor: "alice".into(),
        reason: "db maintenance".into(),
        since: at,
        until: None,
    })
}

fn quarantine_event(name: &str, at: Time) -> Event {
    Event::HostQuarantined(Quarantine {
        host: host(name),
        cause: QuarantineCause::Manual,
        actor: "alice".into(),
        reason: "flapping disk".into(),
        since: at,
    })
}

fn denied(name: &str, action: Action) -> Record {
    Record::Denied {
        host: host(name),
        action,
        denial: Denial {
            reason: DenyReason::RateLimited,
            retry_after: Some(secs(30)),
            message: "rate budget spent".into(),
        },
        count: 7,
    }
}

fn config_reloaded() -> Record {
    Record::ConfigReloaded {
        actor: "signal:SIGHUP".into(),
        reason: "config file changed".into(),
        errors: vec![ConfigError {
            path: "limits.reboot_host.max_in_flight".into(),
            message: "must be at least 0, got -1".into(),
        }],
    }
}

/// Appends one record per second from `start`, returning the entries.
fn append_each(store: &RedbStore, start: Time, records: Vec<Record>) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        out.extend(store.append(vec![(start + secs(i as u64), r)]).unwrap());
    }
    out
}

fn ids(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.id).collect()
}

fn assert_corrupt(result: Result<impl std::fmt::Debug, StoreError>, mentions: &str) {
    match result {
        Err(e @ StoreError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(mentions),
                "corrupt error should mention {mentions:?}: {text}"
            );
            assert!(text.contains("refusing to start"), "{text}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

// === A coordinator's worth of events ===

/// An engine with a small labelled fleet whose agents heartbeat as time
/// passes. Every batch of events the engine emits is appended to the store
/// as the coordinator would, and folded into `folded` by hand.
struct Coordinator<'s> {
    engine: Engine,
    store: &'s RedbStore,
    now: Time,
    hosts: Vec<(HostId, Labels, bool, bool)>,
    folded: DurableState,
    events: usize,
    next_request: u32,
}

impl<'s> Coordinator<'s> {
    fn new(store: &'s RedbStore) -> Self {
        let config = PolicyConfig::from_toml(
            r#"
            [breaker]
            unhealthy_percent = 100
            failure_percent = 100
            [breaker.domains.rack]
            unhealthy_percent = 50
            min_hosts = 3
            [limits.restart_job]
            max_in_flight = 10
            cooldown = "1m"
            [limits.reboot_host]
            max_in_flight = 3
            "#,
        )
        .unwrap_or_else(|e| panic!("invalid test config:\n{e}"));
        let mut c = Self {
            engine: Engine::new(config, t0()),
            store,
            now: t0(),
            hosts: Vec::new(),
            folded: DurableState::default(),
            events: 0,
            next_request: 0,
        };
        for (name, rack) in [
            ("a1", "r1"),
            ("a2", "r1"),
            ("a3", "r1"),
            ("a4", "r1"),
            ("b1", "r2"),
            ("b2", "r2"),
            ("b3", "r2"),
            ("c1", "r3"),
        ] {
            let labels = Labels::from([("rack".to_owned(), rack.to_owned())]);
            c.hosts.push((host(name), labels, false, false));
        }
        c.beat_all();
        let warmup = c.engine.config().fleet.warmup;
        c.advance(warmup);
        c
    }

    /// Appends what the engine emitted since the last flush, as one batch.
    fn flush(&mut self) {
        let events = self.engine.take_events();
        if events.is_empty() {
            return;
        }
        for e in &events {
            self.folded.apply(e);
        }
        self.events += events.len();
        let batch = events
            .into_iter()
            .map(|e| (self.now, Record::Policy(e)))
            .collect();
        self.store.append(batch).unwrap();
    }

    fn beat_all(&mut self) {
        for i in 0..self.hosts.len() {
            let (id, labels, problem, silent) = self.hosts[i].clone();
            if silent {
                continue;
            }
            let problems = if problem {
                vec![Problem {
                    job: "ingest".into(),
                    detector: "heartbeat_file".into(),
                    since: self.now,
                    detail: "heartbeat file 12m old".into(),
                }]
            } else {
                Vec::new()
            };
            self.engine.heartbeat(
                Heartbeat {
                    state_error: None,
                    host: id,
                    labels,
                    agent_version: "0.1.0".into(),
                    problems,
                    held_permit: None,
                    needs_human: None,
                },
                self.now,
            );
        }
        self.flush();
    }

    /// Lets `d` pass: agents heartbeat every interval and the coordinator
    /// ticks (expiries, breakers).
    fn advance(&mut self, d: Duration) {
        let step = self.engine.config().fleet.heartbeat_interval;
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + step).min(end);
            self.beat_all();
            self.engine.tick(self.now);
            self.flush();
        }
    }

    fn set(&mut self, name: &str, problem: bool, silent: bool) {
        let h = self
            .hosts
            .iter_mut()
            .find(|h| h.0.as_str() == name)
            .unwrap();
        h.2 = problem;
        h.3 = silent;
        self.beat_all();
    }

    fn request(&mut self, name: &str, action: Action) -> Decision {
        self.next_request += 1;
        let d = self
            .engine
            .request_permit(
                PermitRequest {
                    dry_run: false,
                    request_id: RequestId::new(format!("req-{}", self.next_request)).unwrap(),
                    host: host(name),
                    action,
                    job: "ingest".into(),
                    reason: "heartbeat file 12m old".into(),
                },
                self.now,
            )
            .unwrap();
        self.flush();
        if let Decision::Denied(denial) = &d {
            let record = Record::Denied {
                host: host(name),
                action,
                denial: denial.clone(),
                count: 1,
            };
            self.store.append(vec![(self.now, record)]).unwrap();
        }
        d
    }

    fn grant(&mut self, name: &str, action: Action) -> PermitRef {
        match self.request(name, action) {
            Decision::Granted { permit, .. } => PermitRef {
                id: permit.id,
                token: permit.token,
            },
            Decision::Denied(d) => panic!("{action} for {name} denied: {}", d.message),
            Decision::Waiting(w) => panic!("{action} for {name} waits: {}", w.message),
        }
    }

    fn finish(&mut self, name: &str, permit: &PermitRef, outcome: Outcome) {
        self.engine
            .report_outcome(&host(name), permit, outcome, "done", self.now)
            .unwrap();
        self.flush();
    }

    /// Heartbeats, grants, renewals, outcomes, an expiry that quarantines,
    /// a release, a pause and its end, a domain breaker opening and a
    /// reset, a revocation, a config reload.
    fn run_a_day(&mut self) {
        let p = self.grant("a1", Action::RestartJob);
        self.advance(secs(20));
        self.engine.renew(&host("a1"), &p, self.now).unwrap();
        self.flush();
        self.finish("a1", &p, Outcome::Succeeded);

        let p = self.grant("b1", Action::RestartJob);
        self.advance(secs(30));
        self.finish("b1", &p, Outcome::Failed);

        // b2 reboots and never comes back: its permit expires and the host
        // is quarantined, until an operator releases it.
        self.grant("b2", Action::RebootHost);
        self.set("b2", false, true);
        self.advance(Duration::from_secs(3600));
        assert!(self.folded.quarantines.contains_key(&host("b2")));
        self.set("b2", false, false);
        self.engine
            .unquarantine(&host("b2"), "alice", "disk replaced", self.now)
            .unwrap();
        self.flush();

        let pause = self.engine.pause(
            Scope {
                selector: Labels::new(),
                action: Some(Action::RebootHost),
            },
            "alice",
            "kernel rollout",
            None,
            self.now,
        );
        self.flush();
        assert!(matches!(
            self.request("c1", Action::RebootHost),
            Decision::Denied(_)
        ));
        self.engine
            .resume(
                ResumeTarget::Id(pause.id),
                "alice",
                "rollout done",
                self.now,
            )
            .unwrap();
        self.flush();

        // Rack r1 mostly unhealthy: its breaker opens, then is reset.
        for h in ["a1", "a2", "a3"] {
            self.set(h, true, false);
        }
        self.advance(secs(10));
        assert!(matches!(
            self.request("a4", Action::RestartJob),
            Decision::Denied(_)
        ));
        for h in ["a1", "a2", "a3"] {
            self.set(h, false, false);
        }
        self.engine
            .reset_breaker(None, "alice", "db back", self.now)
            .unwrap();
        self.flush();

        let p = self.grant("b3", Action::RestartJob);
        self.engine
            .revoke(&p.id, "alice", "wrong host", self.now)
            .unwrap();
        self.flush();
        self.engine
            .quarantine(&host("c1"), "alice", "bad RAM", self.now)
            .unwrap();
        self.flush();
        self.store
            .append(vec![(self.now, config_reloaded())])
            .unwrap();

        // Routine work: restarts across the fleet, past their cooldowns.
        for round in 0..3 {
            for h in ["a2", "a3", "a4", "b1"] {
                if let Decision::Granted { permit, .. } = self.request(h, Action::RestartJob) {
                    let p = PermitRef {
                        id: permit.id,
                        token: permit.token,
                    };
                    self.advance(secs(15));
                    let outcome = if round == 1 {
                        Outcome::Failed
                    } else {
                        Outcome::Succeeded
                    };
                    self.finish(h, &p, outcome);
                }
            }
            self.advance(secs(120));
        }
    }
}

// === Recovery ===

#[test]
fn append_then_load_replays_events_into_the_same_state() {
    let (_dir, store) = new_store();
    let mut c = Coordinator::new(&store);
    c.run_a_day();
    let loaded = store.load().unwrap();

    assert!(c.events > 30, "the scenario should emit many events");
    let kinds: std::collections::BTreeSet<RecordKind> = store
        .history(&HistoryQuery {
            limit: 100_000,
            ..Default::default()
        })
        .unwrap()
        .entries
        .iter()
        .map(|e| e.record.kind())
        .collect();
    for k in [
        RecordKind::Grant,
        RecordKind::Renew,
        RecordKind::Outcome,
        RecordKind::Admin,
        RecordKind::Quarantine,
        RecordKind::Pause,
        RecordKind::Breaker,
        RecordKind::Deny,
        RecordKind::Config,
    ] {
        assert!(kinds.contains(&k), "the scenario should log {k:?}");
    }
    assert_eq!(loaded.state, c.folded);
    assert_eq!(loaded.state.seq, c.events as u64);
    assert!(loaded.last_id > c.events as u64, "denials and reloads too");
}

#[test]
fn load_after_snapshot_replays_only_later_events() {
    let (_dir, store) = new_store();
    let mut state = DurableState::default();
    let before = vec![pause_event(1, None, t0()), quarantine_event("h1", t0())];
    for e in &before {
        state.apply(e);
    }
    let mut records: Vec<Record> = before.into_iter().map(Record::Policy).collect();
    records.push(denied("h2", Action::RestartJob));
    let entries = append_each(&store, t0(), records);
    let upto = entries.last().unwrap().id;

    // The snapshot holds an open domain breaker (a map keyed by an enum with
    // data, which JSON cannot key by) and a marker that no event made: the
    // load must start from it, not from the log's beginning.
    state.breakers.insert(
        BreakerScope::Domain {
            label: "rack".into(),
            value: "r1".into(),
        },
        BreakerTrip {
            scope: BreakerScope::Domain {
                label: "rack".into(),
                value: "r1".into(),
            },
            cause: BreakerCause::UnhealthyFraction,
            since: t0(),
            detail: "3 of 4 live hosts in rack=r1 unhealthy".into(),
            half_open: None,
        },
    );
    state.last_token.0 = 41;
    store.snapshot(&state, upto).unwrap();

    let after = vec![
        quarantine_event("h3", t0() + secs(10)),
        pause_event(2, Some(Action::RebootHost), t0() + secs(11)),
    ];
    for e in &after {
        state.apply(e);
    }
    append_each(
        &store,
        t0() + secs(10),
        after.into_iter().map(Record::Policy).collect(),
    );

    let loaded = store.load().unwrap();
    assert_eq!(loaded.state, state);
    assert_eq!(
        loaded.state.seq, 4,
        "two events before, two after: none twice"
    );
    assert_eq!(loaded.last_id, upto + 2);
}

#[test]
fn reopen_keeps_everything_and_ids_keep_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let (first, state) = {
        let store = open(dir.path());
        let first = append_each(
            &store,
            t0(),
            vec![
                Record::Policy(pause_event(1, None, t0())),
                denied("h1", Action::RebootHost),
                config_reloaded(),
            ],
        );
        assert_eq!(ids(&first), [1, 2, 3]);
        (first, store.load().unwrap().state)
    };

    let store = open(dir.path());
    let loaded = store.load().unwrap();
    assert_eq!(loaded.state, state);
    assert_eq!(loaded.last_id, 3);
    let more = store
        .append(vec![
            (t0() + secs(5), Record::Policy(quarantine_event("h2", t0()))),
            (t0() + secs(5), denied("h2", Action::RestartJob)),
        ])
        .unwrap();
    assert_eq!(ids(&more), [4, 5]);

    let all = store
        .history(&HistoryQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.entries[..3], first[..]);
    assert_eq!(all.entries[3..], more[..]);
    assert_eq!(all.next_cursor, None);
}

#[test]
fn an_empty_batch_takes_no_id() {
    let (_dir, store) = new_store();
    assert!(store.append(Vec::new()).unwrap().is_empty());
    let e = store.append(vec![(t0(), config_reloaded())]).unwrap();
    assert_eq!(ids(&e), [1]);
}

/// Also the measurement of what a durable grant costs: one entry, one
/// fsynced transaction. Run with `--nocapture` to see it.
#[test]
fn one_entry_appends_are_each_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut took = Vec::new();
    {
        let store = open(dir.path());
        for i in 0..50 {
            let record = Record::Policy(quarantine_event(&format!("h{i}"), t0()));
            let start = Instant::now();
            store.append(vec![(t0(), record)]).unwrap();
            took.push(start.elapsed());
        }
    }
    took.sort();
    eprintln!(
        "append of one entry (fsync): median {:?}, p90 {:?}, max {:?} over {} appends",
        took[took.len() / 2],
        took[took.len() * 9 / 10],
        took[took.len() - 1],
        took.len()
    );
    let store = open(dir.path());
    let batch = (0..100)
        .map(|i| {
            (
                t0(),
                Record::Policy(quarantine_event(&format!("g{i}"), t0())),
            )
        })
        .collect();
    let start = Instant::now();
    store.append(batch).unwrap();
    eprintln!(
        "append of a batch of 100 entries (one fsync): {:?}",
        start.elapsed()
    );
    let loaded = store.load().unwrap();
    assert_eq!(loaded.last_id, 150);
    assert_eq!(loaded.state.quarantines.len(), 150);
}

// === Refusing to start ===

#[test]
fn second_open_of_the_same_directory_names_the_holder_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    match RedbStore::open(dir.path()) {
        Err(e @ StoreError::Locked { .. }) => {
            let StoreError::Locked { dir: d, holder } = &e else {
                unreachable!()
            };
            assert_eq!(d, dir.path());
            assert_eq!(*holder, std::process::id().to_string());
            assert!(
                e.to_string()
                    .contains(&format!("pid {}", std::process::id()))
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // The failed open changed nothing: the holder's pid is still there.
    let pid = std::fs::read_to_string(dir.path().join("LOCK")).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());

    drop(first);
    open(dir.path());
}

#[test]
fn state_dir_is_created_for_its_owner_only() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("var/lib/medic");
    open(&dir);
    assert!(dir.join("medic.redb").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[test]
fn newer_schema_stops_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let path = dir.path().join("medic.redb");
    let meta = redb::TableDefinition::<&str, u64>::new("meta");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(meta)
            .unwrap()
            .insert("schema_version", u64::from(SCHEMA_VERSION) + 1)
            .unwrap();
        txn.commit().unwrap();
    }

    match RedbStore::open(dir.path()) {
        Err(e @ StoreError::NewerSchema { .. }) => {
            let StoreError::NewerSchema {
                found, supported, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    // Left as it was found.
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn.open_table(meta).unwrap().get("schema_version").unwrap();
    assert_eq!(version.unwrap().value(), u64::from(SCHEMA_VERSION) + 1);
}

#[test]
fn corrupt_file_stops_open_instead_of_resetting() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append_each(&store, t0(), vec![config_reloaded(), config_reloaded()]);
    }
    let path = dir.path().join("medic.redb");
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();

    assert_corrupt(RedbStore::open(dir.path()), "medic.redb");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "file left untouched"
    );
}

/// redb trusts a cleanly closed file; damage inside its pages (a bad disk,
/// a stray write, a broken restore) must still stop start-up, not load as
/// different state.
#[test]
fn damaged_pages_stop_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for _ in 0..10 {
            store
                .append((0..50).map(|_| (t0(), config_reloaded())).collect())
                .unwrap();
        }
    }
    let path = dir.path().join("medic.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    // One byte in every page but the first (the file header).
    for page in 1..bytes.len() / 4096 {
        bytes[page * 4096 + 1000] ^= 0x55;
    }
    std::fs::write(&path, &bytes).unwrap();

    assert_corrupt(RedbStore::open(dir.path()), "medic.redb");
}

#[test]
fn redb_file_without_medic_meta_stops_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("log"))
            .unwrap()
            .insert(1, b"{}".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    assert_corrupt(RedbStore::open(dir.path()), "no `meta` table");
}

#[test]
fn undecodable_record_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append_each(
            &store,
            t0(),
            vec![
                Record::Policy(pause_event(1, None, t0())),
                config_reloaded(),
                config_reloaded(),
            ],
        );
    }
    {
        let db = redb::Database::create(dir.path().join("medic.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("log"))
            .unwrap()
            .insert(2, b"{\"id\":2,\"at\":".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    assert_corrupt(store.load(), "log entry 2 cannot be decoded");
    assert_corrupt(
        store.history(&HistoryQuery {
            limit: 10,
            ..Default::default()
        }),
        "log entry 2",
    );
}

#[test]
fn missing_entry_after_the_snapshot_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append_each(
            &store,
            t0(),
            (1..=3)
                .map(|i| Record::Policy(pause_event(i, None, t0())))
                .collect(),
        );
    }
    {
        let db = redb::Database::create(dir.path().join("medic.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("log"))
            .unwrap()
            .remove(2)
            .unwrap();
        txn.commit().unwrap();
    }
    assert_corrupt(open(dir.path()).load(), "log entry 2 is missing");
}

#[test]
fn snapshot_that_would_lose_events_is_refused() {
    let (_dir, store) = new_store();
    append_each(&store, t0(), vec![config_reloaded(), config_reloaded()]);
    let state = DurableState::default();
    assert!(matches!(
        store.snapshot(&state, 3),
        Err(StoreError::SnapshotRejected { upto: 3, .. })
    ));
    store.snapshot(&state, 2).unwrap();
    assert!(matches!(
        store.snapshot(&state, 1),
        Err(StoreError::SnapshotRejected { upto: 1, .. })
    ));
    store.snapshot(&state, 2).unwrap();
}

// === History ===

#[test]
fn history_filters_by_kind_host_action_and_time() {
    let (_dir, store) = new_store();
    let entries = append_each(
        &store,
        t0(),
        vec![
            Record::Policy(pause_event(1, Some(Action::RebootHost), t0())), // 1 @0s
            denied("h1", Action::RestartJob),                               // 2 @1s
            Record::Policy(quarantine_event("h1", t0())),                   // 3 @2s
            denied("h2", Action::RebootHost),                               // 4 @3s
            config_reloaded(),                                              // 5 @4s
            denied("h1", Action::RebootHost),                               // 6 @5s
        ],
    );
    let query = |q: HistoryQuery| -> Vec<u64> {
        let page = store.history(&HistoryQuery { limit: 100, ..q }).unwrap();
        assert_eq!(page.next_cursor, None);
        ids(&page.entries)
    };

    assert_eq!(query(HistoryQuery::default()), ids(&entries));
    assert_eq!(
        query(HistoryQuery {
            kinds: vec![RecordKind::Deny],
            ..Default::default()
        }),
        [2, 4, 6]
    );
    assert_eq!(
        query(HistoryQuery {
            kinds: vec![RecordKind::Config, RecordKind::Pause],
            ..Default::default()
        }),
        [1, 5]
    );
    assert_eq!(
        query(HistoryQuery {
            host: Some(host("h1")),
            ..Default::default()
        }),
        [2, 3, 6]
    );
    assert_eq!(
        query(HistoryQuery {
            action: Some(Action::RebootHost),
            ..Default::default()
        }),
        [1, 4, 6]
    );
    assert_eq!(
        query(HistoryQuery {
            since: Some(t0() + secs(2)),
            until: Some(t0() + secs(5)),
            ..Default::default()
        }),
        [3, 4, 5],
        "since is inclusive, until exclusive"
    );
    assert_eq!(
        query(HistoryQuery {
            host: Some(host("h1")),
            action: Some(Action::RebootHost),
            kinds: vec![RecordKind::Deny],
            since: Some(t0() + secs(1)),
            ..Default::default()
        }),
        [6]
    );
    assert_eq!(
        query(HistoryQuery {
            host: Some(host("h9")),
            ..Default::default()
        }),
        [] as [u64; 0]
    );
}

#[test]
fn history_pages_forward_and_newest_first() {
    let (_dir, store) = new_store();
    let records = (0..7)
        .map(|i| {
            if i % 2 == 0 {
                denied("h1", Action::RestartJob)
            } else {
                config_reloaded()
            }
        })
        .collect();
    append_each(&store, t0(), records);

    let pages = |newest_first: bool, kinds: Vec<RecordKind>| -> Vec<Vec<u64>> {
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .history(&HistoryQuery {
                    kinds: kinds.clone(),
                    cursor,
                    limit: 3,
                    newest_first,
                    ..Default::default()
                })
                .unwrap();
            pages.push(ids(&page.entries));
            cursor = page.next_cursor;
            if cursor.is_none() {
                return pages;
            }
            assert_eq!(cursor, page.entries.last().map(|e| e.id));
        }
    };
    assert_eq!(
        pages(false, vec![]),
        [vec![1, 2, 3], vec![4, 5, 6], vec![7]]
    );
    assert_eq!(pages(true, vec![]), [vec![7, 6, 5], vec![4, 3, 2], vec![1]]);
    assert_eq!(
        pages(false, vec![RecordKind::Deny]),
        [vec![1, 3, 5], vec![7]]
    );
    assert_eq!(
        pages(true, vec![RecordKind::Deny]),
        [vec![7, 5, 3], vec![1]]
    );

    // A page that ends exactly at the last entry says there is no more.
    let page = store
        .history(&HistoryQuery {
            cursor: Some(4),
            limit: 3,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ids(&page.entries), [5, 6, 7]);
    assert_eq!(page.next_cursor, None);
    // A limit of 0 is taken as 1.
    let page = store
        .history(&HistoryQuery {
            limit: 0,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ids(&page.entries), [1]);
}

// === Compaction ===

#[test]
fn compact_removes_by_age_and_count_but_keeps_entries_after_snapshot() {
    let (_dir, store) = new_store();
    // Ten entries, one per hour.
    let hour = Duration::from_secs(3600);
    for i in 0..10 {
        store
            .append(vec![(t0() + hour * i, config_reloaded())])
            .unwrap();
    }
    let now = t0() + hour * 10;
    let keep_all = Retention {
        max_age: hour * 100,
        max_entries: 100,
    };
    let by_age = Retention {
        max_age: hour * 7 + secs(1),
        max_entries: 100,
    };

    // Without a snapshot every entry may be needed for recovery.
    assert_eq!(store.compact(by_age, now).unwrap(), 0);

    store.snapshot(&DurableState::default(), 8).unwrap();
    assert_eq!(store.compact(keep_all, now).unwrap(), 0);
    // Older than 7h (and a second) at 10h: entries at 0h, 1h, 2h.
    assert_eq!(store.compact(by_age, now).unwrap(), 3);
    assert_eq!(history_ids(&store), [4, 5, 6, 7, 8, 9, 10]);

    // Keep 1: the oldest go, up to 8, the last entry the snapshot includes;
    // 9 and 10 are after it and stay.
    let by_count = Retention {
        max_age: hour * 100,
        max_entries: 1,
    };
    assert_eq!(store.compact(by_count, now).unwrap(), 5);
    assert_eq!(history_ids(&store), [9, 10]);

    // Everything is past its age, but the entries after the snapshot stay.
    let none = Retention {
        max_age: Duration::ZERO,
        max_entries: 0,
    };
    assert_eq!(store.compact(none, now).unwrap(), 0);
    assert_eq!(history_ids(&store), [9, 10]);
    assert_eq!(store.load().unwrap().last_id, 10);
}

fn history_ids(store: &RedbStore) -> Vec<u64> {
    ids(&store
        .history(&HistoryQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .entries)
}

#[test]
fn ids_are_never_reused_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append_each(&store, t0(), vec![config_reloaded(); 5]);
        store.snapshot(&DurableState::default(), 5).unwrap();
        let all = Retention {
            max_age: Duration::ZERO,
            max_entries: 0,
        };
        assert_eq!(store.compact(all, t0() + secs(60)).unwrap(), 5);
        assert!(history_ids(&store).is_empty());
        let next = store.append(vec![(t0(), config_reloaded())]).unwrap();
        assert_eq!(ids(&next), [6]);
        store.snapshot(&DurableState::default(), 6).unwrap();
        assert_eq!(store.compact(all, t0() + secs(60)).unwrap(), 1);
    }
    let store = open(dir.path());
    assert_eq!(store.load().unwrap().last_id, 6);
    let next = store.append(vec![(t0(), config_reloaded())]).unwrap();
    assert_eq!(ids(&next), [7]);
}

#[test]
fn store_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<RedbStore>();

    let (_dir, store) = new_store();
    let store = std::sync::Arc::new(store);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    store
                        .append(vec![(t0(), denied(&format!("h{t}"), Action::RestartJob))])
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(history_ids(&store), (1..=40).collect::<Vec<_>>());
}

#[test]
fn entries_round_trip_every_record_kind() {
    let (_dir, store) = new_store();
    let records = vec![
        Record::Policy(pause_event(1, Some(Action::RestartJob), t0())),
        Record::Policy(Event::BreakerOpened(BreakerTrip {
            scope: BreakerScope::Domain {
                label: "zone".into(),
                value: "use1-az2".into(),
            },
            cause: BreakerCause::FailureFraction,
            since: t0(),
            detail: "6 of 10 failed".into(),
            half_open: None,
        })),
        denied("h1", Action::RebootHost),
        config_reloaded(),
    ];
    let written = append_each(&store, t0(), records);
    let page = store
        .history(&HistoryQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.entries, written);
}

// === The state file is the truth, and its absence is an error ===

/// A store with a pause and a quarantine in it, closed.
fn store_with_state(dir: &Path) {
    let store = open(dir);
    append_each(
        &store,
        t0(),
        vec![
            Record::Policy(pause_event(1, None, t0())),
            Record::Policy(quarantine_event("web-1", t0())),
        ],
    );
}

fn assert_lost(result: Result<impl std::fmt::Debug, StoreError>, mentions: &str) -> String {
    match result {
        Err(e @ StoreError::Lost { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(mentions),
                "the error should say {mentions:?}: {text}"
            );
            assert!(text.contains("Refusing to go on"), "{text}");
            text
        }
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[test]
fn an_emptied_state_file_is_refused_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    store_with_state(dir.path());
    let path = dir.path().join("medic.redb");
    std::fs::write(&path, b"").unwrap();
    assert_lost(RedbStore::open(dir.path()), "empty (0 bytes)");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as found");
}

#[cfg(unix)]
#[test]
fn a_state_file_linked_to_dev_null_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_state(dir.path());
    let path = dir.path().join("medic.redb");
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/null", &path).unwrap();
    assert_lost(
        RedbStore::open(dir.path()),
        "a symbolic link to /dev/null, which is a character device, not a file",
    );
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is left as found"
    );
}

#[cfg(unix)]
#[test]
fn a_dangling_state_file_link_is_refused_even_in_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.redb");
    std::os::unix::fs::symlink(dir.path().join("elsewhere/medic.redb"), &path).unwrap();
    assert_lost(RedbStore::open(dir.path()), "which does not exist");
    assert!(!dir.path().join("elsewhere").exists());
}

#[test]
fn a_missing_state_file_beside_its_lock_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_state(dir.path());
    std::fs::remove_file(dir.path().join("medic.redb")).unwrap();
    let text = assert_lost(RedbStore::open(dir.path()), "it does not exist");
    assert!(text.contains("(it has LOCK)"), "{text}");
    assert!(!dir.path().join("medic.redb").exists(), "nothing created");
    // Refused again: the failed open left no file behind.
    assert_lost(RedbStore::open(dir.path()), "it does not exist");
}

#[test]
fn a_missing_state_file_beside_a_rescued_copy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("medic.redb.rescued"), b"x").unwrap();
    let text = assert_lost(RedbStore::open(dir.path()), "medic.redb.rescued");
    assert!(text.contains("Restore the state file"), "{text}");
}

#[test]
fn a_directory_in_place_of_the_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("medic.redb")).unwrap();
    assert_lost(RedbStore::open(dir.path()), "it is a directory, not a file");
}

/// A state directory on its own file system starts with `lost+found`; only
/// medic's own files count as traces of earlier state.
#[test]
fn a_directory_that_never_held_medic_state_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lost+found")).unwrap();
    let store = open(dir.path());
    assert_eq!(store.load().unwrap().last_id, 0);
}

#[cfg(unix)]
#[test]
fn the_state_file_is_created_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let mode = std::fs::metadata(dir.path().join("medic.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_state_file_deleted_while_open_fails_the_next_write_and_keeps_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.redb");
    let store = open(dir.path());
    append_each(
        &store,
        t0(),
        vec![
            Record::Policy(pause_event(1, None, t0())),
            Record::Policy(quarantine_event("web-1", t0())),
        ],
    );
    store.verify().unwrap();
    std::fs::remove_file(&path).unwrap();

    let text = assert_lost(store.verify(), "deleted while the coordinator ran");
    let rescued = dir.path().join("medic.redb.rescued");
    assert!(text.contains(&rescued.display().to_string()), "{text}");
    // The next write is not acknowledged either, and names the same copy.
    let write = store.append(vec![(
        t0(),
        Record::Policy(quarantine_event("web-2", t0())),
    )]);
    let text = assert_lost(write, "deleted while the coordinator ran");
    assert!(text.contains("medic.redb.rescued"), "{text}");
    assert!(
        !dir.path().join("medic.redb.rescued-1").exists(),
        "one copy"
    );
    drop(store);

    // The copy holds everything acknowledged; moved back, it opens.
    assert_lost(RedbStore::open(dir.path()), "medic.redb.rescued");
    std::fs::rename(&rescued, &path).unwrap();
    let loaded = open(dir.path()).load().unwrap();
    assert_eq!(loaded.state.pauses.len(), 1);
    assert!(loaded.state.quarantines.contains_key(&host("web-1")));
}

#[test]
fn a_state_file_replaced_while_open_is_noticed_and_the_open_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.redb");
    let store = open(dir.path());
    append_each(
        &store,
        t0(),
        vec![Record::Policy(quarantine_event("web-1", t0()))],
    );
    // An older backup copied over the live file's name.
    let other = dir.path().join("backup.redb");
    std::fs::copy(&path, &other).unwrap();
    std::fs::rename(&other, &path).unwrap();

    assert_lost(store.verify(), "replaced by another file");
    drop(store);
    // The next start may not pick the replacement silently.
    assert_lost(RedbStore::open(dir.path()), "medic.redb.rescued beside it");
    let rescued = RedbStore::open(&{
        let d = dir.path().join("check");
        std::fs::create_dir(&d).unwrap();
        std::fs::rename(dir.path().join("medic.redb.rescued"), d.join("medic.redb")).unwrap();
        d
    })
    .unwrap();
    assert!(
        rescued
            .load()
            .unwrap()
            .state
            .quarantines
            .contains_key(&host("web-1"))
    );
}
