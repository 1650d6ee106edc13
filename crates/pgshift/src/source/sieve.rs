//! Row by row against the last committed run (`--incremental diff`, docs/incremental.md): each row's key (its key
//! fields' binary wire bytes, each with its length, as COPY sends them) and the hash of its whole tuple's wire bytes
//! (XXH64, seed 0: a specified algorithm, the same from release to release; the binary wire form of a value does not
//! depend on any session setting), compared with the previous run's key file of the range. A row is kept when its
//! key is new or its hash differs; the keys of the previous file not seen are the range's deletes.
//!
//! On a plain table each row also has a version: its `ctid` and `xmin` ([`crate::contract::sql::VERSION_COLUMNS`]),
//! 10 bytes as COPY sends them. A row whose version is the previous run's is the same row version, so its values are
//! too: a first pass reads only keys and versions ([`Sieve::screen`]), and only the rows whose version differs are
//! read whole and hashed. A version never decides that a row changed, only that it did not.
//!
//! A version's `xmin` is 32 bits, and transaction ids wrap around: a transaction 2^32 ids after the one that wrote a
//! row has the same `xmin`, and could write a new version in the row's old place. So a version proves a row unchanged
//! only when its `xmin` is outside the window of ids that may have written since the last run's read: from that
//! read's snapshot's `xmin` (each key file records it) to this read's snapshot's `xmax` ([`Horizon`]). A row in the
//! window is read whole and compared by its hash; with 2^32 ids or more since the last read, every row is.
//!
//! The window also decides without reading: a row whose `xmin` is outside it was written before the last read and
//! still is that version, so it is in the last key file as it is now. That holds only along one server's own
//! history: a snapshot restored is a new server whose transactions that were in flight at the snapshot are rolled
//! back (in the source they may commit later, with ids below that copy's snapshot `xmin`), and which may spend ids
//! of its own that the source spends again. So when the file and this read are of the same table of the same
//! database on the same running server (its [`Horizon::lineage`]: a static source read run after run, not a
//! restored copy), the first pass asks the server for only the rows in the window ([`Sieve::window_since`]); every
//! other key of the file is kept as it was, unless the range's count says keys are gone, and then a pass of keys
//! alone finds which ([`Sieve::settle_window`]). Elsewhere versions are only compared for equality, which no
//! rolled-back or re-spent id can fake: a row version of the source's is never one of the copy's.
//!
//! Lookups follow the previous file's order first: a range is read in the same order from run to run (its index's,
//! or its heap's), so the row after the last one found is nearly always the next one read, and the memory is read
//! in order. The index by key hash serves the rest.
//!
//! The key file: zstd of `PGSKEYS1` then per row `u32` key length (little-endian), the key, `u64` row hash; or of
//! `PGSKEYS2`, the same with the row's 10-byte version after each row hash, in the order the rows were read; or of
//! `PGSKEYS3`, a `PGSKEYS2` whose magic is followed by the `u64` snapshot `xmin` (with its epoch) of the read that
//! wrote it. A `PGSKEYS2` file has no such `xmin`: its versions are not used, its range's rows are hashed.

use std::collections::HashMap;
use std::hash::Hasher;

use crate::contract::incremental::DiffCounts;

const MAGIC: &[u8; 8] = b"PGSKEYS1";
const MAGIC_VERSIONED: &[u8; 8] = b"PGSKEYS2";
const MAGIC_HORIZON: &[u8; 8] = b"PGSKEYS3";

/// The transaction ids of a read's snapshot (`txid_current_snapshot`, 64 bits with the epoch): `xmin`, every id
/// below which had ended; `xmax`, the first id not yet assigned. `lineage`: a hash of the cluster's system
/// identifier, the server's start time, when its shared statistics were last reset (a crash-restart resets them),
/// the database's and the table's OIDs (0: unknown). It is the same only on the same running server: a restored
/// snapshot, a replica, a restart, a crash or another database each change it, and transaction ids are compared by
/// order only within one lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Horizon {
    pub(crate) xmin: u64,
    pub(crate) xmax: u64,
    pub(crate) lineage: u64,
}

/// The longest window the first pass filters on the server: `age()` is a 32-bit signed distance.
const SERVER_WINDOW: u64 = 1 << 30;

/// A lineage from its parts ([`Horizon::lineage`]): `server`, the system identifier, the server's start time and
/// its statistics' reset time; never 0.
pub(crate) fn lineage(server: &str, database: u32, table: u32) -> u64 {
    xxh64(format!("{server}/{database}/{table}").as_bytes()).max(1)
}

