//! The log and its snapshots as [`Store`]: loading, appending (in several
//! transactions when a batch is large), snapshots in pieces, history pages
//! and compaction.

use std::ops::Bound;
use std::time::Instant;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, SortOrder, SortTarget, TxnOp,
};
use medic_policy::{DurableState, Time};

use super::conn::Call;
use super::fence::{Fence, Written};
use super::keys::{pad, prefix_end};
use super::meta::SnapshotPointer;
use super::{EtcdStore, lock};
use crate::redb_store::{decode_snapshot, encode_snapshot, matches};
use crate::replay::Replay;
use crate::{Entry, HistoryPage, HistoryQuery, Loaded, Record, Retention, Store, StoreError};

/// Keys per range request: well under gRPC's 4 MiB response limit for
/// entries of a few KiB.
const PAGE: i64 = 256;

impl EtcdStore {
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
        crate::replay::decode_entry(id, kv.value()).map_err(|d| self.corrupt(d))
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
        let (state, upto) = match meta.snapshot {
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
        let mut replay = Replay::new(state, upto, last_id).map_err(|d| self.corrupt(d))?;
        self.scan(
            self.keys.log(upto + 1).into_bytes(),
            self.keys.log(last_id + 1).into_bytes(),
            meta.revision,
            false,
            |kv| {
                let entry = self.decode_entry(kv)?;
                replay.apply(&entry).map_err(|d| self.corrupt(d))?;
                Ok(true)
            },
        )?;
        let loaded = replay.finish().map_err(|d| self.corrupt(d))?;
        *lock(&self.write) = Some(last_id);
        Ok(loaded)
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
        let current = meta.snapshot.map_or(0, |p| p.upto);
        crate::replay::check_snapshot(upto, meta.last_id, current)?;
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
