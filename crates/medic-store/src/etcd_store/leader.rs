//! Leader election: the campaign for the leader key, the lease that holds
//! it and its keep-alive, and who leads now.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};

use super::conn::{Call, Conn, Members};
use super::{EtcdStore, Fence, lock};
use crate::StoreError;

impl EtcdStore {
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