const NOT_UNIQUE: &str = "a key is in the last run's key file twice: the table's key is not unique, and a \
                          row-by-row comparison needs one; make the key in pgshift.toml unique (or its primary key), \
                          then load the table with --incremental full once";

/// The index's hasher: its keys are XXH64 values already, so hashing them again would only cost time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Index = HashMap<u64, u32, std::hash::BuildHasherDefault<Prehashed>>;

fn xxh64(bytes: &[u8]) -> u64 {
    // The one-shot form: the streaming one buffers, which costs more than the hash for a key of a few bytes.
    twox_hash::XxHash64::oneshot(0, bytes)
}

/// The previous run's keys and row hashes of a range, and what this run read of it.
pub(crate) struct Sieve {
    /// The previous key file, decompressed: the store of its entries, which `entries` index.
    raw: Vec<u8>,
    /// Where each previous entry starts in `raw` (its key length).
    entries: Vec<u32>,
    /// The key's own hash → its entry; keys whose hashes collide go to `overflow`.
    index: Index,
    overflow: HashMap<Vec<u8>, u32>,
    seen: Vec<bool>,
    /// The previous file has row versions.
    had_versions: bool,
    /// The ids that may have written a version since the previous file's read: its start (32 bits) and length;
    /// `None` when no version can prove a row unchanged (no horizon on either side, or 2^32 ids or more apart).
    window: Option<(u32, u32)>,
    /// The file and this read are of one lineage, and its window is short enough for the server to filter on
    /// ([`Self::window_since`]).
    same_lineage: bool,
    /// The first pass read only the rows in the window: every other key of the file is kept at [`Self::finish`].
    windowed: bool,
    /// Entries a row read whole was found at (in a windowed pass, the others are kept as they were).
    touched: Vec<bool>,
    /// Keys of the windowed first pass not in the file.
    new_keys: u64,
    /// The entry after the last one found: where the next lookup looks first.
    next: u32,
    /// The rows a first pass left to read whole ([`Self::screen`]): their entries wait in `out` for their row hash,
    /// at these offsets.
    pending: HashMap<Vec<u8>, usize>,
    /// This run's key file, uncompressed.
    out: Vec<u8>,
    counts: DiffCounts,
    key: Vec<u8>,
}

/// A row version: its `ctid` (block and item, 6 bytes) and `xmin` (4 bytes), big-endian as COPY sends them.
pub(crate) type Version = [u8; 10];

impl Sieve {
    /// From the previous key file's bytes (`None`: no previous run of this range; every row is new). `versions`:
    /// this run's rows come with their versions, read in a snapshot of this horizon, and its key file keeps them.
    pub(crate) fn new(previous: Option<&[u8]>, versions: Option<Horizon>) -> Result<Self, String> {
        let out = match versions {
            Some(h) => [
                MAGIC_HORIZON.as_slice(),
                &h.xmin.to_le_bytes(),
                &h.lineage.to_le_bytes(),
            ]
            .concat(),
            None => MAGIC.to_vec(),
        };
        let mut s = Sieve {
            raw: Vec::new(),
            entries: Vec::new(),
            index: Index::default(),
            overflow: HashMap::new(),
            seen: Vec::new(),
            had_versions: false,
            window: None,
            same_lineage: false,
            windowed: false,
            touched: Vec::new(),
            new_keys: 0,
            next: 0,
            pending: HashMap::new(),
            out,
            counts: DiffCounts::default(),
            key: Vec::new(),
        };
        if let Some(compressed) = previous {
            s.raw = zstd::decode_all(compressed).map_err(|e| format!("the key file does not decompress: {e}"))?;
            let since = s.load()?;
            s.window = since.zip(versions).and_then(|(since, now)| window(since.0, now));
            s.same_lineage = since.zip(versions).is_some_and(|((from, lineage), now)| {
                lineage != 0 && lineage == now.lineage && now.xmax.saturating_sub(from) < SERVER_WINDOW
            });
        }
        Ok(s)
    }

