//! The store contract: one model-based property test runs the same
//! operations (append batches, snapshots valid and refused, history queries
//! with filters and cursors both ways, compaction, reopen and load) against
//! a reference model, `RedbStore` and (with the `etcd` feature) `EtcdStore`
//! on a throwaway etcd, and checks that all answer alike.
//!
//! The etcd store runs with tiny transaction limits (4 operations, a few
//! KiB), so batches and snapshots are split across transactions in almost
//! every case. On failure proptest shrinks to a minimal sequence and prints
//! it.

#![allow(clippy::unwrap_used)]

#[cfg(feature = "etcd")]
mod common;

use std::sync::Mutex;
use std::time::Duration;

use medic_policy::{
    Action, Denial, DenyReason, DurableState, Event, HostId, Labels, Pause, Quarantine,
    QuarantineCause, Scope, Time,
};
use medic_store::{
    Entry, HistoryPage, HistoryQuery, Loaded, Record, RecordKind, RedbStore, Retention, Store,
    StoreError,
};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

fn t0() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

const HOUR: u64 = 3600;
const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

// === Operations ===

/// A record, small enough to generate and shrink.
#[derive(Clone, Debug)]
enum Rec {
    Pause(Option<Action>),
    Quarantine(usize),
    Denied(usize, Action),
    Config,
}

impl Rec {
    fn record(&self, at: Time, n: u64) -> Record {
        match self {
            Rec::Pause(action) => Record::Policy(Event::Paused(Pause {
                id: n,
                scope: Scope {
                    selector: Labels::new(),
                    action: *action,
                },
                actor: "alice".into(),
                reason: "maintenance".into(),
                since: at,
                until: None,
            })),
            Rec::Quarantine(h) => Record::Policy(Event::HostQuarantined(Quarantine {
                host: HostId::new(HOSTS[*h]).unwrap(),
                cause: QuarantineCause::Manual,
                actor: "alice".into(),
                reason: format!("bad disk {n}"),
                since: at,
            })),
            Rec::Denied(h, action) => Record::Denied {
                host: HostId::new(HOSTS[*h]).unwrap(),
                action: *action,
                denial: Denial {
                    reason: DenyReason::Cooldown,
                    retry_after: Some(Duration::from_secs(30)),
                    message: "in cooldown".into(),
                },
                count: n,
            },
            Rec::Config => Record::ConfigReloaded {
                actor: "signal:SIGHUP".into(),
                reason: "file changed".into(),
                errors: Vec::new(),
            },
        }
    }
}

/// Where a snapshot claims to be.
#[derive(Clone, Copy, Debug)]
enum Upto {
    /// The last entry.
    Last,
    /// Between the current snapshot and the last entry (by fraction).
    Between(u8),
    /// Past the last entry: refused.
    PastLast,
    /// Before the current snapshot: refused when there is one.
    BeforeCurrent,
}

#[derive(Clone, Debug)]
enum Op {
    /// A batch of records at hours from t0 (possibly empty).
    Append(Vec<(u64, Rec)>),
    Snapshot(Upto),
    History(HistoryQuery),
    Compact {
        max_age_hours: u64,
        max_entries: u64,
        now_hours: u64,
    },
    /// Close every store and open it again, then load.
    Reopen,
    Load,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::RestartJob), Just(Action::RebootHost)]
}

fn rec() -> impl Strategy<Value = Rec> {
    prop_oneof![
        proptest::option::of(action()).prop_map(Rec::Pause),
        (0..HOSTS.len()).prop_map(Rec::Quarantine),
        (0..HOSTS.len(), action()).prop_map(|(h, a)| Rec::Denied(h, a)),
        Just(Rec::Config),
    ]
}

fn kind() -> impl Strategy<Value = RecordKind> {
    prop_oneof![
        Just(RecordKind::Pause),
        Just(RecordKind::Quarantine),
        Just(RecordKind::Deny),
        Just(RecordKind::Config),
        Just(RecordKind::Grant),
    ]
}

