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
//! - `P/log/<id, 20 digits>`: one [`Entry`] each.
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
//! [`Store`] is synchronous (the coordinator calls it from a committer thread
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

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, GetResponse,
    KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchOptions,
};
use medic_policy::{DurableState, Time};
use serde::{Deserialize, Serialize};

use crate::redb_store::{decode_snapshot, encode_snapshot, matches};
use crate::{
    Entry, HistoryPage, HistoryQuery, Loaded, Record, Retention, SCHEMA_VERSION, Store, StoreError,
};

/// Most log entries one `history` call reads (see [`crate::HistoryPage`]).
const HISTORY_SCAN_LIMIT: usize = 100_000;
/// Most entries one compaction transaction removes.
const COMPACT_BATCH: usize = 10_000;
/// Keys per range request: well under gRPC's 4 MiB response limit for
/// entries of a few KiB.
const PAGE: i64 = 256;
/// Room left in a request for the comparisons, keys and framing.
const TXN_OVERHEAD: usize = 16 * 1024;

// === impl EtcdConfig ===

/// Where the state lives in etcd, and etcd's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix of this medic deployment (`/medic/prod`); a trailing `/`
    /// is ignored. Two deployments on one etcd need two prefixes.
    pub prefix: String,
    /// Time allowed to connect to a member. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for one request. Default 5 s.
    pub request_timeout: Duration,
    /// Most operations in one transaction: etcd's `--max-txn-ops`,
    /// default 128.
    pub max_txn_ops: usize,
    /// Most bytes of one request: etcd's `--max-request-bytes`, default
    /// 1.5 MiB.
    pub max_txn_bytes: usize,
    /// TLS to etcd (`https://` endpoints); `None` for plaintext.
    pub tls: Option<EtcdTls>,
    /// Whether [`EtcdStore::connect`] creates an empty store under a
    /// prefix that holds none (default `true`). Tools that only read or
    /// change settings of an existing deployment set it `false`, so that a
    /// mistyped prefix is an error, not a new, empty deployment.
    pub create: bool,
}

/// TLS to etcd: the CA etcd's server certificates chain to, and the client
/// certificate etcd's `--client-cert-auth` asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM CA certificate(s) of etcd's server certificates.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate and its PEM private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name etcd's certificate must carry, when it is not the
    /// endpoints' host name.
    pub server_name: Option<String>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("EtcdTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl EtcdConfig {
    /// etcd's defaults for `endpoints` and `prefix`.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: prefix.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_txn_ops: 128,
            max_txn_bytes: 1536 * 1024,
            tls: None,
            create: true,
        }
    }
}

// === Runtime and connection ===

/// The runtime that runs every etcd request, shut down in the background
/// when the last store or leader using it drops.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The members' clients and the runtime that drives them.
#[derive(Clone)]
struct Conn {
    rt: Arc<Runtime>,
    members: Arc<Members>,
}

impl Conn {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.rt.0.as_ref().map(|rt| rt.handle())
    }

    /// Runs `f(client)` on the store's runtime, on one member after another
    /// as [`Members::call`] allows, and waits for it. `what` names the
    /// request in errors.
    fn run<T, F, Fut>(&self, call: Call, what: &'static str, f: F) -> Result<T, Failure>
    where
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self
            .handle()
            .ok_or_else(|| Failure::failed("the etcd runtime has shut down"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let members = self.members.clone();
        handle.spawn(async move {
            let _ = tx.send(members.call(call, what, f).await);
        });
        rx.recv()
            .map_err(|_| Failure::failed("the etcd runtime stopped during a request"))?
    }
}

/// Whether a request may be sent to another member after a failure that
/// leaves its effect unknown (the connection broke, or the request timed
/// out, after it was sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// Reads, watches, keep-alives and revocations: sending one twice has
    /// the effect of sending it once.
    Idempotent,
    /// Writes: sent to another member only when the failure proves that
    /// etcd never received it (the member could not be connected to, or
    /// refused it for having no raft leader). An unknown outcome is
    /// returned to the caller, who can find out what happened.
    Write,
}

/// A request that failed on every member it could be sent to.
#[derive(Debug)]
struct Failure {
    /// Whether a write may have taken effect (see [`Call::Write`]).
    unknown: bool,
    message: String,
}

impl Failure {
    fn failed(message: impl Into<String>) -> Failure {
        Failure {
            unknown: false,
            message: message.into(),
        }
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> StoreError {
        StoreError::Backend(f.message)
    }
}

/// What became of a fenced transaction.
enum Written {
    /// Its comparisons held and it was applied.
    Yes(TxnResponse),
    /// The fence held but `last_id` was this, not as compared.
    Conflict(u64),
    /// The member broke off before answering (the message says how).
    Unknown(String),
}

/// How a failed request failed, as far as the member's answer tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failed {
    /// Never reached etcd's state machine: another member can be asked.
    NotSent,
    /// Sent, and the connection broke or the deadline passed first.
    Unknown,
    /// etcd answered (a comparison, a compacted revision, a quota): every
    /// member would answer the same.
    Answered,
}

/// A member's failure in a few words: the status's message and code, and
/// the innermost cause (`Connection refused (os error 111)`), rather than
/// etcd-client's debug dump of the whole chain.
fn describe(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut out = format!("{} ({:?})", status.message(), status.code());
    let mut root = None;
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        root = Some(s);
        source = s.source();
    }
    if let Some(root) = root.map(ToString::to_string)
        && !out.contains(&root)
    {
        out = format!("{out}: {root}");
    }
    out
}

fn classify(e: &etcd_client::Error) -> Failed {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            // tonic keeps the error that made the status as its source: a
            // connection that could not be made is `ConnectError`.
            let mut source = std::error::Error::source(status);
            while let Some(s) = source {
                if s.is::<tonic::ConnectError>() {
                    return Failed::NotSent;
                }
                source = s.source();
            }
            match status.code() {
                // `require_leader`: refused before it was proposed.
                tonic::Code::Unavailable if status.message().contains("no leader") => {
                    Failed::NotSent
                }
                tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Internal => Failed::Unknown,
                _ => Failed::Answered,
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => Failed::Unknown,
        etcd_client::Error::WatchError(_) | etcd_client::Error::LeaseKeepAliveError(_) => {
            Failed::Unknown
        }
        _ => Failed::Answered,
    }
}

