//! Row stacking in the compressed domain: one matrix from several with the
//! same columns and window base (q/k/v or gate/up projections fused into one
//! GEMM), built from their tile streams without decoding to BF16.
//!
//! Why this is mostly concatenation: tile `(r, c)` sits at
//! `(r * col_tiles + c) * TILE_BYTES`, row tiles outermost, and every
//! exception entry is relative to its own tile. So when all parts have the
//! same columns (hence the same column tiles) and every part but the last
//! fills whole row tiles, the parts' row tiles, tile bytes and per-tile
//! exception lists follow one another unchanged. Only the per-matrix
//! exception table needs work: each part numbers its out-of-window exponents
//! by its own table, so every entry's index is rewritten against one merged
//! table, and exponents the merged table has no room for become far
//! exceptions.

use zipserv_kernels::decode::exception_entry;
use zipserv_kernels::format::{EXC_FAR, EXC_INDEX_BITS, EXC_TABLE_LEN, TILE_BYTES, TILE_ROWS};

use super::matrix::{CompressedMatrix, MatrixParts, tile_count};

/// Why [`CompressedMatrix::stack_rows`] cannot stack its parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStackable {
    /// No parts were given: there is no empty matrix in the tile format.
    #[error("no matrices to stack")]
    NoParts,

    /// Part `part` has `cols` columns where part 0 has `expected`.
    #[error("part {part} has {cols} columns, part 0 has {expected}")]
    ColsDiffer {
        part: usize,
        cols: usize,
        expected: usize,
    },

    /// Part `part`, not the last, has `rows` rows, not a multiple of
    /// `TILE_ROWS`: its last row tile's padding rows would land inside the
    /// stacked matrix, and the padding cannot be dropped without re-tiling.
    #[error(
        "part {part} has {rows} rows, not a multiple of {TILE_ROWS}; only the last part may end \
         inside a row tile"
    )]
    RowsNotTileAligned { part: usize, rows: usize },

    /// Part `part` has window base `base` where part 0 has `expected`: its
    /// 3-bit codes mean other exponents, so its tiles would have to be
    /// re-encoded.
    #[error("part {part} has window base {base}, part 0 has {expected}")]
    BasesDiffer { part: usize, base: u8, expected: u8 },

    /// The stacked matrix would not fit: its rows, tile count or stream size
    /// overflow `usize`, its tile stream cannot be allocated, or it has more
    /// than 2^32 exceptions (the offset arrays are u32).
    #[error("the stacked matrix is too large for the tile format")]
    TooLarge,

    /// The parts' sections do not agree with one another, or the stacked
    /// sections failed validation. Impossible for matrices built by
    /// `encode` or `from_parts`; reported rather than panicking.
    #[error("inconsistent compressed matrix: {0}")]
    Invalid(String),
}

impl From<NotStackable> for crate::Error {
    fn from(e: NotStackable) -> Self {
        crate::Error::Unsupported(e.to_string())
    }
}

/// The low bits of an exception entry that hold its table index.
const INDEX_MASK: u16 = (1 << EXC_INDEX_BITS) - 1;

