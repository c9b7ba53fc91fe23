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
    ///
    /// The window base is [`best_window_base`] of the matrix's own
    /// [`exponent_histogram`]: `encode(w, r, c)` is
    /// `encode_with_base(w, r, c, best_window_base(&exponent_histogram(w)))`.
    pub fn encode(weights: &[bf16], rows: usize, cols: usize) -> Result<Self> {
        check_shape(weights, rows, cols)?;
        let histogram = exponent_histogram(weights);
        let base = best_window_base(&histogram);
        encode_checked(weights, rows, cols, base, &histogram)
    }

    /// Compresses a row-major BF16 matrix with the window base `base`
    /// (`base ..= base + 7` get codes, every other exponent is an exception)
    /// instead of the base [`CompressedMatrix::encode`] would pick. Matrices
    /// that are to be joined by [`CompressedMatrix::stack_rows`] need one
    /// base; [`best_window_base`] of their summed [`exponent_histogram`]s is
    /// the base that makes the fewest exceptions over all of them. The
    /// exception table is still this matrix's own (its 31 most frequent
    /// exponents outside this window). Any base is lossless, only the size
    /// changes; a base above `MAX_BASE` (248) is refused, since its window
    /// would reach past exponent 255.
    pub fn encode_with_base(weights: &[bf16], rows: usize, cols: usize, base: u8) -> Result<Self> {
        if base > MAX_BASE {
            return Err(Error::Unsupported(format!(
                "window base {base}: the window [base, base + {}] must end at exponent 255, so \
                 the base must be at most {MAX_BASE}",
                WINDOW - 1
            )));
        }
        check_shape(weights, rows, cols)?;
        let histogram = exponent_histogram(weights);
        encode_checked(weights, rows, cols, base, &histogram)
    }

    /// The bytes [`CompressedMatrix::compressed_bytes`] gives for a `rows ×
    /// cols` matrix whose exponent histogram is `histogram`, encoded with
    /// `base` by [`CompressedMatrix::encode_with_base`], computed without
    /// encoding: exceptions and far exponents follow from the histogram. A
    /// caller holding only histograms (a group of matrices that are to share
    /// one base) can so tell whether the tile format stays smaller than raw.
    /// `None` on overflow or when `base` is above `MAX_BASE`; for a histogram
    /// that is not of `rows × cols` weights the figure means nothing.
    pub fn compressed_bytes_for(
        rows: usize,
        cols: usize,
        histogram: &[u64; 256],
        base: u8,
    ) -> Option<usize> {
        if base > MAX_BASE {
            return None;
        }
        let outside = outside_window(histogram, base);
        let mut exceptions = 0usize;
        let mut far = 0usize;
        for (i, &(count, _)) in outside.iter().enumerate() {
            let count = usize::try_from(count).ok()?;
            exceptions = exceptions.checked_add(count)?;
            if i >= EXC_TABLE_LEN {
                far = far.checked_add(count)?;
            }
        }
        let table = outside.len().min(EXC_TABLE_LEN);
        Self::min_compressed_bytes(rows, cols)?
            .checked_add(exceptions.checked_mul(2)?)?
            .checked_add(far)?
            .checked_add(table)
    }
}

/// Refuses an empty shape, one that does not match `weights`, and one whose
/// tile count overflows.
fn check_shape(weights: &[bf16], rows: usize, cols: usize) -> Result<()> {
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
    Ok(())
}

