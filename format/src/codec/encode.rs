//! BF16 matrix → compressed tiles.

use half::bf16;
use rayon::prelude::*;
use zipserv_kernels::decode::pack_lane_codes;
use zipserv_kernels::format::{
    EXC_FAR, EXC_INDEX_BITS, EXC_TABLE_LEN, LANE_WEIGHTS, LANES, MAX_BASE, SM_BYTES, TILE_BYTES,
    TILE_COLS, TILE_ROWS, TILE_WEIGHTS, WINDOW,
};

use super::layout::slots;
use super::matrix::{CompressedMatrix, MatrixParts, tile_count};
use crate::error::{Error, Result, Shape};

/// Exceptions of one tile: entries and far exponents, in position order.
#[derive(Default)]
struct TileExceptions {
    entries: Vec<u16>,
    far: Vec<u8>,
}

impl CompressedMatrix {
    /// Compresses a row-major BF16 matrix. Any shape ≥ 1×1 and any bit
    /// pattern is accepted; [`CompressedMatrix::decode`] returns the same bits.
    pub fn encode(weights: &[bf16], rows: usize, cols: usize) -> Result<Self> {
        let elements = rows.checked_mul(cols);
        if rows == 0 || cols == 0 || elements != Some(weights.len()) {
            return Err(Error::ShapeMismatch {
                what: "weights",
                expected: Shape(vec![rows, cols]),
                got: Shape(vec![weights.len()]),
            });
        }
        tile_count(rows, cols)
            .ok_or_else(|| Error::Unsupported(format!("shape {rows} x {cols} too large")))?;
        let bits: &[u16] = bytemuck::cast_slice(weights);

        let histogram = exponent_histogram(bits);
        let base = best_window(&histogram);
        let (exception_table, index_of) = exception_table(&histogram, base);

        let col_tiles = cols.div_ceil(TILE_COLS);
        let row_tiles = rows.div_ceil(TILE_ROWS);
        let mut tiles = vec![0u8; row_tiles * col_tiles * TILE_BYTES];
        let exceptions: Vec<Vec<TileExceptions>> = tiles
            .par_chunks_mut(col_tiles * TILE_BYTES)
            .enumerate()
            .map(|(rt, row_of_tiles)| {
                let r0 = rt * TILE_ROWS;
                let rows_here = TILE_ROWS.min(rows - r0);
                row_of_tiles
                    .chunks_mut(TILE_BYTES)
                    .enumerate()
                    .map(|(ct, tile)| {
                        let c0 = ct * TILE_COLS;
                        let cols_here = TILE_COLS.min(cols - c0);
                        let source = |row: usize| &bits[(r0 + row) * cols + c0..][..cols_here];
                        encode_tile(source, rows_here, base, &index_of, tile)
                    })
                    .collect()
            })
            .collect();

        let mut parts = MatrixParts {
            rows,
            cols,
            base,
            exception_table,
            tiles,
            ..Default::default()
        };
        parts.exception_starts.push(0);
        parts.far_starts.push(0);
        for tile in exceptions.into_iter().flatten() {
            parts.exceptions.extend_from_slice(&tile.entries);
            parts.far_exponents.extend_from_slice(&tile.far);
            parts.exception_starts.push(offset(parts.exceptions.len())?);
            parts.far_starts.push(offset(parts.far_exponents.len())?);
        }
        Ok(Self { parts })
    }
}

fn offset(len: usize) -> Result<u32> {
    u32::try_from(len)
        .map_err(|_| Error::Unsupported("more than 2^32 exceptions in one matrix".into()))
}

/// Encodes one tile from `rows_here` rows of real weights (`source(row)`;
/// the rest is padding: sign+mantissa 0, code 0, i.e. the finite value 2^(base-127)).
fn encode_tile<'a>(
    source: impl Fn(usize) -> &'a [u16],
    rows_here: usize,
    base: u8,
    index_of: &[u16; 256],
    tile: &mut [u8],
) -> TileExceptions {
    let slots = slots();
    let mut codes = [0u8; TILE_WEIGHTS];
    let mut exceptions = TileExceptions::default();
    for row in 0..rows_here {
        for (col, &w) in source(row).iter().enumerate() {
            let i = row * TILE_COLS + col;
            let slot = slots[i];
            tile[slot.sm_offset as usize] = ((w >> 8) & 0x80) as u8 | (w & 0x7F) as u8;
            let exponent = ((w >> 7) & 0xFF) as u8;
            let code = exponent.wrapping_sub(base);
            if u32::from(code) < WINDOW {
                codes[slot.code_slot as usize] = code;
            } else {
                let index = index_of[exponent as usize];
                exceptions
                    .entries
                    .push((i as u16) << EXC_INDEX_BITS | index);
                if index == EXC_FAR {
                    exceptions.far.push(exponent);
                }
            }
        }
    }
    let (_, code_bytes) = tile.split_at_mut(SM_BYTES);
    let (first, second) = code_bytes.split_at_mut(LANES * 16);
    for lane in 0..LANES {
        let lane_codes: &[u8; LANE_WEIGHTS] = codes[lane * LANE_WEIGHTS..][..LANE_WEIGHTS]
            .try_into()
            .unwrap();
        let words = pack_lane_codes(lane_codes);
        for (w, word) in words.iter().enumerate() {
            let dst = if w < 4 {
                &mut first[lane * 16 + 4 * w..]
            } else {
                &mut second[lane * 8 + 4 * (w - 4)..]
            };
            dst[..4].copy_from_slice(&word.to_le_bytes());
        }
    }
    exceptions
}

/// Counts of each exponent value.
pub(crate) fn exponent_histogram(bits: &[u16]) -> [u64; 256] {
    bits.par_chunks(1 << 16)
        .map(|chunk| {
            let mut h = [0u64; 256];
            for &w in chunk {
                h[((w >> 7) & 0xFF) as usize] += 1;
            }
            h
        })
        .reduce(
            || [0u64; 256],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// The base whose window `[base, base + 7]` covers the most weights (the
/// lowest such base on ties).
fn best_window(histogram: &[u64; 256]) -> u8 {
    (0..=MAX_BASE)
        .max_by_key(|&b| {
            let covered: u64 = histogram[b as usize..][..WINDOW as usize].iter().sum();
            (covered, std::cmp::Reverse(b))
        })
        .unwrap()
}

/// The (at most 31) most frequent out-of-window exponents, and for every
/// exponent its exception index ([`EXC_FAR`] when not in the table).
fn exception_table(histogram: &[u64; 256], base: u8) -> (Vec<u8>, [u16; 256]) {
    let in_window = |e: usize| e >= base as usize && e < base as usize + WINDOW as usize;
    let mut outside: Vec<(u64, u8)> = (0..256)
        .filter(|&e| !in_window(e) && histogram[e] > 0)
        .map(|e| (histogram[e], e as u8))
        .collect();
    outside.sort_by_key(|&(count, e)| (std::cmp::Reverse(count), e));
    let table: Vec<u8> = outside
        .iter()
        .take(EXC_TABLE_LEN)
        .map(|&(_, e)| e)
        .collect();
    let mut index_of = [EXC_FAR; 256];
    for (i, &e) in table.iter().enumerate() {
        index_of[e as usize] = i as u16;
    }
    (table, index_of)
}