impl CompressedMatrix {
    /// The matrix whose rows are `parts`' rows in order, built from their
    /// tile streams without decoding: `stack_rows(&[q, k, v]).decode()` is
    /// the row concatenation of `q.decode()`, `k.decode()`, `v.decode()`, bit
    /// for bit.
    ///
    /// The parts must have the same columns and window base, and all but the
    /// last a multiple of `TILE_ROWS` rows (see [`NotStackable`]). The merged
    /// exception table is the one [`CompressedMatrix::encode`] would choose
    /// for the stacked weights with this base (the 31 most frequent
    /// exception exponents); the rest become far exceptions, so a union of
    /// tables longer than 31 is no obstacle. When the encoder would also pick
    /// this base for the stacked weights, the result is exactly
    /// `encode(stacked weights)`.
    pub fn stack_rows(parts: &[&CompressedMatrix]) -> Result<CompressedMatrix, NotStackable> {
        let first = parts.first().ok_or(NotStackable::NoParts)?;
        let (cols, base) = (first.cols(), first.base());
        let mut rows = 0usize;
        for (i, part) in parts.iter().enumerate() {
            if part.cols() != cols {
                return Err(NotStackable::ColsDiffer {
                    part: i,
                    cols: part.cols(),
                    expected: cols,
                });
            }
            if part.base() != base {
                return Err(NotStackable::BasesDiffer {
                    part: i,
                    base: part.base(),
                    expected: base,
                });
            }
            let last = i + 1 == parts.len();
            if !last && !part.rows().is_multiple_of(TILE_ROWS) {
                return Err(NotStackable::RowsNotTileAligned {
                    part: i,
                    rows: part.rows(),
                });
            }
            rows = rows
                .checked_add(part.rows())
                .ok_or(NotStackable::TooLarge)?;
        }
        // With whole row tiles before the last part, the stacked matrix has
        // exactly the parts' tiles, in order (from_parts checks the sum).
        let tile_bytes = tile_count(rows, cols)
            .and_then(|tiles| tiles.checked_mul(TILE_BYTES))
            .ok_or(NotStackable::TooLarge)?;

        // The true exponent of every exception, part by part in stream order.
        let exponents = parts
            .iter()
            .enumerate()
            .map(|(i, part)| exception_exponents(i, &part.parts))
            .collect::<Result<Vec<_>, _>>()?;
        let (exception_table, index_of) = merged_table(&exponents);

        // try_reserve: a size no allocation can hold is an error, not a panic.
        let mut tiles = Vec::new();
        tiles
            .try_reserve_exact(tile_bytes)
            .map_err(|_| NotStackable::TooLarge)?;
        let mut exceptions = Vec::new();
        let mut far_exponents = Vec::new();
        let mut exception_starts = vec![0u32];
        let mut far_starts = vec![0u32];
        for (part, part_exponents) in parts.iter().zip(&exponents) {
            let p = &part.parts;
            tiles.extend_from_slice(&p.tiles);
            // Entries keep their tile and position; only the index changes.
            // Far exponents are appended in entry order, tile by tile, as
            // far_starts requires. (On consistent parts the counts are exact;
            // on others `saturating_sub` and `take` keep this panic-free and
            // from_parts below rejects the result.)
            let mut entries = p.exceptions.iter().zip(part_exponents);
            for bounds in p.exception_starts.windows(2) {
                let count = bounds[1].saturating_sub(bounds[0]) as usize;
                for (&entry, &exponent) in entries.by_ref().take(count) {
                    let index = index_of[exponent as usize];
                    exceptions.push((entry & !INDEX_MASK) | index);
                    if index == EXC_FAR {
                        far_exponents.push(exponent);
                    }
                }
                exception_starts.push(offset(exceptions.len())?);
                far_starts.push(offset(far_exponents.len())?);
            }
        }

        CompressedMatrix::from_parts(MatrixParts {
            rows,
            cols,
            base,
            exception_table,
            tiles,
            exception_starts,
            exceptions,
            far_starts,
            far_exponents,
        })
        .map_err(|e| NotStackable::Invalid(format!("stacked matrix: {e}")))
    }
}

/// A u32 offset into the stacked exception or far-exponent array.
fn offset(len: usize) -> Result<u32, NotStackable> {
    u32::try_from(len).map_err(|_| NotStackable::TooLarge)
}

/// The exponent of each exception of `p`, in entry order. Far exponents are
/// stored in entry order tile after tile, and each tile's far range starts
/// where the previous one ends (from_parts checks both), so the k-th far
/// entry of the whole matrix owns `far_exponents[k]`.
fn exception_exponents(part: usize, p: &MatrixParts) -> Result<Vec<u8>, NotStackable> {
    let mut far = p.far_exponents.iter();
    p.exceptions
        .iter()
        .map(|&entry| {
            let (_, _, index) = exception_entry(entry);
            let exponent = if index == EXC_FAR {
                far.next()
            } else {
                p.exception_table.get(index as usize)
            };
            exponent.copied().ok_or_else(|| {
                NotStackable::Invalid(format!(
                    "part {part}: exception index {index} names no exponent"
                ))
            })
        })
        .collect()
}

