//! Compressed tiles → BF16, with the kernels' own pair decode.

use half::bf16;
use rayon::prelude::*;
use zipserv_kernels::decode::{decode_lane, exception_entry, patch_exponent};
use zipserv_kernels::format::{
    EXC_FAR, LANE_CODE_WORDS, LANE_PAIRS, LANES, SM_BYTES, SM_CHUNKS, TILE_BYTES, TILE_COLS,
    TILE_ROWS, TILE_WEIGHTS,
};

use super::layout::row_major_pair_of_slot;
use super::matrix::CompressedMatrix;
use crate::error::{Error, Result, Shape};

/// Scratch size for one decoded tile.
pub(crate) const TILE_SCRATCH: usize = TILE_WEIGHTS;

/// Bands of row tiles [`CompressedMatrix::decode_bands`] decodes at a time:
/// 1024 rows (8 MB at 4096 columns), enough to keep every core busy.
pub const DECODE_GROUP_BANDS: usize = 64;

impl CompressedMatrix {
    /// The original BF16 matrix, row-major, bit for bit.
    pub fn decode(&self) -> Vec<bf16> {
        let mut out = vec![bf16::ZERO; self.rows() * self.cols()];
        self.decode_into(&mut out)
            .expect("buffer sized from the matrix shape");
        out
    }

    /// Decodes into `out` (rows × cols, row-major).
    pub fn decode_into(&self, out: &mut [bf16]) -> Result<()> {
        let (rows, cols) = (self.rows(), self.cols());
        if out.len() != rows * cols {
            return Err(Error::ShapeMismatch {
                what: "decode output",
                expected: Shape(vec![rows, cols]),
                got: Shape(vec![out.len()]),
            });
        }
        let out: &mut [u16] = bytemuck::cast_slice_mut(out);
        out.par_chunks_mut(TILE_ROWS * cols)
            .enumerate()
            .for_each(|(rt, band)| self.decode_band(rt, band));
        Ok(())
    }

    /// Hands the decoded matrix to `f` in order, [`DECODE_GROUP_BANDS`]
    /// bands of row tiles at a time (row-major, whole rows; each group
    /// decoded in parallel), so a writer never needs the whole BF16 matrix
    /// in memory. Stops at `f`'s first error.
    pub fn decode_bands(&self, mut f: impl FnMut(&[bf16]) -> Result<()>) -> Result<()> {
        let (rows, cols) = (self.rows(), self.cols());
        let band_len = TILE_ROWS * cols;
        let group_rows = DECODE_GROUP_BANDS * TILE_ROWS;
        let mut buf = vec![0u16; group_rows.min(rows) * cols];
        let mut r0 = 0;
        while r0 < rows {
            let here = group_rows.min(rows - r0);
            let group = &mut buf[..here * cols];
            let first_band = r0 / TILE_ROWS;
            group
                .par_chunks_mut(band_len)
                .enumerate()
                .for_each(|(i, band)| self.decode_band(first_band + i, band));
            f(bytemuck::cast_slice(&*group))?;
            r0 += here;
        }
        Ok(())
    }

    /// The first element (row-major index) where this matrix does not
    /// decode to `values`, with what it decodes to there; `None` when every
    /// element matches. Decodes one band of row tiles at a time (per
    /// thread), so checking a matrix needs no second copy of it.
    pub fn first_mismatch(&self, values: &[bf16]) -> Result<Option<(usize, bf16)>> {
        let (rows, cols) = (self.rows(), self.cols());
        if values.len() != rows * cols {
            return Err(Error::ShapeMismatch {
                what: "values to compare",
                expected: Shape(vec![rows, cols]),
                got: Shape(vec![values.len()]),
            });
        }
        let want: &[u16] = bytemuck::cast_slice(values);
        let band_len = TILE_ROWS * cols;
        let found = want
            .par_chunks(band_len)
            .enumerate()
            .find_map_first(|(rt, want)| {
                let mut band = vec![0u16; want.len()];
                self.decode_band(rt, &mut band);
                let i = want.iter().zip(&band).position(|(a, b)| a != b)?;
                Some((rt * band_len + i, bf16::from_bits(band[i])))
            });
        Ok(found)
    }

    /// Row tile `rt` into `band` (its rows × cols, row-major).
    fn decode_band(&self, rt: usize, band: &mut [u16]) {
        let cols = self.cols();
        let mut scratch = [0u16; TILE_SCRATCH];
        let rows_here = band.len() / cols;
        for ct in 0..self.col_tiles() {
            let tile = rt * self.col_tiles() + ct;
            self.decode_tile_raw(tile, &mut scratch);
            self.patch_exceptions(tile, &mut scratch);
            let c0 = ct * TILE_COLS;
            let cols_here = TILE_COLS.min(cols - c0);
            for row in 0..rows_here {
                band[row * cols + c0..][..cols_here]
                    .copy_from_slice(&scratch[row * TILE_COLS..][..cols_here]);
            }
        }
    }

