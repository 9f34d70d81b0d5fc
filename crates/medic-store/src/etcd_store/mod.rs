//! The replicated backend: medic's log, snapshot and meta in etcd, every
//! write fenced by the leader key (ARCHITECTURE.md "High availability", issue 9).
//!
//! Layout under the configured prefix `P` (schema version 1, the same
//! records as [`crate::RedbStore`], as the same JSON):
//!
//! - `P/meta/schema_version`: the schema version, in decimal.
//! - `P/meta/last_id`: the highest id ever given to an entry, zero-padded to
//!   20 digits so that etcd's byte-wise comparison orders it as a number.
//!   Only entries with ids up to it exist for readers: see "Atomicity".
//! - `P/meta/snapshot`: which snapshot is current (JSON: `upto`,
//!   `generation`, `chunks`), absent before the first snapshot.
//! - `P/log/<id, 20 digits>`: one [`Entry`](crate::Entry) each.
//! - `P/snap/<generation, 20 digits>/<n, 6 digits>`: the current snapshot's
//!   JSON, in pieces (a 50,000-host state is larger than one etcd request).
//! - `P/leader`: the leader key, put with the leader's lease ([`Leader`]).
//! - `P/config/fleet`: the fleet-wide configuration every replica applies
//!   (TOML text, [`EtcdStore::fleet_config`]); written by operators, not
//!   by the leader, so not fenced.
//!
//! # Fencing
//!
//! Every write (append, snapshot, compaction) is an etcd transaction whose
//! first comparison is `create_revision(P/leader) == fence.revision`, the
//! revision at which this coordinator's campaign created the key. When the
//! leader's lease ends (expiry, revocation) etcd deletes the key, and a new
//! leader's key has a later create revision, so a deposed leader's writes
//! fail as [`StoreError::NotLeader`] whatever its local clock or flag
//! believes. The local flag ([`Leader::is_leader`]) exists so that the
//! coordinator stops *granting* before it could be deposed; it is not what
//! keeps the store safe.
//!
//! # Atomicity
//!
//! etcd refuses a transaction with more than 128 operations or a request
//! over 1.5 MiB (its defaults, [`EtcdConfig::max_txn_ops`] and
//! [`EtcdConfig::max_txn_bytes`]). A batch that fits is one transaction.
//! A larger batch is written in several, each fenced and each comparing
//! `last_id` with its value before the batch; only the last transaction
//! advances `last_id`. Readers (load, history, compaction) never look past
//! `last_id`, so a batch still becomes visible all at once or not at all:
//! the entries of a batch that failed half-way lie past `last_id`, unseen,
//! and the next append overwrites them. A single record larger than one
//! request is refused ([`StoreError::TooLarge`]). Snapshots are written the
//! same way: pieces under a new generation, then one transaction that
//! switches `P/meta/snapshot` to it and deletes older generations.
//!
//! When etcd cannot be reached mid-call, the outcome of the transaction in
//! flight is unknown ([`StoreError::Backend`]): the caller must treat the
//! store as failed and reload, as after any lost write.
//!
//! # Runtime
//!
//! [`Store`](crate::Store) is synchronous (the coordinator calls it from a committer thread
//! or `spawn_blocking`), and etcd-client is async. An `EtcdStore` owns a
//! small tokio runtime (one worker thread) that runs the gRPC connection,
//! the leader's keep-alive, and every request; a blocking call sends its
//! future there and waits on a channel. So it works from any thread, never
//! depends on the caller's runtime being alive or entered, and the leader's
//! keep-alive keeps running while the coordinator's runtime is busy. (From
//! an async task it would block that worker: use `spawn_blocking`.) The
//! runtime shuts down in the background when the last user drops, so
//! dropping a store inside an async context does not panic.
//!
//! etcd keeps old revisions of every key until it is compacted: run etcd
//! with `--auto-compaction-retention`, or the log's deleted entries keep
//! taking space.

mod config;
mod conn;
mod fence;
mod fleet;
mod keys;
mod leader;
mod log;
mod meta;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use etcd_client::{ConnectOptions, GetResponse};

use crate::StoreError;
use conn::{Call, Conn, Members, Runtime};
use keys::Keys;

pub use config::{EtcdConfig, EtcdTls};
pub use fence::Fence;
pub use leader::Leader;