/// One client per listed member, so that one member's death costs only the
/// requests in flight to it. etcd-client's own client balances over every
/// endpoint and keeps sending to a dead one (a `tcp connect error` for about
/// a third of the requests with one member of three down); here a request
/// goes to the member that answered last and moves on to the next one when
/// that member cannot take it.
struct Members {
    endpoints: Vec<String>,
    /// Each connects on first use, and again after its connection breaks.
    clients: Vec<Client>,
    /// Where requests go first.
    current: AtomicUsize,
    /// Per member, whether its last request failed: the log says when a
    /// member stops and starts answering, not every request it fails.
    down: Vec<AtomicBool>,
    /// How long one request may go round the members.
    retry_for: Duration,
}

impl Members {
    /// Clients for `endpoints`; connects to none yet. A request goes round
    /// the members again while `retry_for` lasts.
    async fn new(
        endpoints: &[String],
        options: &ConnectOptions,
        retry_for: Duration,
    ) -> Result<Members, String> {
        if endpoints.is_empty() {
            return Err("no endpoints are listed".to_owned());
        }
        let mut clients = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            clients.push(
                Client::connect([e.as_str()], Some(options.clone()))
                    .await
                    .map_err(|err| format!("{e}: {err}"))?,
            );
        }
        Ok(Members {
            endpoints: endpoints.to_vec(),
            clients,
            current: AtomicUsize::new(0),
            down: endpoints.iter().map(|_| AtomicBool::new(false)).collect(),
            retry_for,
        })
    }

    /// The member to use now, and its client.
    fn current(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Moves on from member `i` (unless another request already did).
    fn failed(&self, i: usize, why: &dyn fmt::Display) {
        let next = (i + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
        if !self.down[i].swap(true, Ordering::Relaxed) {
            tracing::warn!(
                failed = %self.endpoints[i],
                next = %self.endpoints[next],
                error = %why,
                "etcd member unavailable; using the next endpoint"
            );
        }
    }

    /// Member `i` answered.
    fn answered(&self, i: usize) {
        if self.down[i].swap(false, Ordering::Relaxed) {
            tracing::info!(endpoint = %self.endpoints[i], "etcd member answers again");
        }
    }

    /// Sends `f` to the current member, then to each other member in turn
    /// while the failure allows ([`Call`]); fails naming every endpoint
    /// tried and why it failed.
    async fn call<T, F, Fut>(&self, call: Call, what: &str, f: F) -> Result<T, Failure>
    where
        F: Fn(Client) -> Fut + Sync,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = tokio::time::Instant::now();
        let mut tried = Vec::new();
        loop {
            if let Some(v) = self.round(call, what, &f, &mut tried).await? {
                return Ok(v);
            }
            // Every member failed without taking it: etcd may be electing
            // a raft leader (each member says "no leader") or members may
            // be restarting. Go round again while the request's time lasts.
            if started.elapsed() + ROUND_PAUSE >= self.retry_for {
                break;
            }
            tokio::time::sleep(ROUND_PAUSE).await;
            tried.clear();
        }
        Err(Failure::failed(format!(
            "etcd: {what}: no member could take it; tried each of the {} endpoints: {}",
            self.clients.len(),
            tried.join("; ")
        )))
    }

    /// One try on every member in turn: `Some` on success, `None` when each
    /// failed in a way that allows asking again (`tried` says how).
    async fn round<T, F, Fut>(
        &self,
        call: Call,
        what: &str,
        f: &F,
        tried: &mut Vec<String>,
    ) -> Result<Option<T>, Failure>
    where
        F: Fn(Client) -> Fut + Sync,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        for _ in 0..self.clients.len() {
            let (i, client) = self.current();
            let err = match f(client).await {
                Ok(v) => {
                    self.answered(i);
                    return Ok(Some(v));
                }
                Err(e) => e,
            };
            let class = classify(&err);
            let described = describe(&err);
            if class == Failed::Answered {
                self.answered(i);
                return Err(Failure::failed(format!("etcd: {what}: {described}")));
            }
            let err = described;
            tried.push(format!("{}: {err}", self.endpoints[i]));
            if class == Failed::Unknown && call == Call::Write {
                return Err(Failure {
                    unknown: true,
                    message: format!(
                        "etcd: {what}: {} (whether it was written is unknown)",
                        tried.join("; ")
                    ),
                });
            }
            self.failed(i, &err);
        }
        Ok(None)
    }
}

/// Between two rounds over every member.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

// === Keys ===

#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn schema(&self) -> String {
        format!("{}/meta/schema_version", self.prefix)
    }
    fn last_id(&self) -> String {
        format!("{}/meta/last_id", self.prefix)
    }
    fn snapshot(&self) -> String {
        format!("{}/meta/snapshot", self.prefix)
    }
    fn meta(&self) -> String {
        format!("{}/meta/", self.prefix)
    }
    fn log(&self, id: u64) -> String {
        format!("{}/log/{id:020}", self.prefix)
    }
    fn log_dir(&self) -> String {
        format!("{}/log/", self.prefix)
    }
    fn snap_dir(&self) -> String {
        format!("{}/snap/", self.prefix)
    }
    fn snap_generation(&self, generation: u64) -> String {
        format!("{}/snap/{generation:020}/", self.prefix)
    }
    fn snap_chunk(&self, generation: u64, n: usize) -> String {
        format!("{}/snap/{generation:020}/{n:06}", self.prefix)
    }
    fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }
    fn fleet_config(&self) -> String {
        format!("{}/config/fleet", self.prefix)
    }
}

/// The end of a prefix range: the prefix with its last byte incremented.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    // Every prefix here ends in `/`, whose successor is `0`.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn pad(id: u64) -> String {
    format!("{id:020}")
}

/// Which snapshot is current.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct SnapshotPointer {
    upto: u64,
    generation: u64,
    chunks: usize,
}

/// The meta keys as read at one revision.
struct Meta {
    revision: i64,
    last_id: u64,
    snapshot: Option<SnapshotPointer>,
    /// `mod_revision` of `P/meta/snapshot`, 0 when absent.
    snapshot_rev: i64,
}

// === impl Fence ===

/// Proof of leadership that the store's transactions compare: the leader
/// key and the revision at which this coordinator's campaign created it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The leader key (`P/leader`).
    pub key: String,
    /// Its create revision.
    pub revision: i64,
    /// The lease it is attached to.
    pub lease: i64,
}

impl Fence {
    fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.revision)
    }
}

// === impl EtcdStore ===