/// The stacked matrix's exception table: the (at most 31) exponents that
/// most exceptions carry, by falling count then by value (the encoder's
/// rule, so that stacking agrees with encoding the stacked weights), and for
/// every exponent its index, [`EXC_FAR`] for those left out. The parts'
/// tables only name exponents; counting the exceptions themselves also
/// covers exponents a part kept as far ones.
fn merged_table(exponents: &[Vec<u8>]) -> (Vec<u8>, [u16; 256]) {
    let mut count = [0u64; 256];
    for &e in exponents.iter().flatten() {
        count[e as usize] += 1;
    }
    let mut used: Vec<u8> = (0..=255u8).filter(|&e| count[e as usize] > 0).collect();
    used.sort_by_key(|&e| (std::cmp::Reverse(count[e as usize]), e));
    used.truncate(EXC_TABLE_LEN);
    let mut index_of = [EXC_FAR; 256];
    for (i, &e) in used.iter().enumerate() {
        // i < EXC_TABLE_LEN = 31, so it fits the 5-bit index below EXC_FAR.
        index_of[e as usize] = i as u16;
    }
    (used, index_of)
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;
    use crate::rng::{SplitMix64, fresh_seed};
    use crate::synth::trained_like;

    /// Bits `sign | exponent | mantissa` with random sign and mantissa.
    fn with_exponent(rng: &mut SplitMix64, exponent: u8) -> u16 {
        let r = rng.next_u64() as u16;
        (r & 0x807F) | (u16::from(exponent) << 7)
    }

    /// A matrix whose exponents are uniform over the window `[base, base+7]`
    /// except that every `every`-th weight (`every >= 3`) takes a random
    /// exponent from `outside`. Weight 0 has exponent `base + 7` and weight 1
    /// exponent `base`, so with `outside` at least 8 below `base` or 15 above
    /// it every other window covers fewer weights (or ties at a higher base,
    /// for a single weight): the encoder picks `base`, whatever the shape.
    fn windowed(
        rng: &mut SplitMix64,
        rows: usize,
        cols: usize,
        base: u8,
        outside: &[u8],
        every: usize,
    ) -> Vec<bf16> {
        (0..rows * cols)
            .map(|i| {
                let r = rng.next_u64();
                let exponent = match i {
                    0 => base + 7,
                    1 => base,
                    _ if !outside.is_empty() && i % every == every - 1 => {
                        outside[(r >> 32) as usize % outside.len()]
                    }
                    _ => base + (r % 8) as u8,
                };
                bf16::from_bits(with_exponent(rng, exponent))
            })
            .collect()
    }

    /// Encodes each part, stacks them and checks, bit for bit, that the
    /// stacked matrix decodes to the parts' rows in order, and that it is
    /// what encoding those rows gives when the encoder picks the same base.
    fn check(seed: u64, parts: &[(usize, usize, Vec<bf16>)]) -> CompressedMatrix {
        check_or_refused(seed, parts).unwrap_or_else(|| {
            panic!("seed {seed}: the encoder chose different bases for the parts")
        })
    }

    /// [`check`], except that parts the encoder gave different window bases
    /// (as small random matrices can get) must be refused as such: `None`.
    fn check_or_refused(
        seed: u64,
        parts: &[(usize, usize, Vec<bf16>)],
    ) -> Option<CompressedMatrix> {
        let shapes: Vec<(usize, usize)> = parts.iter().map(|p| (p.0, p.1)).collect();
        let encoded: Vec<CompressedMatrix> = parts
            .iter()
            .map(|(rows, cols, w)| CompressedMatrix::encode(w, *rows, *cols).unwrap())
            .collect();
        let refs: Vec<&CompressedMatrix> = encoded.iter().collect();
        let result = CompressedMatrix::stack_rows(&refs);
        if let Some(i) = encoded.iter().position(|m| m.base() != encoded[0].base()) {
            let want = NotStackable::BasesDiffer {
                part: i,
                base: encoded[i].base(),
                expected: encoded[0].base(),
            };
            assert_eq!(result, Err(want), "seed {seed}: {shapes:?}");
            return None;
        }
        let stacked = result.unwrap_or_else(|e| panic!("seed {seed}: {shapes:?}: {e}"));
        let want: Vec<u16> = parts
            .iter()
            .flat_map(|p| p.2.iter().map(|v| v.to_bits()))
            .collect();
        let rows: usize = shapes.iter().map(|s| s.0).sum();
        assert_eq!(
            (stacked.rows(), stacked.cols()),
            (rows, shapes[0].1),
            "seed {seed}: {shapes:?}"
        );
        let got = stacked.decode();
        if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i]) {
            panic!(
                "seed {seed}: {shapes:?}: element {i} (row {}) was {:#06x}, stacked decodes {:#06x}",
                i / shapes[0].1,
                want[i],
                got[i].to_bits()
            );
        }
        // The same as decoding each part: the parts round-trip themselves.
        for (m, (_, _, w)) in encoded.iter().zip(parts) {
            let back = m.decode();
            assert!(
                back.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                "seed {seed}: {shapes:?}: a part does not round-trip"
            );
        }
        let direct =
            CompressedMatrix::encode(bytemuck::cast_slice(&want), rows, shapes[0].1).unwrap();
        if direct.base() == stacked.base() {
            assert!(
                direct == stacked,
                "seed {seed}: {shapes:?}: stacking differs from encoding the stacked rows"
            );
        }
        Some(stacked)
    }

    #[test]
    fn trained_like_parts_at_random_shapes_stack_losslessly() {
        let seed = fresh_seed();
        let mut rng = SplitMix64::new(seed);
        let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
        let mut stacked = 0;
        for _ in 0..24 {
            // Narrow matrices are rare so that most cases share the base.
            let cols = if pick(4) == 0 {
                1 + pick(64)
            } else {
                64 + pick(400)
            };
            let count = 1 + pick(4);
            let parts: Vec<(usize, usize, Vec<bf16>)> = (0..count)
                .map(|i| {
                    // All but the last fill whole row tiles; the last may not.
                    let rows = if i + 1 < count {
                        TILE_ROWS * (1 + pick(3))
                    } else {
                        1 + pick(3 * TILE_ROWS)
                    };
                    let w = trained_like(rows, cols, pick(1 << 40) as u64).unwrap();
                    (rows, cols, w)
                })
                .collect();
            stacked += usize::from(check_or_refused(seed, &parts).is_some());
        }
        // Trained-like weights of 64+ columns share the base 117 but for rare
        // small last parts; narrow ones often do not.
        assert!(
            stacked >= 12,
            "seed {seed}: only {stacked} of 24 cases shared a base"
        );
    }

    #[test]
    fn tiny_odd_and_single_parts() {
        let seed = fresh_seed();
        let mut rng = SplitMix64::new(seed);
        let shapes: &[&[(usize, usize)]] = &[
            &[(1, 1)],
            &[(3, 5)],
            &[(16, 1), (1, 1)],
            &[(16, 127), (16, 127), (15, 127)],
            &[(32, 129), (16, 129)],
            &[(16, 128), (16, 128), (16, 128)],
            &[(48, 256), (1, 256)],
        ];
        for parts in shapes {
            let parts: Vec<_> = parts
                .iter()
                .map(|&(rows, cols)| {
                    let w = windowed(&mut rng, rows, cols, 100, &[3, 60, 120, 255], 5);
                    (rows, cols, w)
                })
                .collect();
            check(seed, &parts);
        }
        // A single part comes back as itself.
        let w = trained_like(40, 300, seed).unwrap();
        let m = CompressedMatrix::encode(&w, 40, 300).unwrap();
        assert_eq!(CompressedMatrix::stack_rows(&[&m]), Ok(m.clone()));
    }

    #[test]
    fn parts_with_different_exception_sets_stack() {
        let seed = fresh_seed();
        let mut rng = SplitMix64::new(seed);
        // Disjoint, overlapping and empty exception sets around base 120,
        // including zero/subnormal (0) and Inf/NaN (255) exponents.
        let sets: [&[u8]; 4] = [&[0, 1, 2, 119], &[119, 128, 200], &[], &[255, 254, 60]];
        let parts: Vec<_> = sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let rows = if i == 3 { 7 } else { 32 };
                (rows, 200, windowed(&mut rng, rows, 200, 120, set, 9))
            })
            .collect();
        let stacked = check(seed, &parts);
        let mut table = stacked.parts().exception_table.clone();
        table.sort_unstable();
        assert_eq!(table, [0, 1, 2, 60, 119, 128, 200, 254, 255], "seed {seed}");
        assert!(stacked.parts().far_exponents.is_empty(), "seed {seed}");
    }

    #[test]
    fn a_union_of_tables_longer_than_the_table_becomes_far_exceptions() {
        let seed = fresh_seed();
        let mut rng = SplitMix64::new(seed);
        // Two parts of 20 out-of-window exponents each, disjoint: 40 > 31.
        let low: Vec<u8> = (10..30).collect();
        let high: Vec<u8> = (140..160).collect();
        let a = windowed(&mut rng, 64, 256, 120, &low, 20);
        let b = windowed(&mut rng, 33, 256, 120, &high, 20);
        for (w, rows) in [(&a, 64), (&b, 33)] {
            let m = CompressedMatrix::encode(w, rows, 256).unwrap();
            assert_eq!(m.parts().exception_table.len(), 20, "seed {seed}");
            assert!(m.parts().far_exponents.is_empty(), "seed {seed}");
        }
        let stacked = check(seed, &[(64, 256, a), (33, 256, b.clone())]);
        let p = stacked.parts();
        assert_eq!(p.exception_table.len(), EXC_TABLE_LEN, "seed {seed}");
        let far: std::collections::BTreeSet<u8> = p.far_exponents.iter().copied().collect();
        assert_eq!(far.len(), 40 - EXC_TABLE_LEN, "seed {seed}");
        assert!(far.iter().all(|e| !p.exception_table.contains(e)));

        // A part that already has far exceptions (60 distinct exponents in
        // one part), stacked with itself and another: still exact.
        let many: Vec<u8> = (0..60).chain(200..230).collect();
        let c = windowed(&mut rng, 16, 256, 120, &many, 4);
        let mc = CompressedMatrix::encode(&c, 16, 256).unwrap();
        assert!(!mc.parts().far_exponents.is_empty(), "seed {seed}");
        let stacked = check(seed, &[(16, 256, c.clone()), (16, 256, c), (33, 256, b)]);
        assert!(!stacked.parts().far_exponents.is_empty(), "seed {seed}");
    }

    #[test]
    fn the_top_window_base_keeps_finite_padding() {
        // Base 248 is the one base whose codes reach exponent 255 (Inf/NaN),
        // where from_parts checks the padding; stacking keeps it as it was.
        let seed = fresh_seed();
        let mut rng = SplitMix64::new(seed);
        let parts: Vec<_> = [(16, 130), (5, 130)]
            .iter()
            .map(|&(rows, cols)| (rows, cols, windowed(&mut rng, rows, cols, 248, &[7], 11)))
            .collect();
        assert_eq!(check(seed, &parts).base(), 248);
    }

    #[test]
    fn refusals_say_why() {
        let seed = fresh_seed();
        let m = |rows: usize, cols: usize, base: u8| {
            let mut rng = SplitMix64::new(seed ^ (rows * 1000 + cols) as u64);
            let w = windowed(&mut rng, rows, cols, base, &[1], 50);
            CompressedMatrix::encode(&w, rows, cols).unwrap()
        };
        let stack = CompressedMatrix::stack_rows;
        assert_eq!(stack(&[]), Err(NotStackable::NoParts));

        let (a, b) = (m(16, 128, 100), m(16, 129, 100));
        assert_eq!(
            stack(&[&a, &a, &b]),
            Err(NotStackable::ColsDiffer {
                part: 2,
                cols: 129,
                expected: 128
            })
        );
        // Fewer columns, same number of column tiles: still a different shape.
        let c = m(16, 100, 100);
        assert!(matches!(
            stack(&[&a, &c]),
            Err(NotStackable::ColsDiffer { part: 1, .. })
        ));

        let odd = m(17, 128, 100);
        assert_eq!(
            stack(&[&a, &odd, &a]),
            Err(NotStackable::RowsNotTileAligned { part: 1, rows: 17 })
        );
        assert!(stack(&[&a, &a, &odd]).is_ok(), "the last part may be odd");

        let other = m(16, 128, 90);
        assert_eq!(other.base(), 90);
        assert_eq!(
            stack(&[&a, &other]),
            Err(NotStackable::BasesDiffer {
                part: 1,
                base: 90,
                expected: 100
            })
        );
        for e in [
            NotStackable::NoParts,
            NotStackable::TooLarge,
            NotStackable::Invalid("x".into()),
        ] {
            assert!(!e.to_string().is_empty());
            assert!(matches!(
                crate::Error::from(e),
                crate::Error::Unsupported(_)
            ));
        }
    }

    /// Matrices that `encode` and `from_parts` can never make (built here
    /// through the crate-private field), to show that sizes are checked
    /// before any data is touched and that inconsistent sections are
    /// reported, not panicked on.
    #[test]
    fn impossible_inputs_are_errors_not_panics() {
        let fake = |rows: usize, cols: usize| CompressedMatrix {
            parts: MatrixParts {
                rows,
                cols,
                base: 100,
                exception_starts: vec![0],
                far_starts: vec![0],
                ..Default::default()
            },
        };
        let huge = fake(usize::MAX - (TILE_ROWS - 1), 1);
        assert_eq!(
            CompressedMatrix::stack_rows(&[&huge, &huge]),
            Err(NotStackable::TooLarge)
        );
        let wide = fake(usize::MAX / 2 - (TILE_ROWS - 1), usize::MAX / 2);
        assert_eq!(
            CompressedMatrix::stack_rows(&[&wide]),
            Err(NotStackable::TooLarge)
        );
        // A tile count that fits but a stream no allocation can hold.
        let tall = fake(usize::MAX / 256, 1); // 2^52 tiles, 1.27e19 bytes > isize::MAX
        assert_eq!(
            CompressedMatrix::stack_rows(&[&tall]),
            Err(NotStackable::TooLarge)
        );

        // An entry naming table index 5 of an empty table.
        let mut bad = CompressedMatrix::encode(&[bf16::ONE; 16 * 128], 16, 128).unwrap();
        bad.parts.exceptions = vec![5];
        bad.parts.exception_starts = vec![0, 1];
        assert!(matches!(
            CompressedMatrix::stack_rows(&[&bad]),
            Err(NotStackable::Invalid(_))
        ));
        // A far exception in the padding row of a 15-row matrix: copied
        // as it is, it fails the validation of the stacked sections.
        let mut bad = CompressedMatrix::encode(&[bf16::ONE; 15 * 128], 15, 128).unwrap();
        bad.parts.exceptions = vec![((15 * 128) << EXC_INDEX_BITS) as u16 | EXC_FAR];
        bad.parts.exception_starts = vec![0, 1];
        bad.parts.far_exponents = vec![7];
        bad.parts.far_starts = vec![0, 1];
        assert!(matches!(
            CompressedMatrix::stack_rows(&[&bad]),
            Err(NotStackable::Invalid(_))
        ));
    }
}