    /// Fast-path decode of one whole tile (padding included) into row-major
    /// `out`, exceptions still holding their code-0 value.
    pub(crate) fn decode_tile_raw(&self, tile: usize, out: &mut [u16; TILE_SCRATCH]) {
        let bytes: &[u8; TILE_BYTES] = self.parts.tiles[tile * TILE_BYTES..][..TILE_BYTES]
            .try_into()
            .unwrap();
        let word =
            |offset: usize| u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
        let pair_index = row_major_pair_of_slot();
        for lane in 0..LANES {
            // The lane's four 16-byte sign+mantissa chunks, as the GPU loads them.
            let mut sm = [0u32; 16];
            for (i, w) in sm.iter_mut().enumerate() {
                let (chunk, within) = (i / 4, i % 4);
                *w = word((chunk * LANES + lane) * 16 + 4 * within);
            }
            debug_assert_eq!(sm.len(), SM_CHUNKS * 4);
            let mut codes = [0u32; LANE_CODE_WORDS];
            for (w, c) in codes.iter_mut().enumerate() {
                *c = if w < 4 {
                    word(SM_BYTES + lane * 16 + 4 * w)
                } else {
                    word(SM_BYTES + LANES * 16 + lane * 8 + 4 * (w - 4))
                };
            }
            let pairs = decode_lane(&sm, &codes, self.parts.base);
            let targets = &pair_index[lane * LANE_PAIRS..][..LANE_PAIRS];
            for (&pair, &target) in pairs.iter().zip(targets) {
                // `target < TILE_WEIGHTS / 2` by construction; the mask lets
                // the compiler drop the bounds checks.
                let i = 2 * (target as usize % (TILE_SCRATCH / 2));
                out[i] = pair as u16;
                out[i + 1] = (pair >> 16) as u16;
            }
        }
    }

    /// Writes the true exponent of each exception of `tile` into `out`.
    fn patch_exceptions(&self, tile: usize, out: &mut [u16; TILE_SCRATCH]) {
        let p = &self.parts;
        let entries =
            &p.exceptions[p.exception_starts[tile] as usize..p.exception_starts[tile + 1] as usize];
        let mut far = p.far_exponents[p.far_starts[tile] as usize..].iter();
        for &entry in entries {
            let (row, col, index) = exception_entry(entry);
            let exponent = if index == EXC_FAR {
                *far.next()
                    .expect("validated: one far exponent per far entry")
            } else {
                p.exception_table[index as usize]
            };
            let i = row * TILE_COLS + col;
            out[i] = patch_exponent(out[i], exponent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The banded check finds nothing on the encoded values and the first
    /// changed element (with the decoded value there) when one differs, in
    /// any band and column tile, on ragged shapes.
    #[test]
    fn first_mismatch_finds_the_first_difference() {
        let seed = crate::rng::fresh_seed();
        for &(rows, cols) in &[(1, 1), (17, 130), (64, 300), (33, 128)] {
            let values = crate::synth::trained_like(rows, cols, seed).unwrap();
            let m = CompressedMatrix::encode(&values, rows, cols).unwrap();
            assert_eq!(m.first_mismatch(&values).unwrap(), None, "seed {seed}");
            for &i in &[0, rows * cols / 2, rows * cols - 1] {
                let mut other = values.clone();
                other[i] = bf16::from_bits(other[i].to_bits() ^ 0x0101);
                if i + 1 < rows * cols {
                    other[rows * cols - 1] = bf16::from_bits(other[rows * cols - 1].to_bits() ^ 1);
                }
                assert_eq!(
                    m.first_mismatch(&other).unwrap(),
                    Some((i, values[i])),
                    "seed {seed}, {rows}x{cols}, element {i}"
                );
            }
        }
        let m = CompressedMatrix::encode(&[bf16::ONE; 6], 2, 3).unwrap();
        assert!(m.first_mismatch(&[bf16::ONE; 5]).is_err());
    }

    /// Band by band gives the whole decode, in order, in whole rows.
    #[test]
    fn decode_bands_concatenate_to_decode() {
        let seed = crate::rng::fresh_seed();
        let rows = DECODE_GROUP_BANDS * TILE_ROWS * 2 + 37; // three groups, ragged
        for cols in [1, 130] {
            let values = crate::synth::trained_like(rows, cols, seed).unwrap();
            let m = CompressedMatrix::encode(&values, rows, cols).unwrap();
            let mut got = Vec::new();
            m.decode_bands(|part| {
                assert_eq!(part.len() % cols, 0);
                got.extend_from_slice(part);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, values, "seed {seed}, {rows}x{cols}");
        }
        // An error from the writer stops it.
        let m = CompressedMatrix::encode(&[bf16::ONE; 6], 2, 3).unwrap();
        let r = m.decode_bands(|_| Err(Error::Unsupported("stop".into())));
        assert!(r.is_err());
    }
}