/// [`Store`] on etcd; see the module documentation for layout, fencing,
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

    /// The name the current leader campaigned with (its advertised
    /// address), or `None` while nobody leads. Needs no leadership:
    /// followers read it to redirect callers, and poll it to notice when
    /// the leader key goes.
    pub fn leader_name(&self) -> Result<Option<String>, StoreError> {
        let resp = self.get(self.keys.leader(), "read the leader key")?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// The fleet-wide configuration pushed by operators: its TOML text and
    /// the etcd revision that last changed it, or `None` if none was ever
    /// pushed. Needs no leadership.
    pub fn fleet_config(&self) -> Result<Option<(String, i64)>, StoreError> {
        let resp = self.get(self.keys.fleet_config(), "read the fleet config")?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let text = String::from_utf8(kv.value().to_vec()).map_err(|_| {
            self.corrupt(format!(
                "{} is not UTF-8 text: not a config medic pushed",
                self.keys.fleet_config()
            ))
        })?;
        Ok(Some((text, kv.mod_revision())))
    }

    /// Stores the fleet-wide configuration (already validated by the
    /// caller) and returns the etcd revision of the write. With
    /// `expected`, only if the stored config is still at that revision (0:
    /// only if none was ever pushed), so that two operators pushing at once
    /// cannot silently undo each other: a stale `expected` fails with
    /// [`StoreError::Conflict`].
    pub fn put_fleet_config(&self, text: &str, expected: Option<i64>) -> Result<i64, StoreError> {
        let key = self.keys.fleet_config();
        let text = text.to_owned();
        let resp = self
            .conn
            .run(Call::Write, "write the fleet config", move |mut c| {
                let compare = expected
                    .map(|rev| Compare::mod_revision(key.clone(), CompareOp::Equal, rev))
                    .into_iter()
                    .collect::<Vec<_>>();
                let txn = Txn::new()
                    .when(compare)
                    .and_then([TxnOp::put(key.clone(), text.clone(), None)])
                    .or_else([TxnOp::get(key.clone(), None)]);
                async move { c.txn(txn).await }
            })?;
        if !resp.succeeded() {
            let now = resp
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(g) => {
                        Some(g.kvs().first().map_or(0, |kv| kv.mod_revision()))
                    }
                    _ => None,
                })
                .unwrap_or(0);
            return Err(StoreError::Conflict {
                detail: format!(
                    "the fleet config is at revision {now}, not {} as expected: someone \
                     pushed in between; look at it and push again",
                    expected.unwrap_or(0)
                ),
            });
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
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

    /// Checks the schema of existing state, or creates an empty store.
    fn check_meta(&self) -> Result<(), StoreError> {
        let keys = self.keys.clone();
        let (schema, last, others) =
            self.conn.run(Call::Idempotent, "read meta", move |mut c| {
                let keys = keys.clone();
                async move {
                    let meta = c
                        .get(
                            keys.meta(),
                            Some(GetOptions::new().with_range(prefix_end(&keys.meta()))),
                        )
                        .await?;
                    let find = |k: &str| {
                        meta.kvs()
                            .iter()
                            .find(|kv| kv.key() == k.as_bytes())
                            .map(|kv| kv.value().to_vec())
                    };
                    let schema = find(&keys.schema());
                    let last = find(&keys.last_id());
                    let mut others = meta.kvs().len() as i64;
                    for dir in [keys.log_dir(), keys.snap_dir()] {
                        let n = c
                            .get(
                                dir.clone(),
                                Some(
                                    GetOptions::new()
                                        .with_range(prefix_end(&dir))
                                        .with_count_only(),
                                ),
                            )
                            .await?;
                        others += n.count();
                    }
                    Ok((schema, last, others))
                }
            })?;

        let Some(schema) = schema else {
            if others == 0 && !self.config.create {
                return Err(StoreError::Missing {
                    detail: format!(
                        "etcd at {} holds no medic state under {}: is the prefix right? A \
                         deployment's state is created when its first replica starts",
                        self.config.endpoints.join(","),
                        self.config.prefix
                    ),
                });
            }
            if others > 0 {
                return Err(self.corrupt(format!(
                    "{others} keys of medic state under the prefix but no schema version: \
                     damaged, or not medic's"
                )));
            }
            let keys = self.keys.clone();
            // Created only if still absent; a racing replica's creation wins
            // and is checked below like any existing store.
            // A write whose outcome is unknown is looked at again below,
            // like a racing replica's.
            let created = self
                .conn
                .run(Call::Write, "create the store", move |mut c| {
                    let txn = Txn::new()
                        .when([Compare::create_revision(keys.schema(), CompareOp::Equal, 0)])
                        .and_then([
                            TxnOp::put(keys.schema(), SCHEMA_VERSION.to_string(), None),
                            TxnOp::put(keys.last_id(), pad(0), None),
                        ]);
                    async move { c.txn(txn).await }
                });
            if let Err(f) = created
                && !f.unknown
            {
                return Err(f.into());
            }
            return self.check_meta();
        };
        let version: u64 = std::str::from_utf8(&schema)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                self.corrupt(format!(
                    "schema version {:?} is not a number",
                    String::from_utf8_lossy(&schema)
                ))
            })?;
        if version > u64::from(SCHEMA_VERSION) {
            return Err(StoreError::NewerSchema {
                path: self.location.clone(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION,
            });
        }
        if version != u64::from(SCHEMA_VERSION) {
            return Err(self.corrupt(format!(
                "schema version {version} was never written by any medic (this build writes \
                 {SCHEMA_VERSION})"
            )));
        }
        match last {
            None => Err(self.corrupt("the meta keys have no last_id")),
            Some(v) => self.parse_last_id(&v).map(|_| ()),
        }
    }

    fn parse_last_id(&self, v: &[u8]) -> Result<u64, StoreError> {
        std::str::from_utf8(v)
            .ok()
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                self.corrupt(format!(
                    "last_id {:?} is not a 20-digit number",
                    String::from_utf8_lossy(v)
                ))
            })
    }

    /// Reads the meta keys at one revision.
    fn read_meta(&self) -> Result<Meta, StoreError> {
        let keys = self.keys.clone();
        let resp = self.conn.run(Call::Idempotent, "read meta", move |mut c| {
            let (meta, end) = (keys.meta(), prefix_end(&keys.meta()));
            async move { c.get(meta, Some(GetOptions::new().with_range(end))).await }
        })?;
        self.meta_from(&resp)
    }

    fn meta_from(&self, resp: &GetResponse) -> Result<Meta, StoreError> {
        let revision = resp.header().map_or(0, |h| h.revision());
        let find = |k: String| resp.kvs().iter().find(|kv| kv.key() == k.as_bytes());
        let last_id = match find(self.keys.last_id()) {
            Some(kv) => self.parse_last_id(kv.value())?,
            None => return Err(self.corrupt("the meta keys have no last_id")),
        };
        let (snapshot, snapshot_rev) = match find(self.keys.snapshot()) {
            Some(kv) => {
                let p: SnapshotPointer = serde_json::from_slice(kv.value()).map_err(|e| {
                    self.corrupt(format!("the snapshot pointer cannot be decoded: {e}"))
                })?;
                (Some(p), kv.mod_revision())
            }
            None => (None, 0),
        };
        Ok(Meta {
            revision,
            last_id,
            snapshot,
            snapshot_rev,
        })
    }

    /// Reads the keys in `[start, end)` at `revision`, a page at a time, and
    /// hands each to `f` until it returns `false`. Returns whether keys were
    /// left unread in the range.
    fn scan(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        revision: i64,
        descending: bool,
        mut f: impl FnMut(&KeyValue) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let (mut start, mut end) = (start, end);
        // etcd-client refuses responses over 4 MiB. A page of large values
        // (snapshot pieces of up to `max_txn_bytes`, big log entries) can
        // be larger: the page halves until it fits, down to one key.
        let mut page = PAGE;
        loop {
            if start >= end {
                return Ok(false);
            }
            let (s, e) = (start.clone(), end.clone());
            let resp = self
                .conn
                .run(Call::Idempotent, "read a range", move |mut c| {
                    let mut options = GetOptions::new()
                        .with_range(e.clone())
                        .with_limit(page)
                        .with_revision(revision);
                    if descending {
                        options = options.with_sort(SortTarget::Key, SortOrder::Descend);
                    }
                    let s = s.clone();
                    async move {
                        match c.get(s, Some(options)).await {
                            Ok(r) => Ok(Some(r)),
                            Err(etcd_client::Error::GRpcStatus(status))
                                if status.message().contains("message length too large") =>
                            {
                                Ok(None)
                            }
                            Err(e) => Err(e),
                        }
                    }
                })?;
            let Some(resp) = resp else {
                if page == 1 {
                    return Err(StoreError::Backend(format!(
                        "etcd: one key under {} is larger than a response may be (4 MiB); \
                         was etcd's --max-request-bytes raised above it?",
                        String::from_utf8_lossy(&start)
                    )));
                }
                page = (page / 2).max(1);
                continue;
            };
            // Back to full pages once past the large values.
            page = (page * 2).min(PAGE);
            let kvs = resp.kvs();
            for (i, kv) in kvs.iter().enumerate() {
                if !f(kv)? {
                    return Ok(i + 1 < kvs.len() || resp.more());
                }
            }
            match kvs.last() {
                Some(last) if resp.more() => {
                    if descending {
                        end = last.key().to_vec();
                    } else {
                        start = last.key().to_vec();
                        start.push(0);
                    }
                }
                _ => return Ok(false),
            }
        }
    }

    fn decode_entry(&self, kv: &KeyValue) -> Result<Entry, StoreError> {
        let key = String::from_utf8_lossy(kv.key());
        let id: u64 = key
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.corrupt(format!("log key {key} has no id")))?;
        let entry: Entry = serde_json::from_slice(kv.value())
            .map_err(|e| self.corrupt(format!("log entry {id} cannot be decoded: {e}")))?;
        if entry.id != id {
            return Err(self.corrupt(format!(
                "log entry stored under id {id} says it is entry {}",
                entry.id
            )));
        }
        Ok(entry)
    }

    /// Runs a fenced transaction: `compares` after the fence's, `ops` if all
    /// hold. On failure, tells why: [`StoreError::NotLeader`] when the
    /// leader key is not the fence's, else `Ok(Err(last_id))`, the
    /// `last_id` found (another writer with the same fence moved it). A
    /// transaction whose outcome is unknown is an error.
    fn fenced(
        &self,
        fence: &Fence,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        what: &'static str,
    ) -> Result<Result<TxnResponse, u64>, StoreError> {
        match self.fenced_write(fence, compares, ops, what)? {
            Written::Yes(resp) => Ok(Ok(resp)),
            Written::Conflict(found) => Ok(Err(found)),
            Written::Unknown(message) => Err(StoreError::Backend(message)),
        }
    }

    /// [`EtcdStore::fenced`], telling an unknown outcome apart.
    fn fenced_write(
        &self,
        fence: &Fence,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        what: &'static str,
    ) -> Result<Written, StoreError> {
        // Test builds: fail the write before it is sent, as a refusal, or
        // (argument `unknown`) as an outcome the caller must find out.
        fail::fail_point!("medic-store::etcd::write", |why| {
            let message = format!(
                "etcd: {what}: failpoint medic-store::etcd::write: {}",
                why.clone().unwrap_or_default()
            );
            if why.as_deref() == Some("unknown") {
                Ok(Written::Unknown(message))
            } else {
                Err(StoreError::Backend(message))
            }
        });
        let mut all = vec![fence.compare()];
        all.extend(compares);
        let txn = Txn::new().when(all).and_then(ops).or_else([
            TxnOp::get(self.keys.leader(), None),
            TxnOp::get(self.keys.last_id(), None),
        ]);
        let resp = match self.conn.run(Call::Write, what, move |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        }) {
            Ok(resp) => resp,
            Err(f) if f.unknown => return Ok(Written::Unknown(f.message)),
            Err(f) => return Err(f.into()),
        };
        // Test builds: the write went in and its answer was lost.
        fail::fail_point!("medic-store::etcd::reply-lost", |_| {
            Ok(Written::Unknown(format!(
                "etcd: {what}: failpoint medic-store::etcd::reply-lost"
            )))
        });
        if resp.succeeded() {
            return Ok(Written::Yes(resp));
        }
        let mut found = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let leader = found.next().flatten();
        let last = found.next().flatten();
        match leader {
            Some(kv) if kv.create_revision() == fence.revision => {}
            Some(kv) => {
                return Err(StoreError::NotLeader {
                    detail: format!(
                        "the leader key {} belongs to {:?} since revision {}, not to this \
                         coordinator's campaign at revision {}",
                        fence.key,
                        String::from_utf8_lossy(kv.value()),
                        kv.create_revision(),
                        fence.revision
                    ),
                });
            }
            None => {
                return Err(StoreError::NotLeader {
                    detail: format!(
                        "the leader key {} is gone (this coordinator's lease ended)",
                        fence.key
                    ),
                });
            }
        }
        match last {
            Some(kv) => Ok(Written::Conflict(self.parse_last_id(kv.value())?)),
            None => Err(self.corrupt("the meta keys have no last_id")),
        }
    }

    /// Whether the append of `entries` after `last` is in etcd: `last_id`
    /// moved to its last entry, and that entry holds `bytes`. A linearizable
    /// read, so it sees every write etcd acknowledged to anyone.
    fn appended(&self, last: u64, count: u64, bytes: &[u8]) -> Result<Option<u64>, StoreError> {
        let meta = self.read_meta()?;
        let new_last = last + count;
        if meta.last_id != new_last {
            return Ok(Some(meta.last_id));
        }
        let resp = self.get(self.keys.log(new_last), "read back an entry")?;
        Ok(
            if resp.kvs().first().is_some_and(|kv| kv.value() == bytes) {
                None
            } else {
                Some(meta.last_id)
            },
        )
    }

    /// Groups `puts` into transactions within etcd's limits, keeping room
    /// for `reserved_ops` more operations in the last one.
    fn group(&self, puts: Vec<(String, Vec<u8>)>, reserved_ops: usize) -> Vec<Vec<TxnOp>> {
        let max_ops = self.config.max_txn_ops.saturating_sub(reserved_ops).max(1);
        let max_bytes = self.max_value_bytes();
        let mut groups: Vec<Vec<TxnOp>> = vec![Vec::new()];
        let mut bytes = 0;
        for (key, value) in puts {
            let size = key.len() + value.len();
            let full = groups
                .last()
                .is_some_and(|g| !g.is_empty() && (g.len() >= max_ops || bytes + size > max_bytes));
            if full {
                groups.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(g) = groups.last_mut() {
                g.push(TxnOp::put(key, value, None));
            }
        }
        groups
    }

    fn max_value_bytes(&self) -> usize {
        self.config
            .max_txn_bytes
            .saturating_sub(TXN_OVERHEAD)
            .max(1)
    }

    /// One attempt at an append after `last`: `Ok(Err(found))` when another
    /// writer with the same fence moved `last_id` to `found` first.
    fn try_append(
        &self,
        fence: &Fence,
        last: u64,
        records: &[(Time, Record)],
    ) -> Result<Result<Vec<Entry>, u64>, StoreError> {
        let mut entries = Vec::with_capacity(records.len());
        let mut puts = Vec::with_capacity(records.len());
        for (i, (at, record)) in records.iter().enumerate() {
            let entry = Entry {
                id: last + 1 + i as u64,
                at: *at,
                record: record.clone(),
            };
            let bytes = serde_json::to_vec(&entry).map_err(|e| {
                StoreError::Backend(format!("cannot encode log entry {}: {e}", entry.id))
            })?;
            let key = self.keys.log(entry.id);
            if key.len() + bytes.len() > self.max_value_bytes() {
                return Err(StoreError::TooLarge {
                    detail: format!(
                        "log entry {} is {} bytes, more than one etcd request may carry \
                         ({} bytes with room for the transaction)",
                        entry.id,
                        bytes.len(),
                        self.max_value_bytes()
                    ),
                });
            }
            puts.push((key, bytes));
            entries.push(entry);
        }
        let new_last = last + records.len() as u64;
        let final_bytes = puts.last().map(|(_, b)| b.clone()).unwrap_or_default();
        let mut groups = self.group(puts, 1);
        if let Some(g) = groups.last_mut() {
            g.push(TxnOp::put(self.keys.last_id(), pad(new_last), None));
        }
        let n = groups.len();
        let started = Instant::now();
        // Whether an earlier attempt at the last transaction may have gone
        // in: then a conflict may be that attempt's own success.
        let mut maybe_in = false;
        for (g, ops) in groups.into_iter().enumerate() {
            loop {
                let unchanged = Compare::value(self.keys.last_id(), CompareOp::Equal, pad(last));
                match self.fenced_write(fence, vec![unchanged], ops.clone(), "append")? {
                    Written::Yes(_) => break,
                    Written::Conflict(found) if maybe_in && found == new_last => {
                        return match self.appended(last, records.len() as u64, &final_bytes)? {
                            None => Ok(Ok(entries)),
                            Some(found) => Ok(Err(found)),
                        };
                    }
                    Written::Conflict(found) => return Ok(Err(found)),
                    // The member broke off mid-request. The pieces before
                    // the last lie past `last_id`, unseen: writing them
                    // again is harmless. The last one moves `last_id`: it
                    // went in if `last_id` moved to this batch's end with
                    // this batch's entry there; if `last_id` has not moved
                    // it is sent again, and its comparison keeps a late
                    // arrival of the first attempt from applying twice.
                    // The read-back is always made; sending again stops
                    // after two request timeouts (a raft election in etcd
                    // takes about one election timeout, a request to the
                    // member that lost its leader up to a request timeout).
                    Written::Unknown(message) => {
                        let give_up = started.elapsed() >= 2 * self.config.request_timeout;
                        if g + 1 < n {
                            if give_up {
                                return Err(StoreError::Backend(message));
                            }
                            continue;
                        }
                        maybe_in = true;
                        match self.appended(last, records.len() as u64, &final_bytes)? {
                            None => return Ok(Ok(entries)),
                            Some(found) if found == last && !give_up => {
                                tracing::warn!(
                                    error = %message,
                                    "etcd: an append's outcome was unknown and it is not in \
                                     etcd; sending it again"
                                );
                            }
                            Some(found) if found == last => {
                                return Err(StoreError::Backend(message));
                            }
                            Some(found) => return Ok(Err(found)),
                        }
                    }
                }
            }
        }
        Ok(Ok(entries))
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let meta = self.read_meta()?;
        let last_id = meta.last_id;
        let (mut state, upto) = match meta.snapshot {
            Some(p) => {
                let mut bytes = Vec::new();
                let mut chunks = 0;
                let dir = self.keys.snap_generation(p.generation);
                self.scan(
                    dir.clone().into_bytes(),
                    prefix_end(&dir),
                    meta.revision,
                    false,
                    |kv| {
                        if kv.key() != self.keys.snap_chunk(p.generation, chunks).as_bytes() {
                            return Err(self.corrupt(format!(
                                "snapshot piece {chunks} of generation {} is missing",
                                p.generation
                            )));
                        }
                        bytes.extend_from_slice(kv.value());
                        chunks += 1;
                        Ok(true)
                    },
                )?;
                if chunks != p.chunks {
                    return Err(self.corrupt(format!(
                        "the snapshot after entry {} has {chunks} of its {} pieces",
                        p.upto, p.chunks
                    )));
                }
                decode_snapshot(p.upto, &bytes).map_err(|detail| self.corrupt(detail))?
            }
            None => (DurableState::default(), 0),
        };
        if upto > last_id {
            return Err(self.corrupt(format!(
                "the snapshot includes entries up to {upto}, past the last entry {last_id}"
            )));
        }
        let mut next = upto + 1;
        self.scan(
            self.keys.log(upto + 1).into_bytes(),
            self.keys.log(last_id + 1).into_bytes(),
            meta.revision,
            false,
            |kv| {
                let entry = self.decode_entry(kv)?;
                if entry.id != next {
                    return Err(self.corrupt(format!(
                        "log entry {next} is missing (found {}; last id {last_id}, \
                         snapshot up to {upto})",
                        entry.id
                    )));
                }
                if let Record::Policy(event) = &entry.record {
                    state.apply(event);
                }
                next += 1;
                Ok(true)
            },
        )?;
        if next - 1 != last_id {
            return Err(self.corrupt(format!(
                "log entries {next}..={last_id} are missing (snapshot up to {upto})"
            )));
        }
        *lock(&self.write) = Some(last_id);
        Ok(Loaded { state, last_id })
    }

    fn append(&self, records: Vec<(Time, Record)>) -> Result<Vec<Entry>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut cached = lock(&self.write);
        let fence = self.current_fence()?;
        let mut last = match *cached {
            Some(last) => last,
            None => self.read_meta()?.last_id,
        };
        // Another writer holding the same fence (a second store of this
        // coordinator) may take the ids this one meant to use. Each such
        // conflict means that writer's batch went in, so retrying makes
        // progress; it stops after a request timeout's worth of conflicts.
        let started = Instant::now();
        while started.elapsed() < self.config.request_timeout {
            // Unknown until this attempt's outcome is known.
            *cached = None;
            match self.try_append(&fence, last, &records)? {
                Ok(entries) => {
                    *cached = Some(last + records.len() as u64);
                    return Ok(entries);
                }
                Err(found) => last = found,
            }
        }
        Err(StoreError::Backend(format!(
            "append: other writers holding this coordinator's leadership kept moving \
             last_id for {:?}",
            self.config.request_timeout
        )))
    }

    fn snapshot(&self, state: &DurableState, upto: u64) -> Result<(), StoreError> {
        let bytes = encode_snapshot(state, upto)?;
        let _write = lock(&self.write);
        let fence = self.current_fence()?;
        let meta = self.read_meta()?;
        if upto > meta.last_id {
            return Err(StoreError::SnapshotRejected {
                upto,
                detail: format!("the last entry is {}", meta.last_id),
            });
        }
        let current = meta.snapshot.map_or(0, |p| p.upto);
        if upto < current {
            return Err(StoreError::SnapshotRejected {
                upto,
                detail: format!(
                    "the latest snapshot is after entry {current}, and entries before it \
                     may already be compacted away"
                ),
            });
        }
        let generation = meta.snapshot.map_or(1, |p| p.generation + 1);
        let unchanged =
            || Compare::mod_revision(self.keys.snapshot(), CompareOp::Equal, meta.snapshot_rev);
        let moved = || {
            StoreError::Backend(format!(
                "snapshot after entry {upto}: another writer holding this coordinator's leadership wrote a snapshot at the same time"
            ))
        };
        // Pieces of an earlier attempt at this generation that failed.
        let dir = self.keys.snap_generation(generation);
        let clear = TxnOp::delete(
            dir.clone(),
            Some(DeleteOptions::new().with_range(prefix_end(&dir))),
        );
        if self
            .fenced(&fence, vec![unchanged()], vec![clear], "snapshot")?
            .is_err()
        {
            return Err(moved());
        }
        let pieces: Vec<(String, Vec<u8>)> = bytes
            .chunks(self.max_value_bytes().saturating_sub(dir.len() + 16).max(1))
            .enumerate()
            .map(|(n, piece)| (self.keys.snap_chunk(generation, n), piece.to_vec()))
            .collect();
        let chunks = pieces.len();
        for ops in self.group(pieces, 0) {
            if self
                .fenced(&fence, vec![unchanged()], ops, "snapshot")?
                .is_err()
            {
                return Err(moved());
            }
        }
        let pointer = serde_json::to_vec(&SnapshotPointer {
            upto,
            generation,
            chunks,
        })
        .map_err(|e| StoreError::Backend(format!("cannot encode the snapshot pointer: {e}")))?;
        let older = TxnOp::delete(
            self.keys.snap_dir(),
            Some(DeleteOptions::new().with_range(dir)),
        );
        match self.fenced(
            &fence,
            vec![unchanged()],
            vec![TxnOp::put(self.keys.snapshot(), pointer, None), older],
            "snapshot",
        )? {
            Ok(_) => Ok(()),
            Err(_) => Err(moved()),
        }
    }

    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let meta = self.read_meta()?;
        let end = meta.last_id.saturating_add(1);
        let (start, stop) = match (query.newest_first, query.cursor) {
            (_, None) => (Bound::Unbounded, end),
            (false, Some(after)) => (Bound::Excluded(after), end),
            (true, Some(before)) => (Bound::Unbounded, before.min(end)),
        };
        let start = match start {
            Bound::Excluded(after) if after >= end => return Ok(HistoryPage::default()),
            Bound::Excluded(after) => self.keys.log(after + 1).into_bytes(),
            _ => self.keys.log_dir().into_bytes(),
        };
        let limit = query.limit.max(1);
        let mut entries = Vec::new();
        let mut scanned = 0;
        let mut last_scanned = None;
        let more = self.scan(
            start,
            self.keys.log(stop).into_bytes(),
            meta.revision,
            query.newest_first,
            |kv| {
                let entry = self.decode_entry(kv)?;
                scanned += 1;
                last_scanned = Some(entry.id);
                if matches(query, &entry) {
                    entries.push(entry);
                    if entries.len() == limit {
                        return Ok(false);
                    }
                }
                Ok(scanned < self.history_scan_limit)
            },
        )?;
        Ok(HistoryPage {
            entries,
            next_cursor: if more { last_scanned } else { None },
        })
    }

    fn compact(&self, retention: Retention, now: Time) -> Result<u64, StoreError> {
        let cutoff = now.checked_sub(retention.max_age);
        let _write = lock(&self.write);
        let fence = self.current_fence()?;
        let mut removed = 0;
        loop {
            let meta = self.read_meta()?;
            let upto = meta.snapshot.map_or(0, |p| p.upto);
            let (first, end) = (self.keys.log_dir(), self.keys.log(meta.last_id + 1));
            let revision = meta.revision;
            let count = self
                .conn
                .run(Call::Idempotent, "count log entries", move |mut c| {
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_count_only()
                        .with_revision(revision);
                    let first = first.clone();
                    async move { c.get(first, Some(options)).await }
                })?;
            let mut len = u64::try_from(count.count()).unwrap_or(0);
            let mut doomed: Option<u64> = None;
            let mut n = 0;
            let mut done = true;
            self.scan(
                self.keys.log_dir().into_bytes(),
                self.keys.log(upto + 1).into_bytes(),
                meta.revision,
                false,
                |kv| {
                    if n == self.compact_batch {
                        done = false;
                        return Ok(false);
                    }
                    let entry = self.decode_entry(kv)?;
                    let too_many = len > retention.max_entries;
                    let too_old = cutoff.is_some_and(|cutoff| entry.at < cutoff);
                    if !too_many && !too_old {
                        return Ok(false);
                    }
                    doomed = Some(entry.id);
                    n += 1;
                    len -= 1;
                    Ok(true)
                },
            )?;
            let Some(last_doomed) = doomed else {
                return Ok(removed);
            };
            let delete = TxnOp::delete(
                self.keys.log_dir(),
                Some(DeleteOptions::new().with_range(self.keys.log(last_doomed + 1))),
            );
            // Only the fence matters: entries up to the snapshot stay
            // removable whatever is appended meanwhile.
            if let Err(found) = self.fenced(&fence, Vec::new(), vec![delete], "compact")? {
                return Err(StoreError::Backend(format!(
                    "compact: unexpected conflict at last_id {found}"
                )));
            }
            removed += n as u64;
            if done {
                return Ok(removed);
            }
        }
    }
}

