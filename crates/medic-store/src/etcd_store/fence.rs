//! Fencing and transactions: the [`Fence`] every write compares, fenced
//! transactions and what became of them, and grouping writes within
//! etcd's transaction limits (see "Fencing" and "Atomicity" in [`super`]).

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::EtcdStore;
use super::conn::Call;
use crate::StoreError;

/// Room left in a request for the comparisons, keys and framing.
const TXN_OVERHEAD: usize = 16 * 1024;

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

/// What became of a fenced transaction.
pub(super) enum Written {
    /// Its comparisons held and it was applied.
    Yes(TxnResponse),
    /// The fence held but `last_id` was this, not as compared.
    Conflict(u64),
    /// The member broke off before answering (the message says how).
    Unknown(String),
}

impl EtcdStore {
    /// Runs a fenced transaction: `compares` after the fence's, `ops` if all
    /// hold. On failure, tells why: [`StoreError::NotLeader`] when the
    /// leader key is not the fence's, else `Ok(Err(last_id))`, the
    /// `last_id` found (another writer with the same fence moved it). A
    /// transaction whose outcome is unknown is an error.
    pub(super) fn fenced(
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
    pub(super) fn fenced_write(
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

    /// Groups `puts` into transactions within etcd's limits, keeping room
    /// for `reserved_ops` more operations in the last one.
    pub(super) fn group(
        &self,
        puts: Vec<(String, Vec<u8>)>,
        reserved_ops: usize,
    ) -> Vec<Vec<TxnOp>> {
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

    pub(super) fn max_value_bytes(&self) -> usize {
        self.config
            .max_txn_bytes
            .saturating_sub(TXN_OVERHEAD)
            .max(1)
    }
}
