//! The embedded backend: one redb file in the state directory, guarded by an
//! exclusive lock so that two coordinators never share it.
//!
//! Layout of `medic.redb` (schema version 1):
//!
//! - `meta` (`&str` → `u64`): `schema_version`, and `last_id`, the highest
//!   id ever given to an entry. It lives here, not in the log, so ids are
//!   never reused once compaction has removed the newest old entries.
//! - `log` (`u64` → JSON bytes): every [`Entry`], keyed by its id. Ids run
//!   without gaps from the oldest entry kept to `last_id`: appends take the
//!   next ids and compaction removes only from the oldest end.
//! - `snapshot` (`u64` → JSON bytes): at most one row, the latest snapshot,
//!   keyed by the id of the last entry it includes.
//!
//! Values are JSON so that an operator can read a damaged file with generic
//! tools; they are small, and a grant is one short record.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use medic_policy::{BreakerScope, BreakerTrip, DurableState, Time};
use redb::{
    AccessGuard, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageError, TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::replay::Replay;
use crate::{
    Entry, HistoryPage, HistoryQuery, Loaded, Record, Retention, SCHEMA_VERSION, Store, StoreError,
};

/// The state file, inside the state directory.
const STATE_FILE: &str = "medic.redb";
/// The lock file, inside the state directory. It holds the owner's pid.
const LOCK_FILE: &str = "LOCK";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");

const SCHEMA_KEY: &str = "schema_version";
const LAST_ID_KEY: &str = "last_id";

/// Most log entries one `history` call reads. A filter that matches rarely
/// would otherwise read the whole log in one call; past this the page comes
/// back short, with a cursor to continue.
const HISTORY_SCAN_LIMIT: usize = 100_000;

/// Most entries one compaction transaction removes. Appends (grants) wait
/// for a write transaction in progress, so a large compaction runs as many
/// small ones.
const COMPACT_BATCH: usize = 10_000;

// === impl RedbStore ===

/// [`Store`] on a redb file in a state directory.
///
/// Opening takes an exclusive lock on `state_dir/LOCK` for the store's
/// lifetime; every append is one write transaction committed with immediate
/// durability (fsync) before it returns (I6).
pub struct RedbStore {
    // Field order is drop order: the database closes before the lock that
    // keeps other coordinators out is released.
    db: Database,
    path: PathBuf,
    watched: Watched,
    history_scan_limit: usize,
    compact_batch: usize,
    _lock: File,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store in `state_dir`, creating the directory (mode 0700 on
    /// Unix) and an empty store if there is none.
    ///
    /// Fails with [`StoreError::Locked`] while another process (or another
    /// `RedbStore` in this one) has the directory open, with
    /// [`StoreError::NewerSchema`] for a file written by a newer medic, and
    /// with [`StoreError::Corrupt`] for a file that is not medic state. It
    /// never resets or repairs medic's data: an empty state would refill
    /// budgets and forget quarantines. (redb itself recovers the last
    /// committed transaction after a crash.)
    ///
    /// Opening verifies the checksum of every page, so it reads the whole
    /// file: about 0.1 s for 140 MB of history from the page cache.
    pub fn open(state_dir: &Path) -> Result<RedbStore, StoreError> {
        create_private_dir(state_dir)?;
        let (lock, lock_existed) = lock_dir(state_dir)?;
        let path = state_dir.join(STATE_FILE);
        // Only a directory that never held medic state may start empty. A
        // file that is missing, emptied, or a link to nothing where state
        // was kept is refused: starting from nothing would refill budgets
        // and forget quarantines.
        if examine(state_dir, &path, lock_existed)? == Found::Nothing {
            create_new(state_dir, &path)?;
            tracing::warn!(
                path = %path.display(),
                "initialised a new, empty state file: this directory never held medic state"
            );
        }
        // redb trusts a cleanly closed file and reads pages without checking
        // their checksums; a file damaged since (disk, a stray write, a bad
        // restore) could then load as different state, or panic. Checking
        // every page at start-up turns that into `Corrupt`.
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| db_error(&path, e))?;
        let watched = Watched::open(&path)?;
        let store = RedbStore {
            db,
            path,
            watched,
            history_scan_limit: HISTORY_SCAN_LIMIT,
            compact_batch: COMPACT_BATCH,
            _lock: lock,
        };
        store.check_meta()?;
        Ok(store)
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the meta table of an existing file, or writes it into a new,
    /// empty one.
    fn check_meta(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let tables: Vec<String> = txn
            .list_tables()
            .map_err(|e| self.db_err(e))?
            .map(|t| t.name().to_owned())
            .collect();
        let multimap_tables = txn
            .list_multimap_tables()
            .map_err(|e| self.db_err(e))?
            .count();

        if !tables.iter().any(|t| t == META.name()) {
            return Err(self.corrupt(if tables.is_empty() && multimap_tables == 0 {
                "the file holds no medic state at all (damaged, or recovery fell back to an \
                 empty commit)"
                    .to_owned()
            } else {
                format!(
                    "it has tables {tables:?} but no `meta` table with a schema version: \
                     not a medic state file, or a damaged one"
                )
            }));
        }

        let meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
        let version = meta
            .get(SCHEMA_KEY)
            .map_err(|e| self.db_err(e))?
            .map(|v| v.value())
            .ok_or_else(|| self.corrupt("the meta table has no schema version"))?;
        let supported = u64::from(SCHEMA_VERSION);
        if version > supported {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION,
            });
        }
        if version != supported {
            return Err(self.corrupt(format!(
                "schema version {version} was never written by any medic (this build writes \
                 {SCHEMA_VERSION})"
            )));
        }
        if meta.get(LAST_ID_KEY).map_err(|e| self.db_err(e))?.is_none() {
            return Err(self.corrupt("the meta table has no last_id"));
        }
        for table in [LOG.name(), SNAPSHOT.name()] {
            if !tables.iter().any(|t| t == table) {
                return Err(self.corrupt(format!("the `{table}` table is missing")));
            }
        }
        Ok(())
    }

    /// Writes the schema of a new store.
    /// A write transaction that is durable (fsynced) when `commit` returns.
    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.db_err(e))?;
        Ok(txn)
    }

    /// Removes up to one batch of entries. Returns how many, and whether
    /// compaction is finished.
    fn compact_batch(
        &self,
        max_entries: u64,
        cutoff: Option<Time>,
    ) -> Result<(u64, bool), StoreError> {
        let txn = self.begin_write()?;
        let (doomed, done) = {
            let upto = snapshot_upto(&txn.open_table(SNAPSHOT).map_err(|e| self.db_err(e))?)
                .map_err(|e| self.db_err(e))?;
            let mut log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
            let mut len = log.len().map_err(|e| self.db_err(e))?;
            let mut doomed = Vec::new();
            let mut done = true;
            for row in log.range(..=upto).map_err(|e| self.db_err(e))? {
                let (id, value) = row.map_err(|e| self.db_err(e))?;
                if doomed.len() == self.compact_batch {
                    done = false;
                    break;
                }
                let too_many = len > max_entries;
                let too_old = match cutoff {
                    Some(cutoff) => self.decode_time(id.value(), value.value())? < cutoff,
                    None => false,
                };
                if !too_many && !too_old {
                    break;
                }
                doomed.push(id.value());
                len -= 1;
            }
            for id in &doomed {
                log.remove(id).map_err(|e| self.db_err(e))?;
            }
            (doomed.len() as u64, done)
        };
        if doomed == 0 {
            txn.abort().map_err(|e| self.db_err(e))?;
        } else {
            txn.commit().map_err(|e| self.db_err(e))?;
        }
        Ok((doomed, done))
    }

    /// One page of history from `rows`, in the order they come.
    fn page<'a>(
        &self,
        mut rows: impl Iterator<
            Item = Result<(AccessGuard<'a, u64>, AccessGuard<'a, &'static [u8]>), StorageError>,
        >,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        let limit = query.limit.max(1);
        let mut entries = Vec::new();
        let mut scanned = 0;
        let mut last_scanned = None;
        for row in rows.by_ref() {
            let (id, value) = row.map_err(|e| self.db_err(e))?;
            let entry = self.decode_entry(id.value(), value.value())?;
            scanned += 1;
            last_scanned = Some(entry.id);
            if matches(query, &entry) {
                entries.push(entry);
                if entries.len() == limit {
                    break;
                }
            }
            if scanned >= self.history_scan_limit {
                break;
            }
        }
        let more = rows
            .next()
            .transpose()
            .map_err(|e| self.db_err(e))?
            .is_some();
        Ok(HistoryPage {
            entries,
            next_cursor: if more { last_scanned } else { None },
        })
    }

    fn decode_entry(&self, id: u64, bytes: &[u8]) -> Result<Entry, StoreError> {
        crate::replay::decode_entry(id, bytes).map_err(|d| self.corrupt(d))
    }

    /// Only the time of an entry, for compaction: cheaper than the record.
    fn decode_time(&self, id: u64, bytes: &[u8]) -> Result<Time, StoreError> {
        #[derive(Deserialize)]
        struct At {
            at: Time,
        }
        serde_json::from_slice::<At>(bytes)
            .map(|a| a.at)
            .map_err(|e| self.corrupt(format!("log entry {id} cannot be decoded: {e}")))
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        db_error(&self.path, e)
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let last_id = {
            let meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            let last = meta.get(LAST_ID_KEY).map_err(|e| self.db_err(e))?;
            last.map(|v| v.value())
                .ok_or_else(|| self.corrupt("the meta table has no last_id"))?
        };

        let snapshots = txn.open_table(SNAPSHOT).map_err(|e| self.db_err(e))?;
        let (state, upto) = match snapshots.last().map_err(|e| self.db_err(e))? {
            Some((upto, bytes)) => decode_snapshot(upto.value(), bytes.value())
                .map_err(|detail| self.corrupt(detail))?,
            None => (DurableState::default(), 0),
        };
        let mut replay = Replay::new(state, upto, last_id).map_err(|d| self.corrupt(d))?;
        let log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
        let range = (Bound::Excluded(upto), Bound::Unbounded);
        for row in log.range(range).map_err(|e| self.db_err(e))? {
            let (id, bytes) = row.map_err(|e| self.db_err(e))?;
            replay.check(id.value()).map_err(|d| self.corrupt(d))?;
            let entry = self.decode_entry(id.value(), bytes.value())?;
            replay.apply(&entry).map_err(|d| self.corrupt(d))?;
        }
        replay.finish().map_err(|d| self.corrupt(d))
    }

    fn append(&self, records: Vec<(Time, Record)>) -> Result<Vec<Entry>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.begin_write()?;
        let mut entries = Vec::with_capacity(records.len());
        {
            let mut meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            let mut last_id = meta
                .get(LAST_ID_KEY)
                .map_err(|e| self.db_err(e))?
                .map(|v| v.value())
                .ok_or_else(|| self.corrupt("the meta table has no last_id"))?;
            let mut log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
            let mut bytes = Vec::new();
            for (at, record) in records {
                last_id += 1;
                let entry = Entry {
                    id: last_id,
                    at,
                    record,
                };
                bytes.clear();
                serde_json::to_writer(&mut bytes, &entry).map_err(|e| {
                    StoreError::Backend(format!("cannot encode log entry {last_id}: {e}"))
                })?;
                log.insert(last_id, bytes.as_slice())
                    .map_err(|e| self.db_err(e))?;
                entries.push(entry);
            }
            meta.insert(LAST_ID_KEY, last_id)
                .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        // A commit into a file that was deleted or replaced is durable in
        // nothing a restart would read: it is not acknowledged.
        self.watched.check(&self.path)?;
        Ok(entries)
    }

    fn snapshot(&self, state: &DurableState, upto: u64) -> Result<(), StoreError> {
        // Encoded before the write transaction: appends wait for that.
        let bytes = encode_snapshot(state, upto)?;
        let txn = self.begin_write()?;
        {
            let meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            let last_id = meta
                .get(LAST_ID_KEY)
                .map_err(|e| self.db_err(e))?
                .map(|v| v.value())
                .ok_or_else(|| self.corrupt("the meta table has no last_id"))?;
            let mut snapshots = txn.open_table(SNAPSHOT).map_err(|e| self.db_err(e))?;
            let current = snapshot_upto(&snapshots).map_err(|e| self.db_err(e))?;
            crate::replay::check_snapshot(upto, last_id, current)?;
            snapshots.retain(|_, _| false).map_err(|e| self.db_err(e))?;
            snapshots
                .insert(upto, bytes.as_slice())
                .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        self.watched.check(&self.path)
    }

    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
        let range = match (query.newest_first, query.cursor) {
            (_, None) => (Bound::Unbounded, Bound::Unbounded),
            (false, Some(after)) => (Bound::Excluded(after), Bound::Unbounded),
            (true, Some(before)) => (Bound::Unbounded, Bound::Excluded(before)),
        };
        let rows = log.range(range).map_err(|e| self.db_err(e))?;
        if query.newest_first {
            self.page(rows.rev(), query)
        } else {
            self.page(rows, query)
        }
    }

    fn compact(&self, retention: Retention, now: Time) -> Result<u64, StoreError> {
        let cutoff = now.checked_sub(retention.max_age);
        let mut removed = 0;
        loop {
            let (n, done) = self.compact_batch(retention.max_entries, cutoff)?;
            removed += n;
            if done {
                return Ok(removed);
            }
        }
    }

    fn verify(&self) -> Result<(), StoreError> {
        self.watched.check(&self.path)
    }
}

