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
//! Lookups follow the previous file's order first: a range is read in the same order from run to run (its index's,
//! or its heap's), so the row after the last one found is nearly always the next one read, and the memory is read
//! in order. The index by key hash serves the rest.
//!
//! The key file: zstd of `PGSKEYS1` then per row `u32` key length (little-endian), the key, `u64` row hash; or of
//! `PGSKEYS2`, the same with the row's 10-byte version after each row hash, in the order the rows were read.

use std::collections::HashMap;
use std::hash::Hasher;

use crate::contract::incremental::DiffCounts;

const MAGIC: &[u8; 8] = b"PGSKEYS1";
const MAGIC_VERSIONED: &[u8; 8] = b"PGSKEYS2";

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
    /// this run's rows come with their versions, and its key file keeps them.
    pub(crate) fn new(previous: Option<&[u8]>, versions: bool) -> Result<Self, String> {
        let mut s = Sieve {
            raw: Vec::new(),
            entries: Vec::new(),
            index: Index::default(),
            overflow: HashMap::new(),
            seen: Vec::new(),
            had_versions: false,
            next: 0,
            pending: HashMap::new(),
            out: if versions { MAGIC_VERSIONED } else { MAGIC }.to_vec(),
            counts: DiffCounts::default(),
            key: Vec::new(),
        };
        if let Some(compressed) = previous {
            s.raw = zstd::decode_all(compressed).map_err(|e| format!("the key file does not decompress: {e}"))?;
            s.load()?;
        }
        Ok(s)
    }

    /// Indexes the previous file's entries, checking that each is whole and each key there once.
    fn load(&mut self) -> Result<(), String> {
        self.had_versions = match &self.raw.get(..8) {
            Some(m) if m == MAGIC => false,
            Some(m) if m == MAGIC_VERSIONED => true,
            _ => return Err("the key file starts with neither PGSKEYS1 nor PGSKEYS2".into()),
        };
        if u32::try_from(self.raw.len()).is_err() {
            return Err("the key file is over 4 GiB: split the table into more parts (--parts)".into());
        }
        let tail = 8 + if self.had_versions { 10 } else { 0 };
        // About a row per 24 bytes or more (an 8-byte key with its length, hash and version: 34).
        let rows = self.raw.len() / 24;
        self.index.reserve(rows);
        self.entries.reserve(rows);
        self.out.reserve(self.raw.len() + self.raw.len() / 16);
        let mut p = 8;
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
        Ok(())
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
        self.had_versions && self.out.starts_with(MAGIC_VERSIONED)
    }

    /// The first pass: a row's key (its key fields' wire bytes) and version ([`version_of`]). `false`: the row is
    /// the previous run's row version, unchanged and done; `true`: it must be read whole ([`Self::keep`]).
    pub(crate) fn screen(&mut self, key: &[u8], version: Version) -> bool {
        let found = self.find(key).map(|i| (i, self.hash_and_version(i)));
        match found {
            Some((i, (hash, v))) if v == version => {
                self.seen[i as usize] = true;
                self.counts.unchanged += 1;
                write_entry(&mut self.out, key, hash, Some(&version));
                false
            }
            _ => {
                // Its place in this run's file, in read order; its row hash comes with the row.
                self.pending.insert(key.to_vec(), self.out.len() + 4 + key.len());
                write_entry(&mut self.out, key, 0, Some(&version));
                true
            }
        }
    }

    /// Forgets what [`Self::screen`] decided (the range is then read whole).
    pub(crate) fn unscreen(&mut self) {
        self.out.truncate(MAGIC.len());
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
    pub(crate) fn finish(self) -> Result<(Vec<u8>, DiffCounts), String> {
        let mut counts = self.counts;
        counts.deleted = self.seen.iter().filter(|s| !**s).count() as u64;
        let file = zstd::encode_all(self.out.as_slice(), 1).map_err(|e| format!("compressing the key file: {e}"))?;
        Ok((file, counts))
    }
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

    fn wire(v: &[u8]) -> Vec<u8> {
        let mut out = (v.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn rows_are_kept_when_new_or_changed_and_unseen_keys_are_deletes() {
        let mut first = Sieve::new(None, false).unwrap();
        for (k, row) in [(b"1", b"a"), (b"2", b"b"), (b"3", b"c")] {
            assert!(first.keep(row, None, [Some(&k[..])].into_iter()));
        }
        let (file, counts) = first.finish().unwrap();
        assert_eq!(counts.inserted, 3);
        let mut second = Sieve::new(Some(&file), false).unwrap();
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
        assert!(Sieve::new(Some(b"not zstd"), false).is_err());
        let mut twice = Sieve::new(None, false).unwrap();
        twice.keep(b"a", None, [Some(&b"1"[..])].into_iter());
        twice.keep(b"b", None, [Some(&b"1"[..])].into_iter());
        let (file, _) = twice.finish().unwrap();
        assert!(Sieve::new(Some(&file), false)
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
        let mut first = Sieve::new(None, true).unwrap();
        for k in [b"1", b"2", b"3"] {
            assert!(first.keep(&row(k, b"a", &ctid_a), Some(at(k, b"a")), [Some(&k[..])].into_iter()));
        }
        // The row hash of a versioned read is the unversioned read's: older key files still compare.
        let mut plain = Sieve::new(Some(&first.finish().unwrap().0), false).unwrap();
        assert!(!plain.keep(&tuple(&[b"1", b"a"]), None, [Some(&b"1"[..])].into_iter()));

        let mut first = Sieve::new(None, true).unwrap();
        for k in [b"1", b"2", b"3"] {
            first.keep(&row(k, b"a", &ctid_a), Some(at(k, b"a")), [Some(&k[..])].into_iter());
        }
        let (file, _) = first.finish().unwrap();
        let version = |ctid: &[u8]| version_of(&[wire(ctid), wire(&xmin)].concat());
        let mut s = Sieve::new(Some(&file), true).unwrap();
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
        assert_eq!(
            (counts.inserted, counts.updated, counts.deleted, counts.unchanged),
            (1, 0, 1, 2)
        );
        // The new file has every row read, with its version: key 2's is its new one.
        let mut next = Sieve::new(Some(&file), true).unwrap();
        assert!(!next.screen(&wire(b"2"), version(&ctid_b)));
        assert!(!next.screen(&wire(b"1"), version(&ctid_a)));
        next.unscreen();
        assert_eq!(next.deleted().len(), 3, "forgotten: every key unseen again");
        // An unversioned file cannot screen.
        let mut old = Sieve::new(None, false).unwrap();
        old.keep(b"x", None, [Some(&b"1"[..])].into_iter());
        assert!(!Sieve::new(Some(&old.finish().unwrap().0), true).unwrap().screens());
    }

    #[test]
    fn keys_whose_hashes_collide_are_told_apart_by_their_bytes() {
        let mut s = Sieve::new(None, false).unwrap();
        s.keep(b"x", None, [Some(&b"k1"[..])].into_iter());
        s.keep(b"y", None, [Some(&b"k2"[..])].into_iter());
        let (file, _) = s.finish().unwrap();
        let mut s = Sieve::new(Some(&file), false).unwrap();
        // Force a collision: both keys under one index entry.
        let h = xxh64(&wire(b"k1"));
        let k2 = s.find(&wire(b"k2")).unwrap();
        let k1 = s.index.insert(h, k2).unwrap();
        s.overflow.insert(wire(b"k1"), k1);
        assert_eq!(s.find(&wire(b"k1")), Some(k1));
        assert_eq!(s.find(&wire(b"k2")), Some(k2));
    }
}