fn query(last_id: u64) -> impl Strategy<Value = HistoryQuery> {
    (
        proptest::option::of(0..12u64),
        proptest::option::of(0..12u64),
        proptest::option::of(0..HOSTS.len()),
        proptest::collection::vec(kind(), 0..3),
        proptest::option::of(action()),
        proptest::option::of(0..=last_id + 2),
        0..6usize,
        any::<bool>(),
    )
        .prop_map(
            |(since, until, host, kinds, action, cursor, limit, newest_first)| HistoryQuery {
                since: since.map(|h| t0() + Duration::from_secs(h * HOUR)),
                until: until.map(|h| t0() + Duration::from_secs(h * HOUR)),
                host: host.map(|h| HostId::new(HOSTS[h]).unwrap()),
                kinds,
                action,
                cursor,
                limit,
                newest_first,
            },
        )
}

// === The reference model ===

/// What the log holds, plainly.
#[derive(Clone, Debug, Default)]
struct Model {
    /// Entries kept, oldest first.
    log: Vec<Entry>,
    last_id: u64,
    /// The latest snapshot: state and the entry it follows.
    snapshot: Option<(DurableState, u64)>,
    /// Results of the last operation, for the stores to match.
    result: Option<Outcome>,
}

/// An operation's answer, errors reduced to their kind. (Test-only, and
/// compared whole: the size of the `Loaded` variant does not matter.)
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Appended(Result<Vec<Entry>, String>),
    Snapshot(Result<(), String>),
    History(Result<HistoryPage, String>),
    Compacted(Result<u64, String>),
    Loaded(Result<Loaded, String>),
}