// === Helpers ===

pub(crate) fn matches(q: &HistoryQuery, e: &Entry) -> bool {
    q.since.is_none_or(|since| e.at >= since)
        && q.until.is_none_or(|until| e.at < until)
        && (q.kinds.is_empty() || q.kinds.contains(&e.record.kind()))
        && q.host.as_ref().is_none_or(|h| e.record.host() == Some(h))
        && q.action.is_none_or(|a| e.record.action() == Some(a))
}

/// The `upto` of the latest snapshot; 0 without one.
fn snapshot_upto(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, StorageError> {
    Ok(table.last()?.map_or(0, |(upto, _)| upto.value()))
}

/// A snapshot as stored. JSON object keys must be strings, and
/// `DurableState::breakers` is keyed by an enum with data
/// (`BreakerScope::Domain`), so the breakers travel beside the state as a
/// list of pairs.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    upto: u64,
    state: &'a DurableState,
    breakers: Vec<(&'a BreakerScope, &'a BreakerTrip)>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    upto: u64,
    state: DurableState,
    breakers: Vec<(BreakerScope, BreakerTrip)>,
}

pub(crate) fn encode_snapshot(state: &DurableState, upto: u64) -> Result<Vec<u8>, StoreError> {
    let mut without_breakers = state.clone();
    without_breakers.breakers.clear();
    serde_json::to_vec(&SnapshotOut {
        upto,
        state: &without_breakers,
        breakers: state.breakers.iter().collect(),
    })
    .map_err(|e| {
        StoreError::Backend(format!(
            "cannot encode the snapshot after entry {upto}: {e}"
        ))
    })
}

