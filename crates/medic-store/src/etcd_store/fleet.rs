//! The fleet-wide configuration operators push (`P/config/fleet`): read by
//! every replica, written without a fence.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::EtcdStore;
use super::conn::Call;
use crate::StoreError;

impl EtcdStore {
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
}