fn kind_of(e: &StoreError) -> String {
    format!("{e:?}")
        .split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn outcome<T>(r: Result<T, StoreError>) -> Result<T, String> {
    r.map_err(|e| kind_of(&e))
}

fn matches(q: &HistoryQuery, e: &Entry) -> bool {
    q.since.is_none_or(|since| e.at >= since)
        && q.until.is_none_or(|until| e.at < until)
        && (q.kinds.is_empty() || q.kinds.contains(&e.record.kind()))
        && q.host.as_ref().is_none_or(|h| e.record.host() == Some(h))
        && q.action.is_none_or(|a| e.record.action() == Some(a))
}

impl Model {
    fn upto(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.1)
    }

    /// The state after entry `upto`: the snapshot's plus later events.
    fn state_at(&self, upto: u64) -> DurableState {
        let (mut state, from) = self.snapshot.clone().unwrap_or_default();
        for e in &self.log {
            if let (true, Record::Policy(event)) = (e.id > from && e.id <= upto, &e.record) {
                state.apply(event);
            }
        }
        state
    }

    fn snapshot_upto(&self, u: Upto) -> u64 {
        let current = self.upto();
        match u {
            Upto::Last => self.last_id,
            Upto::Between(f) => current + (self.last_id - current) * u64::from(f) / 255,
            Upto::PastLast => self.last_id + 1,
            Upto::BeforeCurrent => current.saturating_sub(1),
        }
    }

    /// The state a snapshot at `upto` records: the true state, marked so a
    /// load that ignored the snapshot would differ.
    fn snapshot_state(&self, upto: u64) -> DurableState {
        let mut state = self.state_at(upto.min(self.last_id));
        state.last_token.0 += 1000 + upto;
        state
    }

    fn history(&self, q: &HistoryQuery) -> HistoryPage {
        let limit = q.limit.max(1);
        let rows: Vec<&Entry> = if q.newest_first {
            self.log
                .iter()
                .rev()
                .filter(|e| q.cursor.is_none_or(|c| e.id < c))
                .collect()
        } else {
            self.log
                .iter()
                .filter(|e| q.cursor.is_none_or(|c| e.id > c))
                .collect()
        };
        let mut entries = Vec::new();
        let mut examined = 0;
        for e in &rows {
            examined += 1;
            if matches(q, e) {
                entries.push((*e).clone());
                if entries.len() == limit {
                    break;
                }
            }
        }
        let more = examined < rows.len();
        HistoryPage {
            entries,
            next_cursor: if more {
                Some(rows[examined - 1].id)
            } else {
                None
            },
        }
    }

    fn apply(&mut self, op: &Op) {
        self.result = Some(match op {
            Op::Append(batch) => {
                let mut out = Vec::new();
                for (h, r) in batch {
                    self.last_id += 1;
                    let at = t0() + Duration::from_secs(h * HOUR);
                    let e = Entry {
                        id: self.last_id,
                        at,
                        record: r.record(at, self.last_id),
                    };
                    self.log.push(e.clone());
                    out.push(e);
                }
                Outcome::Appended(Ok(out))
            }
            Op::Snapshot(u) => {
                let upto = self.snapshot_upto(*u);
                Outcome::Snapshot(if upto > self.last_id || upto < self.upto() {
                    Err("SnapshotRejected".into())
                } else {
                    self.snapshot = Some((self.snapshot_state(upto), upto));
                    Ok(())
                })
            }
            Op::History(q) => Outcome::History(Ok(self.history(q))),
            Op::Compact {
                max_age_hours,
                max_entries,
                now_hours,
            } => {
                let cutoff = (t0() + Duration::from_secs(now_hours * HOUR))
                    .checked_sub(Duration::from_secs(max_age_hours * HOUR));
                let upto = self.upto();
                let mut removed = 0;
                while let Some(e) = self.log.first() {
                    let too_many = self.log.len() as u64 > *max_entries;
                    let too_old = cutoff.is_some_and(|c| e.at < c);
                    if e.id > upto || (!too_many && !too_old) {
                        break;
                    }
                    self.log.remove(0);
                    removed += 1;
                }
                Outcome::Compacted(Ok(removed))
            }
            Op::Reopen | Op::Load => Outcome::Loaded(Ok(Loaded {
                state: self.state_at(self.last_id),
                last_id: self.last_id,
            })),
        });
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let upto = prop_oneof![
            4 => Just(Upto::Last),
            4 => any::<u8>().prop_map(Upto::Between),
            1 => Just(Upto::PastLast),
            1 => Just(Upto::BeforeCurrent),
        ];
        prop_oneof![
            8 => proptest::collection::vec((0..12u64, rec()), 0..9).prop_map(Op::Append),
            3 => upto.prop_map(Op::Snapshot),
            8 => query(state.last_id).prop_map(Op::History),
            2 => (0..14u64, 0..12u64, 0..14u64).prop_map(|(max_age_hours, max_entries, now_hours)| {
                Op::Compact { max_age_hours, max_entries, now_hours }
            }),
            1 => Just(Op::Reopen),
            1 => Just(Op::Load),
        ]
        .boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.apply(op);
        state
    }
}

// === The stores under test ===

/// The endpoint of the etcd the test started (set before the cases run).
static ETCD: Mutex<Option<String>> = Mutex::new(None);
#[cfg(feature = "etcd")]
static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Stores {
    dir: tempfile::TempDir,
    redb: Option<RedbStore>,
    #[cfg(feature = "etcd")]
    etcd: Option<EtcdUnderTest>,
}

#[cfg(feature = "etcd")]
struct EtcdUnderTest {
    config: medic_store::EtcdConfig,
    store: Option<medic_store::EtcdStore>,
    leader: medic_store::Leader,
}

#[cfg(feature = "etcd")]
impl EtcdUnderTest {
    fn new(endpoint: String) -> Self {
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut config =
            medic_store::EtcdConfig::new(vec![endpoint], format!("/medic/contract/{case}"));
        // Tiny limits: every batch of more than a few entries, and every
        // snapshot with some state, is split across transactions.
        config.max_txn_ops = 4;
        config.max_txn_bytes = 18 * 1024;
        let store = medic_store::EtcdStore::connect(&config).unwrap();
        let leader =
            medic_store::Leader::campaign(&store, "contract", Duration::from_secs(30)).unwrap();
        store.set_fence(Some(leader.fence().clone()));
        EtcdUnderTest {
            config,
            store: Some(store),
            leader,
        }
    }