pub(crate) fn decode_snapshot(key: u64, bytes: &[u8]) -> Result<(DurableState, u64), String> {
    let snap: SnapshotIn = serde_json::from_slice(bytes)
        .map_err(|e| format!("the snapshot after entry {key} cannot be decoded: {e}"))?;
    if snap.upto != key {
        return Err(format!(
            "the snapshot stored after entry {key} says it is after entry {}",
            snap.upto
        ));
    }
    let mut state = snap.state;
    state.breakers.extend(snap.breakers);
    Ok((state, snap.upto))
}

/// Maps a redb error: damage and foreign files are [`StoreError::Corrupt`],
/// I/O is [`StoreError::Io`], the rest [`StoreError::Backend`].
/// Writes the meta table and creates the tables of a new state file, in
/// one durable transaction.
fn init(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(SCHEMA_KEY, u64::from(SCHEMA_VERSION))?;
        meta.insert(LAST_ID_KEY, 0)?;
        txn.open_table(LOG)?;
        txn.open_table(SNAPSHOT)?;
    }
    txn.commit()?;
    Ok(())
}

fn db_error(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    match e.into() {
        redb::Error::Corrupted(detail) => corrupt(detail),
        // redb's answer to a file that is not a redb database.
        redb::Error::Io(source) if source.kind() == io::ErrorKind::InvalidData => {
            corrupt(source.to_string())
        }
        redb::Error::Io(source) => StoreError::Io {
            path: path.to_owned(),
            source,
        },
        redb::Error::UpgradeRequired(version) => corrupt(format!(
            "redb file format {version} is not one this build reads"
        )),
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TableDoesNotExist(_)) => corrupt(e.to_string()),
        e => StoreError::Backend(e.to_string()),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What [`examine`] found where the state file belongs.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// No file, in a directory that never held medic state: a first start.
    Nothing,
    /// A non-empty file (or a link to one), for redb and `check_meta`.
    File,
}