// === impl Leader ===

/// Leadership of a medic deployment, held through an etcd lease.
///
/// The campaign puts `P/leader` (if absent) with the candidate's name, on a
/// lease of the given TTL that a background task keeps alive every TTL/3.
/// [`Leader::is_leader`] holds while the last renewal etcd confirmed, counted
/// from when the request was *sent*, is younger than 3/4 of the TTL: so the
/// local belief ends before etcd could expire the lease (which runs at least
/// a full TTL from when etcd received that renewal), and a leader that
/// cannot reach etcd stops granting first. Once lost, it stays lost: a
/// coordinator campaigns anew and reloads state. Fencing of the store does
/// not rely on this flag but on the leader key's revision ([`Fence`]).
pub struct Leader {
    fence: Fence,
    state: Arc<Mutex<Option<Instant>>>,
    conn: Conn,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("fence", &self.fence)
            .field("is_leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

/// How long a renewal confirmed by etcd lets this process believe it leads:
/// strictly less than the lease's TTL.
fn local_validity(ttl: Duration) -> Duration {
    ttl - ttl / 4
}

impl Leader {
    /// Tries once to become leader of `store`'s prefix as `candidate` (the
    /// name followers report, e.g. its advertised address). `None` when
    /// another candidate leads.
    pub fn try_acquire(
        store: &EtcdStore,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Option<Leader>, StoreError> {
        Ok(Self::attempt(store, candidate, ttl)?.ok())
    }

    /// Campaigns until this candidate leads: when another leads, waits for
    /// its key to go (its lease ending) and tries again. Blocks for as long
    /// as another leader lives.
    pub fn campaign(
        store: &EtcdStore,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Leader, StoreError> {
        loop {
            let revision = match Self::attempt(store, candidate, ttl)? {
                Ok(leader) => return Ok(leader),
                Err(revision) => revision,
            };
            let key = store.keys.leader();
            // Until the key is deleted, or a TTL passes (then look again: a
            // watch can miss nothing, but a look costs little).
            store
                .conn
                .run(Call::Idempotent, "watch the leader key", move |mut c| {
                    let key = key.clone();
                    async move {
                        let wait = async {
                            let options = WatchOptions::new().with_start_revision(revision + 1);
                            let mut stream = c.watch(key, Some(options)).await?;
                            while let Some(resp) = stream.message().await? {
                                if resp
                                    .events()
                                    .iter()
                                    .any(|e| e.event_type() == EventType::Delete)
                                {
                                    break;
                                }
                            }
                            Ok::<(), etcd_client::Error>(())
                        };
                        match tokio::time::timeout(ttl, wait).await {
                            Ok(r) => r,
                            Err(_) => Ok(()),
                        }
                    }
                })?;
        }
    }

    /// One campaign attempt: the leader, or the revision at which another
    /// candidate's key was seen.
    fn attempt(
        store: &EtcdStore,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Result<Leader, i64>, StoreError> {
        let requested = ttl.as_secs().max(1);
        let key = store.keys.leader();
        let value = candidate.to_owned();
        let sent = Instant::now();
        // A lease granted by a first attempt that then failed is not
        // revoked: nothing uses it, and it expires after `ttl`.
        let (lease, granted, outcome) = store.conn.run(Call::Write, "campaign", move |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                let grant = c
                    .lease_grant(i64::try_from(requested).unwrap_or(i64::MAX), None)
                    .await?;
                let lease = grant.id();
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key, None)]);
                let resp = c.txn(txn).await?;
                let revision = resp.header().map_or(0, |h| h.revision());
                if !resp.succeeded() {
                    let _ = c.lease_revoke(lease).await;
                    return Ok((lease, grant.ttl(), Err(revision)));
                }
                Ok((lease, grant.ttl(), Ok(revision)))
            }
        })?;
        let revision = match outcome {
            Ok(revision) => revision,
            Err(seen) => return Ok(Err(seen)),
        };
        // etcd may grant more than asked (its minimum TTL), never less;
        // the local belief counts from the smaller.
        let ttl = Duration::from_secs(requested.min(u64::try_from(granted).unwrap_or(0)).max(1));
        let fence = Fence {
            key: store.keys.leader(),
            revision,
            lease,
        };
        let state = Arc::new(Mutex::new(Some(sent + local_validity(ttl))));
        let conn = store.conn.clone();
        let task = conn
            .handle()
            .map(|h| h.spawn(keep_alive(conn.members.clone(), lease, ttl, state.clone())));
        Ok(Ok(Leader {
            fence,
            state,
            conn,
            task,
        }))
    }

