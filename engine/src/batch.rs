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
}