/// The prefix of copies that [`Watched::check`] saves.
const RESCUED: &str = "medic.redb.rescued";

/// What to do about a state file that is lost, empty or not a file.
const REMEDY: &str = "Restore the state file from a backup (see the runbook, \"Recovering a \
                      lost or damaged state directory\"), or, to start with no history on \
                      purpose, move everything in the state directory away (keep it for the \
                      post-mortem) and start again";

/// Looks at where the state file belongs before redb does: redb would
/// create a missing file, and treat an empty one as a new database.
fn examine(dir: &Path, path: &Path, lock_existed: bool) -> Result<Found, StoreError> {
    let lost = |detail: String| StoreError::Lost {
        path: path.to_owned(),
        detail,
        remedy: REMEDY.to_owned(),
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut traces = leftovers(dir)?;
            if lock_existed {
                traces.insert(0, LOCK_FILE.to_owned());
            }
            if traces.is_empty() {
                return Ok(Found::Nothing);
            }
            return Err(StoreError::Lost {
                path: path.to_owned(),
                detail: format!(
                    "it does not exist, but the directory has held medic state (it has {})",
                    traces.join(", ")
                ),
                remedy: format!(
                    "{REMEDY}. If the only trace is {LOCK_FILE} and medic never ran here \
                     before (a first start cut short), remove {LOCK_FILE}"
                ),
            });
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    let (meta, what) = if meta.file_type().is_symlink() {
        let target =
            fs::read_link(path).map_or_else(|_| "?".to_owned(), |t| t.display().to_string());
        match fs::metadata(path) {
            Ok(m) => (m, format!("a symbolic link to {target}, which is")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(lost(format!(
                    "it is a symbolic link to {target}, which does not exist"
                )));
            }
            Err(e) => return Err(io_error(path)(e)),
        }
    } else {
        (meta, "it is".to_owned())
    };
    if !meta.is_file() {
        return Err(lost(format!("{what} {}, not a file", kind(&meta))));
    }
    if meta.len() == 0 {
        return Err(lost(format!(
            "{what} empty (0 bytes): it was emptied or truncated; medic never leaves an empty \
             state file"
        )));
    }
    // A coordinator whose file was deleted or replaced under it left its
    // state beside it: which of the two is the truth, only an operator
    // can say.
    let rescued: Vec<String> = leftovers(dir)?
        .into_iter()
        .filter(|n| n.starts_with(RESCUED))
        .collect();
    if !rescued.is_empty() {
        return Err(StoreError::Lost {
            path: path.to_owned(),
            detail: format!(
                "{} beside it holds what a coordinator acknowledged after its state file was \
                 deleted or replaced under it",
                rescued.join(", ")
            ),
            remedy: "Keep the file that is the truth as medic.redb (usually the rescued copy: \
                     see the runbook, \"Recovering a lost or damaged state directory\") and move \
                     the other out of the state directory"
                .to_owned(),
        });
    }
    Ok(Found::File)
}

/// medic's files other than the state file and its lock, in `dir`: traces
/// that it held state.
fn leftovers(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(STATE_FILE) {
            found.push(name.into_owned());
        }
    }
    found.sort();
    Ok(found)
}

