//! The connection to etcd: the runtime every request runs on, one client
//! per member, and failover from a member that cannot take a request to
//! the next ([`Members`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::StoreError;

/// The runtime that runs every etcd request, shut down in the background
/// when the last store or leader using it drops.
pub(super) struct Runtime(pub(super) Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The members' clients and the runtime that drives them.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) rt: Arc<Runtime>,
    pub(super) members: Arc<Members>,
}

impl Conn {
    pub(super) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.rt.0.as_ref().map(|rt| rt.handle())
    }

    /// Runs `f(client)` on the store's runtime, on one member after another
    /// as [`Members::call`] allows, and waits for it. `what` names the
    /// request in errors.
    pub(super) fn run<T, F, Fut>(&self, call: Call, what: &'static str, f: F) -> Result<T, Failure>
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
pub(super) enum Call {
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
pub(super) struct Failure {
    /// Whether a write may have taken effect (see [`Call::Write`]).
    pub(super) unknown: bool,
    pub(super) message: String,
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
pub(super) struct Members {
    endpoints: Vec<String>,
    /// Each connects on first use, and again after its connection breaks.
    pub(super) clients: Vec<Client>,
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
    pub(super) async fn new(
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
    pub(super) fn current(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Moves on from member `i` (unless another request already did).
    pub(super) fn failed(&self, i: usize, why: &dyn fmt::Display) {
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
    pub(super) fn answered(&self, i: usize) {
        if self.down[i].swap(false, Ordering::Relaxed) {
            tracing::info!(endpoint = %self.endpoints[i], "etcd member answers again");
        }
    }

    /// Sends `f` to the current member, then to each other member in turn
    /// while the failure allows ([`Call`]); fails naming every endpoint
    /// tried and why it failed.
    pub(super) async fn call<T, F, Fut>(&self, call: Call, what: &str, f: F) -> Result<T, Failure>
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
