//! Row by row against the last committed run (`--incremental diff`, docs/incremental.md): each row's key (its key
//! fields' binary wire bytes, each with its length, as COPY sends them) and the hash of its whole tuple's wire bytes
//! (XXH64, seed 0: a specified algorithm, the same from release to release; the binary wire form of a value does not
//! depend on any session setting), compared with the previous run's key file of the range. A row is kept when its
//! key is new or its hash differs; the keys of the previous file not seen are the range's deletes.
//!
//! The key file: zstd of `PGSKEYS1`, then per row `u32` key length (little-endian), the key, `u64` row hash.

use std::collections::HashMap;
use std::hash::Hasher;

use crate::contract::incremental::DiffCounts;

const MAGIC: &[u8; 8] = b"PGSKEYS1";

const NOT_UNIQUE: &str = "a key is in the last run's key file twice: the table's key is not unique, and a \
                          row-by-row comparison needs one; make the key in pgshift.toml unique (or its primary key), \
                          then load the table with --incremental full once";

fn xxh64(bytes: &[u8]) -> u64 {
    let mut h = twox_hash::XxHash64::with_seed(0);
    h.write(bytes);
    h.finish()
}

/// The previous run's keys and row hashes of a range, and what this run read of it.
pub(crate) struct Sieve {
    /// Every previous key, end to end; `entries` index it.
    blob: Vec<u8>,
    entries: Vec<(usize, u32, u64)>,
    /// The key's own hash → its entry; keys whose hashes collide go to `overflow`.
    index: HashMap<u64, u32>,
    overflow: HashMap<Vec<u8>, u32>,
    seen: Vec<bool>,
    /// This run's key file, uncompressed.
    out: Vec<u8>,
    counts: DiffCounts,
    key: Vec<u8>,
}

impl Sieve {
    /// From the previous key file's bytes (`None`: no previous run of this range; every row is new).
    pub(crate) fn new(previous: Option<&[u8]>) -> Result<Self, String> {
        let mut s = Sieve {
            blob: Vec::new(),
            entries: Vec::new(),
            index: HashMap::new(),
            overflow: HashMap::new(),
            seen: Vec::new(),
            out: MAGIC.to_vec(),
            counts: DiffCounts::default(),
            key: Vec::new(),
        };
        if let Some(compressed) = previous {
            let raw = zstd::decode_all(compressed).map_err(|e| format!("the key file does not decompress: {e}"))?;
            s.load(&raw)?;
        }
        Ok(s)
    }

    fn load(&mut self, raw: &[u8]) -> Result<(), String> {
        let body = raw
            .strip_prefix(MAGIC.as_slice())
            .ok_or("the key file does not start with PGSKEYS1")?;
        let mut p = 0;
        while p < body.len() {
            let len = body
                .get(p..p + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("the key file ends inside a key length")?;
            let key = body.get(p + 4..p + 4 + len).ok_or("the key file ends inside a key")?;
            let hash = body
                .get(p + 4 + len..p + 12 + len)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                .ok_or("the key file ends inside a row hash")?;
            let at = self.blob.len();
            self.blob.extend_from_slice(key);
            let i = self.entries.len() as u32;
            self.entries.push((at, len as u32, hash));
            match self.index.entry(xxh64(key)) {
                // A second key of one hash: found by its bytes. The same key twice: the key is not unique.
                std::collections::hash_map::Entry::Occupied(e) => {
                    let (at, n, _) = self.entries[*e.get() as usize];
                    if &self.blob[at..at + n as usize] == key || self.overflow.insert(key.to_vec(), i).is_some() {
                        return Err(NOT_UNIQUE.into());
                    }
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
            p += 12 + len;
        }
        self.seen = vec![false; self.entries.len()];
        Ok(())
    }

    fn key_of(&self, i: u32) -> &[u8] {
        let (at, len, _) = self.entries[i as usize];
        &self.blob[at..at + len as usize]
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        match self.index.get(&xxh64(key)) {
            Some(&i) if self.key_of(i) == key => Some(i),
            _ => self.overflow.get(key).copied(),
        }
    }

    /// One row read: its whole tuple's bytes and its key fields (in key order, `None` for NULL, which a key never
    /// holds). Whether the row is written (new or changed).
    pub(crate) fn keep<'a>(&mut self, tuple: &[u8], key_fields: impl Iterator<Item = Option<&'a [u8]>>) -> bool {
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
        let hash = xxh64(tuple);
        self.out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&self.key);
        self.out.extend_from_slice(&hash.to_le_bytes());
        let key = std::mem::take(&mut self.key);
        let keep = match self.find(&key) {
            None => {
                self.counts.inserted += 1;
                true
            }
            Some(i) => {
                self.seen[i as usize] = true;
                let changed = self.entries[i as usize].2 != hash;
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
mod tests {
    use super::*;

    fn wire(v: &[u8]) -> Vec<u8> {
        let mut out = (v.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn rows_are_kept_when_new_or_changed_and_unseen_keys_are_deletes() {
        let mut first = Sieve::new(None).unwrap();
        for (k, row) in [(b"1", b"a"), (b"2", b"b"), (b"3", b"c")] {
            assert!(first.keep(row, [Some(&k[..])].into_iter()));
        }
        let (file, counts) = first.finish().unwrap();
        assert_eq!(counts.inserted, 3);
        let mut second = Sieve::new(Some(&file)).unwrap();
        assert!(!second.keep(b"a", [Some(&b"1"[..])].into_iter()), "unchanged");
        assert!(second.keep(b"B", [Some(&b"2"[..])].into_iter()), "updated");
        assert!(second.keep(b"d", [Some(&b"4"[..])].into_iter()), "inserted");
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
        assert!(Sieve::new(Some(b"not zstd")).is_err());
        let mut twice = Sieve::new(None).unwrap();
        twice.keep(b"a", [Some(&b"1"[..])].into_iter());
        twice.keep(b"b", [Some(&b"1"[..])].into_iter());
        let (file, _) = twice.finish().unwrap();
        assert!(Sieve::new(Some(&file)).err().unwrap_or_default().contains("not unique"));
    }

    #[test]
    fn keys_whose_hashes_collide_are_told_apart_by_their_bytes() {
        let mut s = Sieve::new(None).unwrap();
        s.keep(b"x", [Some(&b"k1"[..])].into_iter());
        s.keep(b"y", [Some(&b"k2"[..])].into_iter());
        let (file, _) = s.finish().unwrap();
        let mut s = Sieve::new(Some(&file)).unwrap();
        // Force a collision: both keys under one index entry.
        let h = xxh64(&wire(b"k1"));
        let k2 = s.find(&wire(b"k2")).unwrap();
        let k1 = s.index.insert(h, k2).unwrap();
        s.overflow.insert(wire(b"k1"), k1);
        assert_eq!(s.find(&wire(b"k1")), Some(k1));
        assert_eq!(s.find(&wire(b"k2")), Some(k2));
    }
}