    /// Whether this process may still act as leader: false once a renewal
    /// is overdue or etcd said the lease is gone, and forever after.
    pub fn is_leader(&self) -> bool {
        lock(&self.state).is_some_and(|until| Instant::now() < until)
    }

    /// The instant this process stops believing it leads unless a renewal
    /// arrives first; `None` once lost.
    pub fn valid_until(&self) -> Option<Instant> {
        *lock(&self.state)
    }

    /// The fence for [`EtcdStore::set_fence`].
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Gives leadership up at once: revokes the lease, which deletes the
    /// leader key, so another candidate can take over without waiting.
    pub fn resign(self) -> Result<(), StoreError> {
        self.resign_within(Duration::ZERO)
    }

    /// [`Leader::resign`], trying again (every 100 ms) for up to `within`
    /// while etcd cannot take the revocation: a leader that lost its lease
    /// locally because etcd was electing a raft leader finds etcd back a
    /// moment later, and its lease, refreshed by that election, would
    /// otherwise keep the next leader waiting for a whole TTL. A lease etcd
    /// no longer knows counts as given up.
    pub fn resign_within(mut self, within: Duration) -> Result<(), StoreError> {
        self.stop();
        let lease = self.fence.lease;
        let started = Instant::now();
        loop {
            let r = self.conn.run(
                Call::Idempotent,
                "revoke the lease",
                move |mut c| async move {
                    match c.lease_revoke(lease).await {
                        Err(etcd_client::Error::GRpcStatus(s))
                            if s.code() == tonic::Code::NotFound =>
                        {
                            Ok(())
                        }
                        r => r.map(|_| ()),
                    }
                },
            );
            match r {
                Ok(()) => return Ok(()),
                Err(_) if started.elapsed() + Duration::from_millis(100) < within => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(f) => return Err(f.into()),
            }
        }
    }