/// Most log entries one `history` call reads (see [`crate::HistoryPage`]).
const HISTORY_SCAN_LIMIT: usize = 100_000;
/// Most entries one compaction transaction removes.
const COMPACT_BATCH: usize = 10_000;

// === impl EtcdStore ===

/// [`Store`](crate::Store) on etcd; see the module documentation for layout, fencing,
/// atomicity and the runtime.
///
/// Reads need no leadership. Writes need a [`Fence`] from a [`Leader`]
/// ([`EtcdStore::set_fence`]), and fail with [`StoreError::NotLeader`]
/// without one or once it is stale.
pub struct EtcdStore {
    conn: Conn,
    keys: Keys,
    config: EtcdConfig,
    location: PathBuf,
    fence: Mutex<Option<Fence>>,
    /// Held for the whole of a write, so one store's writes never race each
    /// other; holds `last_id` as this store last wrote or read it (`None`:
    /// read it first).
    write: Mutex<Option<u64>>,
    history_scan_limit: usize,
    compact_batch: usize,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EtcdStore {
    /// Connects to etcd and opens the store under `config.prefix`, creating
    /// an empty one (schema version, `last_id` 0) if the prefix holds no
    /// medic state at all; creating it needs no leadership, as an empty
    /// store grants nothing.
    ///
    /// Fails with [`StoreError::NewerSchema`] for state written by a newer
    /// medic and [`StoreError::Corrupt`] for keys under the prefix that are
    /// not medic state; it never resets them. The `path` of those errors is
    /// `etcd:PREFIX@ENDPOINTS`.
    pub fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let mut config = config.clone();
        while config.prefix.ends_with('/') {
            config.prefix.pop();
        }
        let location = PathBuf::from(format!(
            "etcd:{}@{}",
            config.prefix,
            config.endpoints.join(",")
        ));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("medic-etcd")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: location.clone(),
                source,
            })?;
        // `require_leader`: a member cut off from its cluster's quorum
        // answers at once that it has no leader, rather than serving
        // stale reads (a follower would redirect to a leader that is gone)
        // or hanging until the request timeout.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let mut t = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            if let Some(name) = &tls.server_name {
                t = t.domain_name(name.clone());
            }
            options = options.with_tls(t);
        }
        let members = rt
            .block_on(Members::new(
                &config.endpoints,
                &options,
                config.request_timeout,
            ))
            .map_err(|e| StoreError::Backend(format!("etcd: cannot make a client: {e}")))?;
        let store = EtcdStore {
            conn: Conn {
                rt: Arc::new(Runtime(Some(rt))),
                members: Arc::new(members),
            },
            keys: Keys {
                prefix: config.prefix.clone(),
            },
            config,
            location,
            fence: Mutex::new(None),
            write: Mutex::new(None),
            history_scan_limit: HISTORY_SCAN_LIMIT,
            compact_batch: COMPACT_BATCH,
        };
        match store.check_meta() {
            Err(StoreError::Backend(e)) => Err(StoreError::Backend(format!(
                "{e} (no member answered at start: {})",
                if store.config.tls.is_some() {
                    "is each endpoint an etcd member speaking TLS, with a certificate for its \
                     name (or store.tls.server_name) signed by store.tls.ca? With \
                     --client-cert-auth, etcd closes connections whose client certificate \
                     (store.tls.cert) it does not trust"
                } else {
                    "is each endpoint an etcd member's client URL, reachable from here? An etcd \
                     that serves TLS needs https:// endpoints and [store.tls]"
                }
            ))),
            Err(e) => Err(e),
            Ok(()) => Ok(store),
        }
    }

    /// Sets (or, with `None`, clears) the leadership this store's writes
    /// are conditional on.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *lock(&self.fence) = fence;
    }

    /// The leadership this store's writes are conditional on.
    pub fn fence(&self) -> Option<Fence> {
        lock(&self.fence).clone()
    }

    /// Reads one key (linearizable), from whichever member answers.
    fn get(&self, key: String, what: &'static str) -> Result<GetResponse, StoreError> {
        Ok(self.conn.run(Call::Idempotent, what, move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?)
    }

    /// Where the state lives, as errors name it.
    pub fn location(&self) -> &std::path::Path {
        &self.location
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.location.clone(),
            detail: detail.into(),
        }
    }

    fn current_fence(&self) -> Result<Fence, StoreError> {
        self.fence().ok_or_else(|| StoreError::NotLeader {
            detail: "this store holds no leadership (no fence set)".into(),
        })
    }
}
