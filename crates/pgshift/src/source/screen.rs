//! The first pass of a versioned row-by-row comparison (`--incremental diff` on a plain table): a binary COPY of
//! each row's key fields and version fields ([`crate::contract::sql::select_key_versions`]), screened by the sieve
//! ([`Sieve::screen`]). What it leaves: the tuple ids of the rows to read whole.

use super::decode::{header_len, DecodeError};
use super::sieve::{version_of, Sieve};

/// The first pass's parser: `keys` key fields, then `ctid` and `xmin`, per tuple; or the key fields alone, for a pass
/// that tells the sieve which keys the range holds ([`Screen::keys_only`]).
pub(crate) struct Screen {
    keys: usize,
    versions: bool,
    header_done: bool,
    trailer_seen: bool,
    carry: Vec<u8>,
    /// The rows to read whole (their version is not the previous run's, or their key is new).
    pub(crate) tids: Vec<(u32, u16)>,
    /// Every row the pass read.
    pub(crate) rows: u64,
}

impl Screen {
    pub(crate) fn new(keys: usize) -> Self {
        Screen {
            keys,
            versions: true,
            header_done: false,
            trailer_seen: false,
            carry: Vec::new(),
            tids: Vec::new(),
            rows: 0,
        }
    }

    /// A pass of keys alone: each key is one the range holds ([`Sieve::present`]).
    pub(crate) fn keys_only(keys: usize) -> Self {
        Screen {
            versions: false,
            ..Screen::new(keys)
        }
    }

    /// Feeds one chunk of the stream.
    pub(crate) fn feed(&mut self, sieve: &mut Sieve, chunk: &[u8]) -> Result<(), String> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        let used = self.parse(sieve, &buf)?;
        buf.drain(..used);
        self.carry = buf;
        Ok(())
    }

    /// Readies the parser for another stream of the same pass (after [`Self::finish`] of the last one).
    pub(crate) fn next_stream(&mut self) {
        (self.header_done, self.trailer_seen) = (false, false);
        self.carry.clear();
    }

    /// Ends the stream: it must have ended with its trailer.
    pub(crate) fn finish(&self) -> Result<(), String> {
        match (self.trailer_seen, self.carry.is_empty()) {
            (true, true) => Ok(()),
            (false, _) => Err("the key and version stream ended before the COPY trailer".into()),
            (true, false) => Err("data after the key and version stream's COPY trailer".into()),
        }
    }

    fn parse(&mut self, sieve: &mut Sieve, buf: &[u8]) -> Result<usize, String> {
        let mut pos = 0;
        if !self.header_done {
            match header_len(buf).map_err(protocol)? {
                Some(n) => pos = n,
                None => return Ok(0),
            }
            self.header_done = true;
        }
        while pos + 2 <= buf.len() && !self.trailer_seen {
            let count = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
            if count == -1 {
                self.trailer_seen = true;
                pos += 2;
                break;
            }
            if count as usize != self.fields() {
                return Err(format!(
                    "a key and version tuple has {count} fields, expected {}",
                    self.fields()
                ));
            }
            let Some(f) = self.frame(buf, pos)? else {
                break;
            };
            self.rows += 1;
            if !self.versions {
                sieve.present(&buf[pos + 2..f.end]);
            } else if sieve.screen(&buf[pos + 2..f.versions_at], version_of(&buf[f.versions_at..f.end])) {
                self.tids.push(f.tid);
            }
            pos = f.end;
        }
        Ok(pos)
    }

    fn fields(&self) -> usize {
        self.keys + if self.versions { 2 } else { 0 }
    }

    /// The tuple at `pos`, or `None` while the buffer does not hold all of it.
    fn frame(&self, buf: &[u8], pos: usize) -> Result<Option<Framed>, String> {
        let mut p = pos + 2;
        let mut versions_at = p;
        let mut tid = (0, 0);
        for i in 0..self.fields() {
            let Some(len) = buf.get(p..p + 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else {
                return Ok(None);
            };
            if i == self.keys {
                versions_at = p;
            }
            let want = match i.checked_sub(self.keys) {
                None if len >= 0 => len,
                None => return Err("NULL in a key column".into()),
                Some(0) => 6,
                Some(_) => 4,
            };
            if len != want {
                return Err(format!("a version field of {len} bytes, expected {want}"));
            }
            let Some(v) = buf.get(p + 4..p + 4 + len as usize) else {
                return Ok(None);
            };
            if i == self.keys {
                tid = (
                    u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                    u16::from_be_bytes([v[4], v[5]]),
                );
            }
            p += 4 + len as usize;
        }
        Ok(Some(Framed {
            versions_at,
            tid,
            end: p,
        }))
    }
}

