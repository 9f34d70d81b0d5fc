//! Recovery and the snapshot rules, the same for every store. Recovery is
//! the state the latest snapshot left, with every log entry after it
//! applied in order. Every entry up to the last id must be there: a
//! missing one would be a lost grant or a forgotten quarantine, so a gap
//! is corruption, never skipped.

use medic_policy::DurableState;

use crate::{Entry, Loaded, Record, StoreError};

/// A recovery under way. Its errors are the details a store reports as
/// corruption.
#[derive(Debug)]
pub(crate) struct Replay {
    state: DurableState,
    /// The last entry the snapshot includes.
    upto: u64,
    /// The entry expected next.
    next: u64,
    last_id: u64,
}

impl Replay {
    /// From a snapshot's `state`, which includes the entries up to `upto`,
    /// towards the store's `last_id`.
    pub(crate) fn new(state: DurableState, upto: u64, last_id: u64) -> Result<Self, String> {
        if upto > last_id {
            return Err(format!(
                "the snapshot includes entries up to {upto}, past the last entry {last_id}"
            ));
        }
        Ok(Self {
            state,
            upto,
            next: upto + 1,
            last_id,
        })
    }

    /// Whether `id` is the entry expected next (checked before decoding it).
    pub(crate) fn check(&self, id: u64) -> Result<(), String> {
        if id != self.next || id > self.last_id {
            return Err(format!(
                "log entry {} is missing (found {id}; last id {}, snapshot up to {})",
                self.next, self.last_id, self.upto
            ));
        }
        Ok(())
    }

    /// Applies the entry expected next.
    pub(crate) fn apply(&mut self, entry: &Entry) -> Result<(), String> {
        self.check(entry.id)?;
        if let Record::Policy(event) = &entry.record {
            self.state.apply(event);
        }
        self.next += 1;
        Ok(())
    }

    /// The recovered state, once every entry up to the last id is applied.
    pub(crate) fn finish(self) -> Result<Loaded, String> {
        if self.next - 1 != self.last_id {
            return Err(format!(
                "log entries {}..={} are missing (snapshot up to {})",
                self.next, self.last_id, self.upto
            ));
        }
        Ok(Loaded {
            state: self.state,
            last_id: self.last_id,
        })
    }
}

/// The log entry stored under `id`, decoded: it must decode, and say it is
/// entry `id`.
pub(crate) fn decode_entry(id: u64, bytes: &[u8]) -> Result<Entry, String> {
    let entry: Entry = serde_json::from_slice(bytes)
        .map_err(|e| format!("log entry {id} cannot be decoded: {e}"))?;
    if entry.id != id {
        return Err(format!(
            "log entry stored under id {id} says it is entry {}",
            entry.id
        ));
    }
    Ok(entry)
}

/// Whether a snapshot up to entry `upto` may be written, given the last
/// entry and the latest snapshot's `current` (0 for none): never past the
/// log, never behind the snapshot it would replace (entries before that
/// may be compacted away).
pub(crate) fn check_snapshot(upto: u64, last_id: u64, current: u64) -> Result<(), StoreError> {
    if upto > last_id {
        return Err(StoreError::SnapshotRejected {
            upto,
            detail: format!("the last entry is {last_id}"),
        });
    }
    if upto < current {
        return Err(StoreError::SnapshotRejected {
            upto,
            detail: format!(
                "the latest snapshot is after entry {current}, and entries before it may \
                 already be compacted away"
            ),
        });
    }
    Ok(())
}
