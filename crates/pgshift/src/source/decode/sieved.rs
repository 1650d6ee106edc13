//! The decoder's side of a row-by-row comparison (`--incremental diff`, docs/incremental.md): the sieve each row
//! passes through, and the rows of the keys the stream did not hold (the deletes).

use super::{CopyDecoder, DecodeError};

impl CopyDecoder {
    /// Compares row by row through `sieve` (`--incremental diff`): the decoder's last column is then the deleted
    /// flag ([`crate::contract::incremental::DELETED_COLUMN`]), not on the wire. Needs the key's fields in their
    /// wire form (no cast on a key column). `versions`: each tuple ends with two version fields
    /// ([`crate::contract::sql::VERSION_COLUMNS`]), which the sieve reads and no column holds.
    pub(crate) fn with_sieve(
        mut self,
        sieve: crate::source::sieve::Sieve,
        flagged: bool,
        versions: bool,
    ) -> Result<Self, String> {
        if self.key_fields.is_empty() {
            return Err("a row-by-row comparison needs the key's columns, uncast".into());
        }
        self.wire = self.columns.len() - usize::from(flagged);
        self.extra = if versions { 2 } else { 0 };
        self.sieve = Some(sieve);
        Ok(self)
    }

    /// The row-by-row comparison's sieve (for a first pass of keys and versions).
    pub(crate) fn sieve_mut(&mut self) -> Option<&mut crate::source::sieve::Sieve> {
        self.sieve.as_mut()
    }

    /// A row per key of the previous run the stream did not hold: the key's fields, every other column NULL, the
    /// deleted flag set. The sieve's key file and counts.
    pub(super) fn append_deletes(
        &mut self,
        sieve: crate::source::sieve::Sieve,
    ) -> Result<(Vec<u8>, crate::contract::incremental::DiffCounts), DecodeError> {
        let positions: Vec<usize> = self.key_fields.iter().map(|&(i, _)| i).collect();
        for key in sieve.deleted() {
            let wire = self.wire + self.extra;
            let tuple = crate::source::sieve::delete_tuple(key, &positions, wire).map_err(DecodeError::Protocol)?;
            let count = wire as i16;
            if self.frame_tuple(&tuple, 0, count)?.is_none() {
                return Err(DecodeError::Protocol("a deleted key's row does not frame".into()));
            }
            self.append_tuple(&tuple, true)?;
            self.rows += 1;
            self.rows_in_batch += 1;
        }
        sieve.finish().map_err(DecodeError::Protocol)
    }
}