    fn stop(&mut self) {
        *lock(&self.state) = None;
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Leader {
    /// Stops renewing and revokes the lease in the background (best
    /// effort: if that fails the lease still expires after its TTL).
    fn drop(&mut self) {
        if self.task.is_none() {
            return;
        }
        self.stop();
        let lease = self.fence.lease;
        let members = self.conn.members.clone();
        if let Some(h) = self.conn.handle() {
            h.spawn(async move {
                let _ = members
                    .call(Call::Idempotent, "revoke the lease", |mut c| async move {
                        c.lease_revoke(lease).await
                    })
                    .await;
            });
        }
    }
}

/// Keeps the lease alive every `ttl / 3`, moving the local deadline forward
/// on each renewal etcd confirms; marks leadership lost (for good) when the
/// deadline passes or etcd answers that the lease is gone.
///
/// A lease belongs to the cluster, not to a member: when the member the
/// keep-alive stream goes to fails, the stream is opened again at once on
/// the next member (see [`Members`]), so that one member's death costs a
/// renewal or two, well inside the lease.
async fn keep_alive(
    members: Arc<Members>,
    lease: i64,
    ttl: Duration,
    state: Arc<Mutex<Option<Instant>>>,
) {
    let interval = ttl / 3;
    // The member the stream is open on, the stream's two ends.
    let mut open: Option<(usize, etcd_client::LeaseKeeper)> = None;
    let mut responses = None;
    // Send times of renewals not yet answered, oldest first: an answer is
    // credited to the oldest, the most cautious reading.
    let mut outstanding: VecDeque<Instant> = VecDeque::new();
    let mut next_send = tokio::time::Instant::now() + interval;
    // Streams that failed in a row: once every member has had its turn,
    // wait a little between attempts instead of spinning.
    let mut failures = 0usize;
    let n = members.clients.len();
    loop {
        let Some(deadline) = *lock(&state) else {
            return;
        };
        let recv = async {
            match responses.as_mut() {
                Some(r) => etcd_client::LeaseKeepAliveStream::message(r).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                *lock(&state) = None;
                return;
            }
            _ = tokio::time::sleep_until(next_send) => {
                next_send = tokio::time::Instant::now() + interval;
                if open.is_none() {
                    let (i, mut client) = members.current();
                    match tokio::time::timeout(interval, client.lease_keep_alive(lease)).await {
                        Ok(Ok((k, r))) => {
                            members.answered(i);
                            open = Some((i, k));
                            responses = Some(r);
                            outstanding.clear();
                        }
                        Ok(Err(e)) => {
                            members.failed(i, &e);
                            failures += 1;
                            next_send = tokio::time::Instant::now() + retry_pause(failures, n, interval);
                            continue;
                        }
                        Err(_) => {
                            members.failed(i, &"no keep-alive stream within a third of the lease");
                            failures += 1;
                            continue;
                        }
                    }
                }
                let sent = Instant::now();
                let ok = match open.as_mut() {
                    Some((_, k)) => k.keep_alive().await.is_ok(),
                    None => false,
                };
                if ok {
                    outstanding.push_back(sent);
                } else if let Some((i, _)) = open.take() {
                    members.failed(i, &"the keep-alive stream closed");
                    responses = None;
                    failures += 1;
                    next_send = tokio::time::Instant::now() + retry_pause(failures, n, interval);
                }
            }
            msg = recv => match msg {
                Ok(Some(resp)) if resp.ttl() > 0 => {
                    failures = 0;
                    if let Some(sent) = outstanding.pop_front() {
                        let granted = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0));
                        let until = sent + local_validity(granted.min(ttl));
                        let mut s = lock(&state);
                        if let Some(current) = *s {
                            *s = Some(current.max(until));
                        }
                    }
                }
                Ok(Some(_)) => {
                    // TTL 0: etcd no longer knows the lease.
                    *lock(&state) = None;
                    return;
                }
                Ok(None) | Err(_) => {
                    // The member went away: renew through the next one now,
                    // rather than a third of the lease later.
                    if let Some((i, _)) = open.take() {
                        members.failed(i, &"the keep-alive stream broke");
                    }
                    responses = None;
                    failures += 1;
                    next_send = tokio::time::Instant::now() + retry_pause(failures, n, interval);
                }
            }
        }
    }
}

/// How long to wait before opening a keep-alive stream again after a
/// failure: nothing while other members are left to try, a little once the
/// attempts have gone round every member (all down, or none with a leader).
fn retry_pause(failures: usize, members: usize, interval: Duration) -> Duration {
    if failures < members {
        Duration::ZERO
    } else {
        interval / 4
    }
}