    fn store(&self) -> &medic_store::EtcdStore {
        self.store.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        drop(self.store.take());
        let store = medic_store::EtcdStore::connect(&self.config).unwrap();
        store.set_fence(Some(self.leader.fence().clone()));
        self.store = Some(store);
    }
}

impl Stores {
    fn all(&self) -> Vec<(&'static str, &dyn Store)> {
        let mut all: Vec<(&'static str, &dyn Store)> = Vec::new();
        if let Some(r) = &self.redb {
            all.push(("redb", r));
        }
        #[cfg(feature = "etcd")]
        if let Some(e) = &self.etcd {
            all.push(("etcd", e.store()));
        }
        all
    }
}

fn run(store: &dyn Store, op: &Op, model_before: &Model) -> Outcome {
    match op {
        Op::Append(batch) => {
            let mut n = model_before.last_id;
            let records = batch
                .iter()
                .map(|(h, r)| {
                    n += 1;
                    let at = t0() + Duration::from_secs(h * HOUR);
                    (at, r.record(at, n))
                })
                .collect();
            Outcome::Appended(outcome(store.append(records)))
        }
        Op::Snapshot(u) => {
            let upto = model_before.snapshot_upto(*u);
            let state = model_before.snapshot_state(upto);
            Outcome::Snapshot(outcome(store.snapshot(&state, upto)))
        }
        Op::History(q) => Outcome::History(outcome(store.history(q))),
        Op::Compact {
            max_age_hours,
            max_entries,
            now_hours,
        } => Outcome::Compacted(outcome(store.compact(
            Retention {
                max_age: Duration::from_secs(max_age_hours * HOUR),
                max_entries: *max_entries,
            },
            t0() + Duration::from_secs(now_hours * HOUR),
        ))),
        Op::Reopen | Op::Load => Outcome::Loaded(outcome(store.load())),
    }
}

/// The model before the operation (the runner hands over the state after),
/// kept beside the stores.
struct UnderTest {
    stores: Stores,
    before: Model,
}

struct Contract;

impl StateMachineTest for Contract {
    type SystemUnderTest = UnderTest;
    type Reference = Reference;

    fn init_test(_: &Model) -> UnderTest {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStore::open(dir.path()).unwrap();
        #[cfg(feature = "etcd")]
        let etcd = ETCD.lock().unwrap().clone().map(EtcdUnderTest::new);
        UnderTest {
            stores: Stores {
                dir,
                redb: Some(redb),
                #[cfg(feature = "etcd")]
                etcd,
            },
            before: Model::default(),
        }
    }

    fn apply(mut sut: UnderTest, after: &Model, op: Op) -> UnderTest {
        if let Op::Reopen = op {
            drop(sut.stores.redb.take());
            sut.stores.redb = Some(RedbStore::open(sut.stores.dir.path()).unwrap());
            #[cfg(feature = "etcd")]
            if let Some(e) = sut.stores.etcd.as_mut() {
                e.reopen();
            }
        }
        let expected = after.result.clone().unwrap();
        for (name, store) in sut.stores.all() {
            let got = run(store, &op, &sut.before);
            assert_eq!(got, expected, "{name} differs from the model after {op:?}");
        }
        sut.before = after.clone();
        sut
    }
}

/// Runs the contract with `etcd` (when given) as well as redb.
fn contract(etcd: Option<String>) {
    *ETCD.lock().unwrap() = etcd;
    prop_state_machine! {
        #![proptest_config(Config {
            cases: 32,
            failure_persistence: None,
            .. Config::default()
        })]
        fn cases(sequential 1..40 => Contract);
    }
    cases();
}

#[cfg(feature = "etcd")]
#[test]
fn redb_etcd_and_the_model_agree() {
    let server = common::EtcdServer::start();
    contract(server.as_ref().map(|s| s.endpoint.clone()));
}

#[cfg(not(feature = "etcd"))]
#[test]
fn redb_and_the_model_agree() {
    eprintln!("\n!!! built without the `etcd` feature: the contract runs against redb only. !!!\n");
    contract(None);
}