    /// Indexes the previous file's entries, checking that each is whole and each key there once; the snapshot `xmin`
    /// and the lineage of the read that wrote it, when it records them.
    fn load(&mut self) -> Result<Option<(u64, u64)>, String> {
        let (start, since) = match &self.raw.get(..8) {
            Some(m) if m == MAGIC => (8, None),
            Some(m) if m == MAGIC_VERSIONED => (8, None),
            Some(m) if m == MAGIC_HORIZON => {
                let h = self.raw.get(8..24).ok_or("the key file ends inside its header")?;
                let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
                (24, Some((word(&h[..8]), word(&h[8..]))))
            }
            _ => return Err("the key file starts with none of PGSKEYS1, PGSKEYS2, PGSKEYS3".into()),
        };
        self.had_versions = start == 24 || self.raw.starts_with(MAGIC_VERSIONED);
        if u32::try_from(self.raw.len()).is_err() {
            return Err("the key file is over 4 GiB: split the table into more parts (--parts)".into());
        }
        let tail = 8 + if self.had_versions { 10 } else { 0 };
        // About a row per 24 bytes or more (an 8-byte key with its length, hash and version: 34).
        let rows = self.raw.len() / 24;
        self.index.reserve(rows);
        self.entries.reserve(rows);
        self.out.reserve(self.raw.len() + self.raw.len() / 16);
        let mut p = start;
        while p < self.raw.len() {
            let len = self
                .raw
                .get(p..p + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("the key file ends inside a key length")?;
            if p + 4 + len + tail > self.raw.len() {
                return Err("the key file ends inside an entry".into());
            }
            self.add(p)?;
            p += 4 + len + tail;
        }
        self.seen = vec![false; self.entries.len()];
        self.touched = vec![false; self.entries.len()];
        Ok(since)
    }

    /// Indexes the entry at `at` (whole: checked by the caller).
    fn add(&mut self, at: usize) -> Result<(), String> {
        let i = self.entries.len() as u32;
        self.entries.push(at as u32);
        let key = key_at(&self.raw, at as u32);
        match self.index.entry(xxh64(key)) {
            // A second key of one hash: found by its bytes. The same key twice: the key is not unique.
            std::collections::hash_map::Entry::Occupied(e) => {
                let first = key_at(&self.raw, self.entries[*e.get() as usize]);
                if first == key || self.overflow.insert(key.to_vec(), i).is_some() {
                    return Err(NOT_UNIQUE.into());
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
        Ok(())
    }

    fn key_of(&self, i: u32) -> &[u8] {
        key_at(&self.raw, self.entries[i as usize])
    }

    /// Entry `i`'s row hash, and its version (zeros in a file without versions).
    fn hash_and_version(&self, i: u32) -> (u64, Version) {
        let at = self.entries[i as usize] as usize;
        let p = at + 4 + key_at(&self.raw, at as u32).len();
        let hash = u64::from_le_bytes(self.raw[p..p + 8].try_into().unwrap_or_default());
        let version = match self.had_versions {
            true => self.raw[p + 8..p + 18].try_into().unwrap_or_default(),
            false => [0; 10],
        };
        (hash, version)
    }

    fn find(&mut self, key: &[u8]) -> Option<u32> {
        let next = self.next;
        if (next as usize) < self.entries.len() && self.key_of(next) == key {
            self.next += 1;
            return Some(next);
        }
        let found = match self.index.get(&xxh64(key)) {
            Some(&i) if self.key_of(i) == key => Some(i),
            _ => self.overflow.get(key).copied(),
        };
        if let Some(i) = found {
            self.next = i + 1;
        }
        found
    }

    /// Whether a first pass of keys and versions can tell the unchanged rows ([`Self::screen`]): the previous file
    /// has versions to compare with.
    pub(crate) fn screens(&self) -> bool {
        self.had_versions && self.window.is_some() && self.out.starts_with(MAGIC_HORIZON)
    }

    /// The first id of the window (its low 32 bits), when the first pass may read only the rows in it
    /// ([`crate::contract::sql::select_recent_versions`]): the file and this read are of one lineage, less than 2^30
    /// ids apart. Every row outside it is then in the file as it is now.
    pub(crate) fn window_since(&self) -> Option<u32> {
        self.window
            .filter(|_| self.same_lineage && self.screens())
            .map(|(start, _)| start)
    }

    /// After a windowed first pass ([`Self::window_since`]) of a range that holds `rows` rows now: the file's keys
    /// that are gone, counted. 0: every key of the file is there still (all marked seen); more: a pass of the range's
    /// keys must say which ([`Self::present`]). A count that cannot be is an error: the source changed while read.
    pub(crate) fn settle_window(&mut self, rows: u64) -> Result<u64, String> {
        self.windowed = true;
        let old = self.entries.len() as u64;
        let gone = (old + self.new_keys)
            .checked_sub(rows)
            .ok_or_else(|| format!("the range holds {rows} rows, more than the {old} of the last run's key file and the {} new keys of its window: the source changed while it was read", self.new_keys))?;
        if gone == 0 {
            self.seen.iter_mut().for_each(|s| *s = true);
        }
        Ok(gone)
    }

    /// A key the range holds now (a pass of keys alone, after [`Self::settle_window`] counted keys gone).
    pub(crate) fn present(&mut self, key: &[u8]) {
        if let Some(i) = self.find(key) {
            self.seen[i as usize] = true;
        }
    }

    /// The keys of the last run's file not seen: after a windowed pass's pass of keys, as many as
    /// [`Self::settle_window`] counted gone, or the source changed while it was read.
    pub(crate) fn check_gone(&self, gone: u64) -> Result<(), String> {
        let unseen = self.seen.iter().filter(|s| !**s).count() as u64;
        match unseen == gone {
            true => Ok(()),
            false => Err(format!(
                "the range's count says {gone} key(s) of the last run's key file are gone, its keys say {unseen}: \
                 the source changed while it was read, or its key is not unique"
            )),
        }
    }

    /// A windowed pass's file: the entries of the keys still there that no row read whole replaced, as they were.
    fn keep_untouched(&mut self) {
        for i in 0..self.entries.len() {
            if self.seen[i] && !self.touched[i] {
                let at = self.entries[i] as usize;
                let len = 4 + key_at(&self.raw, at as u32).len() + 18;
                self.out.extend_from_slice(&self.raw[at..at + len]);
                self.counts.unchanged += 1;
            }
        }
    }

    /// Whether a version's `xmin` is in the window of ids that may have written since the previous read (or there
    /// is no window): then its version proves nothing.
    fn recent(&self, version: &Version) -> bool {
        let xmin = u32::from_be_bytes([version[6], version[7], version[8], version[9]]);
        self.window.is_none_or(|(start, len)| xmin.wrapping_sub(start) < len)
    }

    /// The first pass: a row's key (its key fields' wire bytes) and version ([`version_of`]). `false`: the row is
    /// the previous run's row version, unchanged and done; `true`: it must be read whole ([`Self::keep`]).
    pub(crate) fn screen(&mut self, key: &[u8], version: Version) -> bool {
        let found = self.find(key).map(|i| (i, self.hash_and_version(i)));
        match found {
            Some((i, (hash, v))) if v == version && !self.recent(&version) => {
                self.seen[i as usize] = true;
                // Written here: a windowed pass's finish must not keep it again.
                self.touched[i as usize] = true;
                self.counts.unchanged += 1;
                write_entry(&mut self.out, key, hash, Some(&version));
                false
            }
            other => {
                self.new_keys += u64::from(other.is_none());
                // Its place in this run's file, in read order; its row hash comes with the row.
                self.pending.insert(key.to_vec(), self.out.len() + 4 + key.len());
                write_entry(&mut self.out, key, 0, Some(&version));
                true
            }
        }
    }

    /// Forgets what [`Self::screen`] decided (the range is then read whole).
    pub(crate) fn unscreen(&mut self) {
        let header = if self.out.starts_with(MAGIC_HORIZON) { 24 } else { 8 };
        self.out.truncate(header);
        self.touched.iter_mut().for_each(|t| *t = false);
        (self.windowed, self.new_keys) = (false, 0);
        self.seen.iter_mut().for_each(|s| *s = false);
        self.counts = DiffCounts::default();
        self.pending.clear();
        self.next = 0;
    }

    /// One row read: its whole tuple's bytes, where its version fields start in it (a versioned read), and its key
    /// fields (in key order, `None` for NULL, which a key never holds). Whether the row is written (new or changed).
    pub(crate) fn keep<'a>(
        &mut self,
        tuple: &[u8],
        versions_at: Option<usize>,
        key_fields: impl Iterator<Item = Option<&'a [u8]>>,
    ) -> bool {
        self.key.clear();
        for f in key_fields {
            match f {
                Some(v) => {
                    self.key.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    self.key.extend_from_slice(v);
                }
                None => self.key.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let (hash, version) = match versions_at {
            None => (xxh64(tuple), None),
            Some(at) => row_hash_and_version(tuple, at),
        };
        let pending = match self.pending.is_empty() {
            true => None,
            false => self.pending.remove(&self.key),
        };
        match pending {
            Some(at) => {
                self.out[at..at + 8].copy_from_slice(&hash.to_le_bytes());
                if let Some(v) = &version {
                    self.out[at + 8..at + 18].copy_from_slice(v);
                }
            }
            None => write_entry(&mut self.out, &self.key, hash, version.as_ref()),
        }
        let key = std::mem::take(&mut self.key);
        let keep = match self.find(&key) {
            None => {
                self.counts.inserted += 1;
                true
            }
            Some(i) => {
                self.seen[i as usize] = true;
                self.touched[i as usize] = true;
                let changed = self.hash_and_version(i).0 != hash;
                match changed {
                    true => self.counts.updated += 1,
                    false => self.counts.unchanged += 1,
                }
                changed
            }
        };
        self.key = key;
        keep
    }

    /// The previous keys this run did not read: the range's deletes, each as its key fields' wire form (length and
    /// bytes per field, in key order).
    pub(crate) fn deleted(&self) -> Vec<&[u8]> {
        (0..self.entries.len() as u32)
            .filter(|&i| !self.seen[i as usize])
            .map(|i| self.key_of(i))
            .collect()
    }

    /// This run's key file (compressed) and the counts, the deletes counted.
    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, DiffCounts), String> {
        if self.windowed {
            self.keep_untouched();
        }
        let mut counts = self.counts;
        counts.deleted = self.seen.iter().filter(|s| !**s).count() as u64;
        let file = zstd::encode_all(self.out.as_slice(), 1).map_err(|e| format!("compressing the key file: {e}"))?;
        Ok((file, counts))
    }
}

/// The ids that may have written a version between a read whose snapshot's `xmin` was `since` and a read of snapshot
/// `now`, as 32-bit `xmin`s: from `since` (an id in progress then may have committed after) up to `now.xmax`. `None`
/// when that is 2^32 ids or more: every 32-bit `xmin` is then in it.
fn window(since: u64, now: Horizon) -> Option<(u32, u32)> {
    let len = now.xmax.checked_sub(since)?;
    u32::try_from(len).ok().map(|len| (since as u32, len))
}

/// The key of the entry at `at` of a key file (whole: checked when it was indexed).
fn key_at(raw: &[u8], at: u32) -> &[u8] {
    let at = at as usize;
    let len = u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as usize;
    &raw[at + 4..at + 4 + len]
}

fn write_entry(out: &mut Vec<u8>, key: &[u8], hash: u64, version: Option<&Version>) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&hash.to_le_bytes());
    if let Some(v) = version {
        out.extend_from_slice(v);
    }
}

/// A row's version from its two version fields as COPY sends them (each field's length and bytes: 4 + 6, 4 + 4).
/// Fields of other lengths give all zeros, which no row's version is (a `ctid`'s item is never 0): never "the
/// same version".
pub(crate) fn version_of(fields: &[u8]) -> Version {
    let mut v = [0; 10];
    if fields.len() == 18 && fields[..4] == 6i32.to_be_bytes() && fields[10..14] == 4i32.to_be_bytes() {
        v[..6].copy_from_slice(&fields[4..10]);
        v[6..].copy_from_slice(&fields[14..18]);
    }
    v
}

/// A versioned tuple's row hash and version: the hash is of the tuple as it would be without its two version fields
/// (the field count less two, then the fields before `at`), so it is the same as an unversioned read's.
fn row_hash_and_version(tuple: &[u8], at: usize) -> (u64, Option<Version>) {
    let count = i16::from_be_bytes([tuple[0], tuple[1]]) - 2;
    let mut h = twox_hash::XxHash64::with_seed(0);
    h.write(&count.to_be_bytes());
    h.write(&tuple[2..at]);
    (h.finish(), Some(version_of(&tuple[at..])))
}

/// A deleted key's tuple as COPY would send it: `wire` fields, the key's (its wire form, field by field, at
/// `positions`) and NULL for every other.
pub(crate) fn delete_tuple(key: &[u8], positions: &[usize], wire: usize) -> Result<Vec<u8>, String> {
    let mut fields: Vec<Option<&[u8]>> = vec![None; wire];
    let mut p = 0;
    for &at in positions {
        let len = key
            .get(p..p + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("a key of the key file ends inside a field length")?;
        p += 4;
        if len >= 0 {
            let v = key
                .get(p..p + len as usize)
                .ok_or("a key of the key file ends inside a field")?;
            *fields.get_mut(at).ok_or("a key field past the tuple")? = Some(v);
            p += len as usize;
        }
    }
    let mut out = (wire as i16).to_be_bytes().to_vec();
    for f in fields {
        match f {
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The snapshots of two reads in a row: rows written by transaction 7 are older than both.
    const H1: Horizon = Horizon {
        xmin: 10,
        xmax: 12,
        lineage: 0,
    };
    const H2: Horizon = Horizon {
        xmin: 20,
        xmax: 25,
        lineage: 0,
    };

    /// Inserted, updated, deleted, unchanged.
    fn tally(c: &DiffCounts) -> (u64, u64, u64, u64) {
        (c.inserted, c.updated, c.deleted, c.unchanged)
    }

    fn wire(v: &[u8]) -> Vec<u8> {
        let mut out = (v.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn rows_are_kept_when_new_or_changed_and_unseen_keys_are_deletes() {
        let mut first = Sieve::new(None, None).unwrap();
        for (k, row) in [(b"1", b"a"), (b"2", b"b"), (b"3", b"c")] {
            assert!(first.keep(row, None, [Some(&k[..])].into_iter()));
        }
        let (file, counts) = first.finish().unwrap();
        assert_eq!(counts.inserted, 3);
        let mut second = Sieve::new(Some(&file), None).unwrap();
        assert!(!second.keep(b"a", None, [Some(&b"1"[..])].into_iter()), "unchanged");
        assert!(second.keep(b"B", None, [Some(&b"2"[..])].into_iter()), "updated");
        assert!(second.keep(b"d", None, [Some(&b"4"[..])].into_iter()), "inserted");
        assert_eq!(second.deleted(), vec![wire(b"3").as_slice()]);
        let (_, counts) = second.finish().unwrap();
        assert_eq!(
            counts,
            DiffCounts {
                inserted: 1,
                updated: 1,
                deleted: 1,
                unchanged: 1
            }
        );
        assert!(Sieve::new(Some(b"not zstd"), None).is_err());
        let mut twice = Sieve::new(None, None).unwrap();
        twice.keep(b"a", None, [Some(&b"1"[..])].into_iter());
        twice.keep(b"b", None, [Some(&b"1"[..])].into_iter());
        let (file, _) = twice.finish().unwrap();
        assert!(Sieve::new(Some(&file), None)
            .err()
            .unwrap_or_default()
            .contains("not unique"));
    }

    /// A tuple as COPY sends it: the field count, then each field's length and bytes.
    pub(crate) fn tuple(fields: &[&[u8]]) -> Vec<u8> {
        let mut out = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            out.extend_from_slice(&wire(f));
        }
        out
    }

    #[test]
    fn versions_decide_unchanged_rows_and_never_a_change() {
        let (ctid_a, ctid_b, xmin) = ([0, 0, 0, 1, 0, 1], [0, 0, 0, 9, 0, 2], [0, 0, 0, 7]);
        let row = |k: &[u8], v: &[u8], ctid: &[u8]| tuple(&[k, v, ctid, &xmin]);
        // The version fields start after the field count and the two fields of key and value.
        let at = |k: &[u8], v: &[u8]| 2 + 8 + k.len() + v.len();
        let mut first = Sieve::new(None, Some(H1)).unwrap();
        for k in [b"1", b"2", b"3"] {
            assert!(first.keep(&row(k, b"a", &ctid_a), Some(at(k, b"a")), [Some(&k[..])].into_iter()));
        }
        // The row hash of a versioned read is the unversioned read's: older key files still compare.
        let mut plain = Sieve::new(Some(&first.finish().unwrap().0), None).unwrap();
        assert!(!plain.keep(&tuple(&[b"1", b"a"]), None, [Some(&b"1"[..])].into_iter()));

        let mut first = Sieve::new(None, Some(H1)).unwrap();
        for k in [b"1", b"2", b"3"] {
            first.keep(&row(k, b"a", &ctid_a), Some(at(k, b"a")), [Some(&k[..])].into_iter());
        }
        let (file, _) = first.finish().unwrap();
        let version = |ctid: &[u8]| version_of(&[wire(ctid), wire(&xmin)].concat());
        let mut s = Sieve::new(Some(&file), Some(H2)).unwrap();
        assert!(s.screens());
        assert!(
            !s.screen(&wire(b"1"), version(&ctid_a)),
            "same version: unchanged, decided"
        );
        assert!(s.screen(&wire(b"2"), version(&ctid_b)), "another version: read whole");
        assert!(s.screen(&wire(b"4"), version(&ctid_a)), "a new key: read whole");
        // Read whole: key 2 has its old values (a new version of the same row), key 4 is new; key 3 is gone.
        assert!(!s.keep(
            &row(b"2", b"a", &ctid_b),
            Some(at(b"2", b"a")),
            [Some(&b"2"[..])].into_iter()
        ));
        assert!(s.keep(
            &row(b"4", b"d", &ctid_b),
            Some(at(b"4", b"d")),
            [Some(&b"4"[..])].into_iter()
        ));
        assert_eq!(s.deleted(), vec![wire(b"3").as_slice()]);
        let (file, counts) = s.finish().unwrap();
        assert_eq!(tally(&counts), (1, 0, 1, 2));
        // The new file has every row read, with its version: key 2's is its new one.
        let mut next = Sieve::new(Some(&file), Some(H2)).unwrap();
        assert!(!next.screen(&wire(b"2"), version(&ctid_b)));
        assert!(!next.screen(&wire(b"1"), version(&ctid_a)));
        next.unscreen();
        assert_eq!(next.deleted().len(), 3, "forgotten: every key unseen again");
        // An unversioned file cannot screen.
        let mut old = Sieve::new(None, None).unwrap();
        old.keep(b"x", None, [Some(&b"1"[..])].into_iter());
        assert!(!Sieve::new(Some(&old.finish().unwrap().0), Some(H2)).unwrap().screens());
    }

    #[test]
    fn a_version_proves_nothing_once_its_xmin_may_have_come_round_again() {
        let ctid = [0, 0, 0, 1, 0, 1];
        let (xmin, at) = ([0, 0, 0, 7], 2 + 8 + 2);
        let version = version_of(&[wire(&ctid), wire(&xmin)].concat());
        let file_read_at = |h: Horizon| {
            let mut s = Sieve::new(None, Some(h)).unwrap();
            s.keep(
                &tuple(&[b"1", b"a", &ctid, &xmin]),
                Some(at),
                [Some(&b"1"[..])].into_iter(),
            );
            s.finish().unwrap().0
        };
        // Read last in epoch 1 (snapshot xmin 2^32 + 5): transaction 2^32 + 7, whose xmin is 7, may have written
        // since, so an xmin of 7 proves nothing now.
        let epoch1 = Horizon {
            xmin: (1 << 32) + 5,
            xmax: (1 << 32) + 6,
            lineage: 0,
        };
        let now = Horizon {
            xmin: (1 << 32) + 9,
            xmax: (1 << 32) + 10,
            lineage: 0,
        };
        let mut s = Sieve::new(Some(&file_read_at(epoch1)), Some(now)).unwrap();
        assert!(s.screens());
        assert!(
            s.screen(&wire(b"1"), version),
            "xmin 7 is in the window 5..10: read whole"
        );
        // The same file read from a snapshot before the id came round again: the version stands.
        let file = file_read_at(Horizon {
            xmin: 8,
            xmax: 9,
            lineage: 0,
        });
        let mut s = Sieve::new(
            Some(&file),
            Some(Horizon {
                xmin: 9,
                xmax: 10,
                lineage: 0,
            }),
        )
        .unwrap();
        assert!(!s.screen(&wire(b"1"), version), "xmin 7 is before the window 8..10");
        // 2^32 ids or more since the last read: no version proves anything, the first pass is not run.
        let later = Horizon {
            xmin: 8 + (1 << 32),
            xmax: 8 + (1 << 32),
            lineage: 0,
        };
        assert!(!Sieve::new(Some(&file), Some(later)).unwrap().screens());
        // A file without the xmin of its read (PGSKEYS2): its versions are not used.
        let v2 = [
            MAGIC_VERSIONED.as_slice(),
            &5u32.to_le_bytes(),
            &wire(b"1"),
            &0u64.to_le_bytes(),
            &version,
        ]
        .concat();
        let v2 = zstd::encode_all(v2.as_slice(), 1).unwrap();
        assert!(!Sieve::new(Some(&v2), Some(now)).unwrap().screens());
    }

    #[test]
    fn a_windowed_pass_keeps_every_key_outside_the_window_and_finds_the_gone_ones_by_count() {
        let ours = lineage("7301", 5, 16384);
        let at = |h: (u64, u64)| Horizon {
            xmin: h.0,
            xmax: h.1,
            lineage: ours,
        };
        let row = |k: &[u8], v: &[u8], ctid: [u8; 6], xmin: [u8; 4]| tuple(&[k, v, &ctid, &xmin]);
        let (old, xmin_old) = ([0, 0, 0, 1, 0, 1], [0, 0, 0, 7]);
        let mut first = Sieve::new(None, Some(at((10, 12)))).unwrap();
        for k in [b"1", b"2", b"3", b"4"] {
            first.keep(
                &row(k, b"a", old, xmin_old),
                Some(2 + 8 + 2),
                [Some(&k[..])].into_iter(),
            );
        }
        let file = first.finish().unwrap().0;
        let other = Horizon {
            lineage: lineage("7302", 5, 16384),
            ..at((20, 25))
        };
        assert_eq!(
            Sieve::new(Some(&file), Some(other)).unwrap().window_since(),
            None,
            "another database"
        );
        let unknown = Horizon {
            lineage: 0,
            ..at((20, 25))
        };
        assert_eq!(Sieve::new(Some(&file), Some(unknown)).unwrap().window_since(), None);

        // Since: key 2 updated and key 5 inserted (transactions 21 and 22), key 4 deleted. The server sends the
        // rows of the window only: 2 and 5.
        let mut s = Sieve::new(Some(&file), Some(at((20, 25)))).unwrap();
        assert_eq!(s.window_since(), Some(10));
        let (new, xmin_new) = ([0, 0, 0, 9, 0, 1], [0, 0, 0, 21]);
        let version = version_of(&[wire(&new), wire(&xmin_new)].concat());
        assert!(s.screen(&wire(b"2"), version));
        assert!(s.screen(&wire(b"5"), version));
        assert_eq!(s.settle_window(4), Ok(1), "4 rows now: 4 + 1 new - 4, one key gone");
        for k in [b"1", b"2", b"3", b"5"] {
            s.present(&wire(k));
        }
        assert!(s.keep(
            &row(b"2", b"b", new, xmin_new),
            Some(2 + 8 + 2),
            [Some(&b"2"[..])].into_iter()
        ));
        assert!(s.keep(
            &row(b"5", b"e", new, xmin_new),
            Some(2 + 8 + 2),
            [Some(&b"5"[..])].into_iter()
        ));
        assert_eq!(s.deleted(), vec![wire(b"4").as_slice()]);
        let (file, counts) = s.finish().unwrap();
        assert_eq!(tally(&counts), (1, 1, 1, 2));

        // Nothing since; the server's filter also sent key 1, an old row whose 32-bit xmin came round into its
        // window (the filter's end is the next id when it ran, past the snapshot's): its version stands, and the
        // file holds it once.
        let mut s = Sieve::new(Some(&file), Some(at((30, 31)))).unwrap();
        assert_eq!(s.window_since(), Some(20));
        assert!(!s.screen(&wire(b"1"), version_of(&[wire(&old), wire(&xmin_old)].concat())));
        assert_eq!(s.settle_window(4), Ok(0));
        assert!(s.deleted().is_empty());
        let (file, counts) = s.finish().unwrap();
        assert_eq!((counts.unchanged, counts.deleted), (4, 0));
        let again = Sieve::new(Some(&file), Some(at((40, 41)))).unwrap();
        assert_eq!(again.entries.len(), 4, "each key once");
        // A pass of keys that finds fewer gone than counted: the source changed, or the key is not unique.
        let mut s = Sieve::new(Some(&file), Some(at((40, 41)))).unwrap();
        assert_eq!(s.settle_window(3), Ok(1));
        for k in [b"1", b"2", b"3", b"5"] {
            s.present(&wire(k));
        }
        assert!(s.check_gone(1).is_err());
        let mut s = Sieve::new(Some(&file), Some(at((40, 41)))).unwrap();
        assert!(
            s.settle_window(5).is_err(),
            "more rows than the file and the window hold"
        );
    }

    #[test]
    fn keys_whose_hashes_collide_are_told_apart_by_their_bytes() {
        let mut s = Sieve::new(None, None).unwrap();
        s.keep(b"x", None, [Some(&b"k1"[..])].into_iter());
        s.keep(b"y", None, [Some(&b"k2"[..])].into_iter());
        let (file, _) = s.finish().unwrap();
        let mut s = Sieve::new(Some(&file), None).unwrap();
        // Force a collision: both keys under one index entry.
        let h = xxh64(&wire(b"k1"));
        let k2 = s.find(&wire(b"k2")).unwrap();
        let k1 = s.index.insert(h, k2).unwrap();
        s.overflow.insert(wire(b"k1"), k1);
        assert_eq!(s.find(&wire(b"k1")), Some(k1));
        assert_eq!(s.find(&wire(b"k2")), Some(k2));
    }
}