/// A key and version tuple: where its version fields start, its tuple id, and where it ends.
struct Framed {
    versions_at: usize,
    tid: (u32, u16),
    end: usize,
}

fn protocol(e: DecodeError) -> String {
    match e {
        DecodeError::Protocol(m) => m,
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sieve::tests::tuple;
    use crate::source::sieve::Horizon;

    /// Rows written by transaction 5, before every read.
    const HORIZON: Horizon = Horizon {
        xmin: 6,
        xmax: 7,
        lineage: 0,
    };

    fn stream(rows: &[(&[u8], [u8; 6])]) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend_from_slice(&[0; 8]);
        for (k, ctid) in rows {
            out.extend_from_slice(&tuple(&[k, ctid, &[0, 0, 0, 5]]));
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn the_first_pass_leaves_the_rows_whose_version_changed_however_the_stream_is_split() {
        let (a, b) = ([0, 0, 0, 3, 0, 1], [0, 0, 1, 0, 0, 2]);
        let mut first = Sieve::new(None, Some(HORIZON)).unwrap();
        for k in [b"1", b"2"] {
            let row = tuple(&[k, &a, &[0, 0, 0, 5]]);
            first.keep(&row, Some(2 + 4 + k.len()), [Some(&k[..])].into_iter());
        }
        let (file, _) = first.finish().unwrap();
        let bytes = stream(&[(b"1", a), (b"2", b), (b"3", b)]);
        for split in [1, 7, 19, 20, 33, bytes.len()] {
            let mut sieve = Sieve::new(Some(&file), Some(HORIZON)).unwrap();
            let mut s = Screen::new(1);
            for chunk in bytes.chunks(split) {
                s.feed(&mut sieve, chunk).unwrap();
            }
            s.finish().unwrap();
            assert_eq!((s.rows, s.tids.clone()), (3, vec![(256, 2), (256, 2)]), "split {split}");
        }
        let mut sieve = Sieve::new(Some(&file), Some(HORIZON)).unwrap();
        let mut s = Screen::new(1);
        s.feed(&mut sieve, &bytes[..bytes.len() - 2]).unwrap();
        assert!(s.finish().unwrap_err().contains("before the COPY trailer"));
        let mut s = Screen::new(2);
        assert!(s.feed(&mut sieve, &bytes).unwrap_err().contains("expected 4"));
    }

    #[test]
    fn one_pass_reads_several_streams_one_after_another() {
        let (a, b) = ([0, 0, 0, 3, 0, 1], [0, 0, 1, 0, 0, 2]);
        let mut sieve = Sieve::new(None, Some(HORIZON)).unwrap();
        let mut s = Screen::new(1);
        for part in [stream(&[(b"1", a), (b"2", b)]), stream(&[(b"3", b)])] {
            s.next_stream();
            s.feed(&mut sieve, &part).unwrap();
            s.finish().unwrap();
        }
        assert_eq!((s.rows, s.tids.len()), (3, 3));
        // A second stream without its header is not taken for rows.
        s.feed(&mut sieve, &stream(&[(b"4", a)])).unwrap();
        assert!(s.finish().is_err());
    }
}
