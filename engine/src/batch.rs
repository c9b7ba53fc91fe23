//! How B sequences of different lengths share one prefill launch: their
//! prompt tokens are concatenated into rows, each row tagged with its
//! sequence and position, and the last row of each sequence is where its
//! next token comes from.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefillLayout {
    /// Sequence of each row.
    pub row_seq: Vec<u32>,
    /// Position of each row inside its sequence.
    pub row_pos: Vec<u32>,
    /// The row holding each sequence's last prompt token.
    pub last_rows: Vec<u32>,
}

impl PrefillLayout {
    /// The rows of prompts of the given lengths (each at least 1).
    pub fn new(lengths: &[usize]) -> Result<Self> {
        if lengths.is_empty() {
            return Err(Error::Invalid("no sequences".into()));
        }
        let total: usize = lengths.iter().sum();
        if u32::try_from(total).is_err() {
            return Err(Error::Unsupported(format!(
                "{total} prompt tokens in one batch"
            )));
        }
        let mut layout = Self {
            row_seq: Vec::with_capacity(total),
            row_pos: Vec::with_capacity(total),
            last_rows: Vec::with_capacity(lengths.len()),
        };
        for (s, &len) in lengths.iter().enumerate() {
            if len == 0 {
                return Err(Error::Invalid(format!("prompt {s} is empty")));
            }
            layout.row_seq.extend(std::iter::repeat_n(s as u32, len));
            layout.row_pos.extend(0..len as u32);
            layout.last_rows.push(layout.row_seq.len() as u32 - 1);
        }
        Ok(layout)
    }

    pub fn rows(&self) -> usize {
        self.row_seq.len()
    }

    /// The prefill split into chunks of whole sequences, each of at most
    /// `max_rows` rows (a longer sequence is a chunk alone), in order.
    pub fn chunks(&self, max_rows: usize) -> Vec<PrefillChunk> {
        let mut chunks: Vec<PrefillChunk> = Vec::new();
        let mut first_row = 0;
        for (s, &last) in self.last_rows.iter().enumerate() {
            let end = last as usize + 1;
            match chunks.last_mut() {
                Some(c) if end - c.rows.start <= max_rows => {
                    c.rows.end = end;
                    c.seqs.end = s + 1;
                }
                _ => chunks.push(PrefillChunk {
                    seqs: s..s + 1,
                    rows: first_row..end,
                }),
            }
            first_row = end;
        }
        chunks
    }

    /// Each sequence's last row counted from the start of its chunk.
    pub fn last_rows_in_chunks(&self, chunks: &[PrefillChunk]) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.last_rows.len());
        for c in chunks {
            for s in c.seqs.clone() {
                out.push(self.last_rows[s] - c.rows.start as u32);
            }
        }
        out
    }
}

/// Sequences `seqs`, whose prompt tokens are rows `rows` of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefillChunk {
    pub seqs: std::ops::Range<usize>,
    pub rows: std::ops::Range<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_prompts_become_tagged_rows() {
        let l = PrefillLayout::new(&[3, 1, 2]).unwrap();
        assert_eq!(l.row_seq, [0, 0, 0, 1, 2, 2]);
        assert_eq!(l.row_pos, [0, 1, 2, 0, 0, 1]);
        assert_eq!(l.last_rows, [2, 3, 5]);
        assert_eq!(l.rows(), 6);
        assert!(PrefillLayout::new(&[]).is_err());
        assert!(PrefillLayout::new(&[2, 0]).is_err());
    }

    #[test]
    fn chunks_hold_whole_sequences_up_to_the_row_limit() {
        let l = PrefillLayout::new(&[3, 1, 2, 7, 1]).unwrap();
        let c = l.chunks(4);
        let got: Vec<_> = c.iter().map(|c| (c.seqs.clone(), c.rows.clone())).collect();
        // 3+1 fit; 2 alone (2+7 > 4); 7 alone though longer; then 1.
        assert_eq!(
            got,
            [(0..2, 0..4), (2..3, 4..6), (3..4, 6..13), (4..5, 13..14)]
        );
        assert_eq!(l.last_rows_in_chunks(&c), [2, 3, 1, 6, 0]);
        // One chunk when everything fits.
        let one = l.chunks(100);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].seqs.clone(), one[0].rows.clone()), (0..5, 0..14));
        assert_eq!(l.last_rows_in_chunks(&one), l.last_rows);
        // Every sequence and row in exactly one chunk, in order.
        for max in 1..16 {
            let c = l.chunks(max);
            assert_eq!(c.first().unwrap().rows.start, 0);
            assert_eq!(c.last().unwrap().rows.end, 14);
            for w in c.windows(2) {
                assert_eq!(w[0].rows.end, w[1].rows.start);
                assert_eq!(w[0].seqs.end, w[1].seqs.start);
            }
            assert!(c.iter().all(|c| c.rows.len() <= max || c.seqs.len() == 1));
        }
    }
}
