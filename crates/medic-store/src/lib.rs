//! medic's durable state.
//!
//! One append-only log holds everything the coordinator must not forget and
//! everything the audit history shows: the engine's domain events
//! ([`medic_policy::Event`]), sampled denials and config reloads. Recovery
//! reads the latest snapshot of [`DurableState`] and replays the policy
//! events logged after it, through the same [`DurableState::apply`] the
//! engine uses, so a restarted coordinator sees exactly what the old one
//! saw (I6).
//!
//! Writes are whole batches ([`Store::append`]): atomic and durable (fsync)
//! before the call returns. A replicated backend implements the same trait
//! with each batch as one transaction conditional on still being leader.
//!
//! Modules: this file holds the [`Store`] trait, [`Record`], [`Entry`] and
//! the history query; `redb_store` the embedded [`RedbStore`];
//! `etcd_store` the replicated `EtcdStore` with its leader election
//! (feature `etcd`); `replay` the recovery both share; `error`
//! [`StoreError`].
#![forbid(unsafe_code)]

mod error;
#[cfg(feature = "etcd")]
mod etcd_store;
mod redb_store;
mod replay;

use std::time::Duration;

use medic_policy::{Action, ConfigError, Denial, DurableState, Event, HostId, Time};

/// How history filters group records: medic-policy classifies them.
pub use medic_policy::RecordKind;
use serde::{Deserialize, Serialize};

pub use error::StoreError;
/// The etcd client this store uses, for tests and tools that act as another
/// party on the same etcd (revoking a leader's lease, reading its key).
#[cfg(feature = "etcd")]
pub use etcd_client;
#[cfg(feature = "etcd")]
pub use etcd_store::{EtcdConfig, EtcdStore, EtcdTls, Fence, Leader};
pub use redb_store::RedbStore;

/// The schema version this build writes and reads. A file with a newer one
/// stops start-up: this build cannot know what it would lose.
pub const SCHEMA_VERSION: u32 = 1;

/// One thing worth remembering.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// A change of the engine's durable state.
    Policy(Event),
    /// `count` denials of `action` to `host` since the previous sample for
    /// that host and reason; `denial` is the latest.
    Denied {
        /// The host denied.
        host: HostId,
        /// What it asked for.
        action: Action,
        /// The latest denial.
        denial: Denial,
        /// Denials this record stands for.
        count: u64,
    },
    /// `count` refusals (PERMISSION_DENIED) of `call` to an authenticated
    /// `identity` since the previous record for that identity and call.
    AccessDenied {
        /// Who was refused (`cert:NAME`, `token:NAME`).
        identity: String,
        /// The call (`Remediation/Heartbeat`, `Admin/Pause`).
        call: String,
        /// The host a Remediation call named.
        host: Option<HostId>,
        /// The client's address.
        peer: String,
        /// Why, as the caller was told.
        reason: String,
        /// Refusals this record stands for.
        count: u64,
    },
    /// A configuration reload, applied exactly when `errors` is empty.
    ConfigReloaded {
        /// Who asked (`signal:SIGHUP`, an operator).
        actor: String,
        /// Why, or how.
        reason: String,
        /// Every error found; empty when it applied.
        #[serde(with = "config_errors")]
        errors: Vec<ConfigError>,
    },
}

impl Record {
    /// The kind history filters see.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Policy(e) => e.kind(),
            Record::Denied { .. } => RecordKind::Deny,
            Record::ConfigReloaded { .. } => RecordKind::Config,
            Record::AccessDenied { .. } => RecordKind::Access,
        }
    }

    /// The host the record is about, if one.
    pub fn host(&self) -> Option<&HostId> {
        match self {
            Record::Policy(e) => e.host(),
            Record::Denied { host, .. } => Some(host),
            Record::ConfigReloaded { .. } => None,
            Record::AccessDenied { host, .. } => host.as_ref(),
        }
    }

    /// The action the record is about, if one: grants, renewals (unknown
    /// action: `None`), ends, denials, and pauses whose scope names one.
    pub fn action(&self) -> Option<Action> {
        match self {
            Record::Policy(Event::PermitGranted { permit }) => Some(permit.action),
            Record::Policy(Event::PermitEnded { action, .. }) => Some(*action),
            Record::Policy(Event::Paused(p)) => p.scope.action,
            Record::Policy(Event::Resumed { pause, .. }) => pause.scope.action,
            Record::Denied { action, .. } => Some(*action),
            _ => None,
        }
    }
}

/// A logged record with its id (strictly increasing, never reused) and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 1.
    pub id: u64,
    /// When it happened.
    pub at: Time,
    /// What happened.
    pub record: Record,
}

/// What [`Store::load`] recovers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The durable state: the latest snapshot with every later policy event
    /// applied.
    pub state: DurableState,
    /// The id of the last entry in the log (0 for a new store).
    pub last_id: u64,
}

