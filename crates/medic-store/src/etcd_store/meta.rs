//! The meta keys: the schema version, `last_id` and the snapshot pointer;
//! checking them at start (or creating an empty store), and reading them at
//! one revision.

use etcd_client::{Compare, CompareOp, GetOptions, GetResponse, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::EtcdStore;
use super::conn::Call;
use super::keys::{pad, prefix_end};
use crate::{SCHEMA_VERSION, StoreError};

/// Which snapshot is current.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(super) struct SnapshotPointer {
    pub(super) upto: u64,
    pub(super) generation: u64,
    pub(super) chunks: usize,
}

/// The meta keys as read at one revision.
pub(super) struct Meta {
    pub(super) revision: i64,
    pub(super) last_id: u64,
    pub(super) snapshot: Option<SnapshotPointer>,
    /// `mod_revision` of `P/meta/snapshot`, 0 when absent.
    pub(super) snapshot_rev: i64,
}

impl EtcdStore {
    /// Checks the schema of existing state, or creates an empty store.
    pub(super) fn check_meta(&self) -> Result<(), StoreError> {
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

    pub(super) fn parse_last_id(&self, v: &[u8]) -> Result<u64, StoreError> {
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
    pub(super) fn read_meta(&self) -> Result<Meta, StoreError> {
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
}