/// Encodes a matrix whose shape passed [`check_shape`], with `base` ≤
/// `MAX_BASE`; `histogram` is its own exponent histogram.
fn encode_checked(
    weights: &[bf16],
    rows: usize,
    cols: usize,
    base: u8,
    histogram: &[u64; 256],
) -> Result<CompressedMatrix> {
    let bits: &[u16] = bytemuck::cast_slice(weights);
    let (exception_table, index_of) = exception_table(histogram, base);

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
    Ok(CompressedMatrix { parts })
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

/// How many weights have each exponent value (bits 7..14 of the BF16
/// pattern): what [`CompressedMatrix::encode`] chooses the window from.
/// Histograms of several matrices add up to the histogram of their
/// concatenation.
pub fn exponent_histogram(weights: &[bf16]) -> [u64; 256] {
    let bits: &[u16] = bytemuck::cast_slice(weights);
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

/// The base whose window `[base, base + 7]` covers the most weights of
/// `histogram` (the lowest such base on ties; at most `MAX_BASE`): the base
/// [`CompressedMatrix::encode`] picks, and for a summed histogram the one
/// base that gives a group of matrices the fewest exceptions together.
/// Counts add up saturating, so any histogram is accepted.
pub fn best_window_base(histogram: &[u64; 256]) -> u8 {
    (0..=MAX_BASE)
        .max_by_key(|&b| {
            let covered = histogram[b as usize..][..WINDOW as usize]
                .iter()
                .fold(0u64, |sum, &c| sum.saturating_add(c));
            (covered, std::cmp::Reverse(b))
        })
        .unwrap_or(0)
}

/// The exponents outside `base`'s window that occur, with their counts,
/// most frequent first (ties by value): the order the exception table takes.
fn outside_window(histogram: &[u64; 256], base: u8) -> Vec<(u64, u8)> {
    let in_window = |e: usize| e >= base as usize && e < base as usize + WINDOW as usize;
    let mut outside: Vec<(u64, u8)> = (0..256)
        .filter(|&e| !in_window(e) && histogram[e] > 0)
        .map(|e| (histogram[e], e as u8))
        .collect();
    outside.sort_by_key(|&(count, e)| (std::cmp::Reverse(count), e));
    outside
}

/// The (at most 31) most frequent out-of-window exponents, and for every
/// exponent its exception index ([`EXC_FAR`] when not in the table).
fn exception_table(histogram: &[u64; 256], base: u8) -> (Vec<u8>, [u16; 256]) {
    let table: Vec<u8> = outside_window(histogram, base)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Uniform values in ±scale with some far smaller and larger ones, so
    /// table and far exceptions both occur.
    fn weights(seed: u64, len: usize, scale: f32) -> Vec<bf16> {
        let mut rng = SplitMix64::new(seed);
        (0..len)
            .map(|_| {
                let v = rng.next_f32_signed() * scale;
                match rng.next_u64() % 200 {
                    0 => bf16::from_f32(v * 1e-25),
                    1 => bf16::from_f32(v * 1e4),
                    2..=9 => bf16::from_f32(v * 1e-3),
                    _ => bf16::from_f32(v),
                }
            })
            .collect()
    }

    fn bits(w: &[bf16]) -> Vec<u16> {
        w.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn encode_is_encode_with_the_best_window_of_its_histogram() {
        let all: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        for (w, rows, cols) in [
            (weights(1, 40 * 300, 0.02), 40, 300),
            (weights(2, 16 * 128, 3.0), 16, 128),
            (all, 256, 256),
        ] {
            let base = best_window_base(&exponent_histogram(&w));
            let a = CompressedMatrix::encode(&w, rows, cols).unwrap();
            let b = CompressedMatrix::encode_with_base(&w, rows, cols, base).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn every_base_is_lossless_and_its_size_is_predicted() {
        let (rows, cols) = (33, 200);
        let w = weights(3, rows * cols, 0.05);
        let histogram = exponent_histogram(&w);
        let own = best_window_base(&histogram);
        for base in 0..=MAX_BASE {
            let m = CompressedMatrix::encode_with_base(&w, rows, cols, base).unwrap();
            assert_eq!(m.base(), base);
            assert_eq!(bits(&m.decode()), bits(&w), "base {base}");
            let m = CompressedMatrix::from_parts(m.into_parts()).unwrap();
            assert_eq!(
                CompressedMatrix::compressed_bytes_for(rows, cols, &histogram, base),
                Some(m.compressed_bytes()),
                "base {base}"
            );
            if base != own {
                let best = CompressedMatrix::compressed_bytes_for(rows, cols, &histogram, own);
                assert!(best <= Some(m.compressed_bytes()), "base {base}");
            }
        }
    }

    #[test]
    fn a_base_past_the_last_window_is_refused() {
        let w = weights(4, 16 * 128, 1.0);
        for base in MAX_BASE + 1..=u8::MAX {
            let err = CompressedMatrix::encode_with_base(&w, 16, 128, base).unwrap_err();
            assert!(err.to_string().contains("at most 248"), "{err}");
            let h = exponent_histogram(&w);
            assert_eq!(
                CompressedMatrix::compressed_bytes_for(16, 128, &h, base),
                None
            );
        }
        // The shape is still checked with a valid base.
        assert!(CompressedMatrix::encode_with_base(&w, 16, 127, 120).is_err());
        assert!(CompressedMatrix::encode_with_base(&[], 0, 0, 120).is_err());
    }

    #[test]
    fn any_histogram_is_accepted() {
        assert_eq!(best_window_base(&[u64::MAX; 256]), 0);
        assert_eq!(best_window_base(&[0; 256]), 0);
        let mut h = [0u64; 256];
        h[255] = u64::MAX;
        assert_eq!(best_window_base(&h), MAX_BASE);
        assert_eq!(
            CompressedMatrix::compressed_bytes_for(16, 128, &[u64::MAX; 256], 0),
            None
        );
        assert_eq!(
            CompressedMatrix::compressed_bytes_for(usize::MAX, usize::MAX, &h, 0),
            None
        );
    }

    #[test]
    fn a_shared_base_lets_differently_scaled_parts_stack() {
        let (a, b) = (weights(5, 32 * 256, 0.02), weights(6, 16 * 256, 0.08));
        let (ma, mb) = (
            CompressedMatrix::encode(&a, 32, 256).unwrap(),
            CompressedMatrix::encode(&b, 16, 256).unwrap(),
        );
        assert_ne!(ma.base(), mb.base());
        assert!(CompressedMatrix::stack_rows(&[&ma, &mb]).is_err());

        let mut sum = exponent_histogram(&a);
        for (s, x) in sum.iter_mut().zip(exponent_histogram(&b)) {
            *s += x;
        }
        let base = best_window_base(&sum);
        let ma = CompressedMatrix::encode_with_base(&a, 32, 256, base).unwrap();
        let mb = CompressedMatrix::encode_with_base(&b, 16, 256, base).unwrap();
        let stacked = CompressedMatrix::stack_rows(&[&ma, &mb]).unwrap();
        let mut want = bits(&a);
        want.extend(bits(&b));
        assert_eq!(bits(&stacked.decode()), want);
        // The base the encoder picks for the concatenation.
        let all: Vec<bf16> = a.iter().chain(&b).copied().collect();
        assert_eq!(stacked, CompressedMatrix::encode(&all, 48, 256).unwrap());
    }
}