/// A history query. Every set filter must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Entries at or after this time.
    pub since: Option<Time>,
    /// Entries before this time.
    pub until: Option<Time>,
    /// Entries about this host.
    pub host: Option<HostId>,
    /// Entries of these kinds; empty: every kind.
    pub kinds: Vec<RecordKind>,
    /// Entries about this action.
    pub action: Option<Action>,
    /// Paging cursor: continue after (or, newest first, before) this id.
    pub cursor: Option<u64>,
    /// Most entries per page (at least 1).
    pub limit: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

/// One page of history.
///
/// A backend bounds the work of one call: when filters match rarely it may
/// return fewer than `limit` entries (even none) with a `next_cursor`, so a
/// caller pages on until `next_cursor` is `None`, never until a short page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryPage {
    /// Matching entries, in the query's order.
    pub entries: Vec<Entry>,
    /// Cursor for the next page (the id of the last entry examined); `None`
    /// when there is no more.
    pub next_cursor: Option<u64>,
}

/// How much history to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Entries older than this are removed.
    pub max_age: Duration,
    /// At most this many entries are kept (oldest removed first).
    pub max_entries: u64,
}

/// Durable state behind one trait. Every method is blocking; call them from
/// a blocking-friendly context (`tokio::task::spawn_blocking`).
pub trait Store: Send + Sync + 'static {
    /// Recovers the durable state. Fails, never resets, on a corrupt or
    /// newer-schema store.
    fn load(&self) -> Result<Loaded, StoreError>;

    /// Appends records as one atomic, durable (fsynced) batch, and returns
    /// the entries as stored (with their ids), in order.
    fn append(&self, records: Vec<(Time, Record)>) -> Result<Vec<Entry>, StoreError>;

    /// Records `state` as the durable state after entry `upto`: later loads
    /// start from it and replay only policy events after `upto`. Refuses an
    /// `upto` past the last entry, or before the latest snapshot's (entries
    /// up to that one may already be compacted away).
    fn snapshot(&self, state: &DurableState, upto: u64) -> Result<(), StoreError>;

    /// Reads history.
    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError>;

    /// Removes entries beyond `retention` at `now`, never an entry after the
    /// latest snapshot (recovery needs those). Returns how many it removed.
    /// Removal takes the oldest entries first and stops at the first one
    /// that is young enough and within `max_entries`, so the log stays one
    /// contiguous run of ids.
    fn compact(&self, retention: Retention, now: Time) -> Result<u64, StoreError>;

    /// Checks that the store can still take writes that last: for the
    /// embedded store, that its file is still the one it opened (not
    /// deleted, not replaced). The coordinator calls it every tick, so an
    /// idle coordinator notices too; a store without such a check answers
    /// `Ok`.
    fn verify(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the coordinator calls this store on its own task rather
    /// than on a blocking thread. A store's calls block (a disk, a network)
    /// and go to a thread of their own by default; the simulator asks for
    /// them inline, so that a fleet on virtual time runs on one thread and
    /// repeats itself exactly.
    fn inline(&self) -> bool {
        false
    }
}

/// A shared store is a store: the replicated coordinator polls the leader
/// key through the same `EtcdStore` that its core writes with.
impl<T: Store> Store for std::sync::Arc<T> {
    fn load(&self) -> Result<Loaded, StoreError> {
        (**self).load()
    }
    fn append(&self, records: Vec<(Time, Record)>) -> Result<Vec<Entry>, StoreError> {
        (**self).append(records)
    }
    fn snapshot(&self, state: &DurableState, upto: u64) -> Result<(), StoreError> {
        (**self).snapshot(state, upto)
    }
    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        (**self).history(query)
    }
    fn compact(&self, retention: Retention, now: Time) -> Result<u64, StoreError> {
        (**self).compact(retention, now)
    }
    fn verify(&self) -> Result<(), StoreError> {
        (**self).verify()
    }
    fn inline(&self) -> bool {
        (**self).inline()
    }
}

/// `ConfigError` (from `medic-policy`, which has no serde on it) as a list of
/// `{path, message}`.
mod config_errors {
    use medic_policy::ConfigError;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Out<'a> {
        path: &'a str,
        message: &'a str,
    }

    #[derive(Deserialize)]
    struct In {
        path: String,
        message: String,
    }

    pub(super) fn serialize<S: Serializer>(
        errors: &[ConfigError],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(errors.iter().map(|e| Out {
            path: &e.path,
            message: &e.message,
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ConfigError>, D::Error> {
        let errors = Vec::<In>::deserialize(d)?;
        Ok(errors
            .into_iter()
            .map(|e| ConfigError {
                path: e.path,
                message: e.message,
            })
            .collect())
    }
}