/// A file type in words.
fn kind(meta: &fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Creates a new state file, complete: created (owner-only) and
/// initialised under a temporary name, then renamed into place, so a crash
/// during creation never leaves a file without medic's tables.
fn create_new(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let fresh = dir.join(format!("{STATE_FILE}.new"));
    let _ = fs::remove_file(&fresh);
    {
        let db = Database::create(&fresh).map_err(|e| db_error(&fresh, e))?;
        init(&db).map_err(|e| db_error(&fresh, e))?;
    }
    // The state names every host and holds every operator's reasons: owner
    // only, like its directory, whatever the umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o600)).map_err(io_error(&fresh))?;
    }
    fs::rename(&fresh, path).map_err(io_error(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// The state file as opened: its identity, and a handle that keeps its
/// content readable after it is deleted.
///
/// redb keeps writing into the file it opened. If the file is deleted, or
/// replaced under its name, commits still succeed, into a file that no
/// restart would read. [`Watched::check`] runs after every commit and
/// every tick: it turns that into [`StoreError::Lost`], and first copies
/// what the open file holds (everything acknowledged) next to it, once.
struct Watched {
    file: File,
    id: (u64, u64),
    rescued: std::sync::Mutex<Option<Result<PathBuf, String>>>,
}

impl Watched {
    fn open(path: &Path) -> Result<Watched, StoreError> {
        let file = File::open(path).map_err(io_error(path))?;
        let id = identity(&file.metadata().map_err(io_error(path))?);
        Ok(Watched {
            file,
            id,
            rescued: std::sync::Mutex::new(None),
        })
    }

    /// `Ok` while `path` names the file this store opened.
    fn check(&self, path: &Path) -> Result<(), StoreError> {
        let detail = match fs::metadata(path) {
            Ok(m) if identity(&m) == self.id => return Ok(()),
            Ok(_) => "it was replaced by another file while the coordinator ran",
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let own = self.file.metadata().map_err(io_error(path))?;
                if links(&own) == 0 {
                    "it was deleted while the coordinator ran"
                } else {
                    "it was moved away while the coordinator ran"
                }
            }
            Err(e) => return Err(io_error(path)(e)),
        };
        let mut rescued = self
            .rescued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rescued = rescued.get_or_insert_with(|| {
            let to = rescue(&self.file, path);
            match &to {
                Ok(to) => tracing::error!(
                    path = %path.display(), copy = %to.display(),
                    "{detail}; copied the state this coordinator still had open"
                ),
                Err(e) => tracing::error!(
                    path = %path.display(), error = %e,
                    "{detail}; could not copy the state this coordinator still had open"
                ),
            }
            to
        });
        let remedy = match rescued {
            Ok(to) => format!(
                "Everything acknowledged until now was still in the file this coordinator had \
                 open, and is copied to {}. Stop the coordinator, make sure nothing else uses \
                 the directory, move that copy to {} and start again",
                to.display(),
                path.display()
            ),
            Err(e) => format!(
                "Copying the file this coordinator still has open failed ({e}): while it \
                 runs, its content is readable under /proc/{}/fd/; copy it from there before \
                 stopping the coordinator. {REMEDY}",
                std::process::id()
            ),
        };
        Err(StoreError::Lost {
            path: path.to_owned(),
            detail: detail.to_owned(),
            remedy,
        })
    }
}

/// Copies the open state file to a new file beside `path`
/// (`medic.redb.rescued`, or `.rescued-N` when that exists), durably.
fn rescue(file: &File, path: &Path) -> Result<PathBuf, String> {
    use std::io::{Seek, SeekFrom};
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut n = 0;
    let (to, mut out) = loop {
        let to = dir.join(match n {
            0 => RESCUED.to_owned(),
            n => format!("{RESCUED}-{n}"),
        });
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&to) {
            Ok(out) => break (to, out),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(format!("{}: {e}", to.display())),
        }
    };
    let mut from = file;
    from.seek(SeekFrom::Start(0))
        .and_then(|_| io::copy(&mut from, &mut out))
        .and_then(|_| out.sync_all())
        .and_then(|()| File::open(dir)?.sync_all())
        .map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(to)
}

#[cfg(unix)]
fn identity(m: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

#[cfg(unix)]
fn links(m: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.nlink()
}

#[cfg(not(unix))]
fn links(_: &fs::Metadata) -> u64 {
    1
}

/// Creates `dir` (and missing parents) readable by its owner only: the
/// state holds every host name and operator reason.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

/// Takes the exclusive lock on `dir/LOCK` and writes this process's pid in
/// it, or names the pid of the holder.
///
/// The lock is `flock(2)` on Unix: it belongs to the open file, so a second
/// open in the same process is refused too.
fn lock_dir(dir: &Path) -> Result<(File, bool), StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut options = OpenOptions::new();
    // Not truncated on open: until we hold the lock, the pid in it is the
    // holder's.
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let existed = match fs::symlink_metadata(&path) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_error(&path)(e)),
    };
    let mut file = options.open(&path).map_err(io_error(&path))?;
    // Called through the trait: in method syntax, std's inherent
    // `File::try_lock` (Rust 1.89) would be picked instead of fs4's.
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".to_owned());
            return Err(StoreError::Locked {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(fs4::TryLockError::Error(source)) => return Err(io_error(&path)(source)),
    }
    file.set_len(0).map_err(io_error(&path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_error(&path))?;
    file.sync_data().map_err(io_error(&path))?;
    Ok((file, existed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use medic_policy::{Action, Denial, DenyReason, HostId};

    use super::*;

    fn t0() -> Time {
        Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn denied(host: &str) -> Record {
        Record::Denied {
            host: HostId::new(host).unwrap(),
            action: Action::RestartJob,
            denial: Denial {
                reason: DenyReason::Cooldown,
                retry_after: None,
                message: "cooldown".into(),
            },
            count: 1,
        }
    }

    fn ids(page: &HistoryPage) -> Vec<u64> {
        page.entries.iter().map(|e| e.id).collect()
    }

    #[test]
    fn history_returns_a_short_page_with_a_cursor_when_its_scan_budget_is_spent() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RedbStore::open(dir.path()).unwrap();
        store.history_scan_limit = 3;
        let records = (1..=10)
            .map(|i| (t0(), denied(if i == 5 { "rare" } else { "common" })))
            .collect();
        store.append(records).unwrap();

        let mut query = HistoryQuery {
            host: Some(HostId::new("rare").unwrap()),
            limit: 10,
            ..Default::default()
        };
        let mut pages = Vec::new();
        loop {
            let page = store.history(&query).unwrap();
            pages.push((ids(&page), page.next_cursor));
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(
            pages,
            [
                (vec![], Some(3)),
                (vec![5], Some(6)),
                (vec![], Some(9)),
                (vec![], None)
            ]
        );

        query.newest_first = true;
        query.cursor = None;
        let page = store.history(&query).unwrap();
        assert_eq!((ids(&page), page.next_cursor), (vec![], Some(8)));
        query.cursor = page.next_cursor;
        let page = store.history(&query).unwrap();
        assert_eq!((ids(&page), page.next_cursor), (vec![5], Some(5)));
    }

    #[test]
    fn large_compaction_runs_in_small_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RedbStore::open(dir.path()).unwrap();
        store.compact_batch = 4;
        store
            .append((0..10).map(|_| (t0(), denied("h1"))).collect())
            .unwrap();
        store.snapshot(&DurableState::default(), 9).unwrap();
        let all = Retention {
            max_age: Duration::ZERO,
            max_entries: 0,
        };
        assert_eq!(
            store.compact(all, t0() + Duration::from_secs(1)).unwrap(),
            9
        );
        let page = store
            .history(&HistoryQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&page), [10]);
    }
}
