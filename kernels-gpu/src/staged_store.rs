//! Where the Hopper ZipGEMM's store stage puts a warp's BF16 results in
//! shared memory on their way to `Y` (`zipgemm_sm90::unit_store`): one
//! definition for the kernel and for the CPU tests below, which replay the
//! `stmatrix` and the read-back and check every element lands where the
//! accumulator layout says.
//!
//! A consumer warp holds 16 rows × N columns of `Yᵀ`; in `Y` (element
//! (row `m`, activation `c`) at `c · rows + m`) each column of them is 32
//! contiguous bytes. `stmatrix.trans` turns the accumulators, packed to
//! BF16 pairs, into exactly that order in the warp's A stage: the staging
//! holds column `c`'s two 8-row halves at [`staged_offset`]`(c, h)`. The
//! warp then reads 16-byte chunks back and stores them with 16-byte
//! stores, a warp's 512 bytes per instruction, instead of 2-byte stores
//! of which a warp instruction covers 4 columns × 8 rows.

use crate::format::TILE_ROWS;
use crate::sm90::A_STAGE_BYTES;

/// Bytes of one staged column: the warp's 16 rows in BF16.
pub const COLUMN_BYTES: usize = TILE_ROWS * 2;
/// Columns one round stages: as many as fill the warp's A stage (128);
/// N = 256 takes two rounds.
pub const ROUND_COLUMNS: usize = A_STAGE_BYTES / COLUMN_BYTES;
/// 8-column accumulator blocks per round.
pub const ROUND_BLOCKS: usize = ROUND_COLUMNS / 8;
/// Columns one `stmatrix.x4` stores (two accumulator blocks) and one warp
/// read-back instruction covers (32 lanes × 16 bytes).
pub const STEP_COLUMNS: usize = 16;
/// Staging bytes per [`STEP_COLUMNS`].
pub const STEP_BYTES: usize = STEP_COLUMNS * COLUMN_BYTES;

const _: () = assert!(ROUND_COLUMNS.is_multiple_of(STEP_COLUMNS));

/// Byte offset of half `half` (rows `8 · half ..`) of staged column `col`.
/// The halves trade places every 4 columns: the 8 rows one `stmatrix`
/// matrix writes are 8 consecutive columns of one half, and at a 32-byte
/// column pitch without the trade rows 0–3 and 4–7 fell in the same banks
/// (two wavefronts for each matrix).
#[inline(always)]
pub const fn staged_offset(col: usize, half: usize) -> usize {
    col * COLUMN_BYTES + (half ^ ((col / 4) % 2)) * 16
}

/// The (column, half) whose stored row lane `lane` addresses in the
/// `stmatrix.x4.trans` of blocks `2p` and `2p + 1`, less `16p` columns:
/// matrix `k = lane / 8` is block `2p + k / 2`, half `k % 2`, and its row
/// `lane % 8` is that block's column `lane % 8`.
#[inline(always)]
pub const fn stmatrix_target(lane: u32) -> (usize, usize) {
    let (k, r) = ((lane / 8) as usize, (lane % 8) as usize);
    (8 * (k / 2) + r, k % 2)
}

/// The (column, half) lane `lane` reads back and stores in read-back step
/// `i`, less `16i` columns: chunk `32i + lane` of the staging's columns in
/// order.
#[inline(always)]
pub const fn readback_target(lane: u32) -> (usize, usize) {
    ((lane / 2) as usize, (lane % 2) as usize)
}

/// The four registers lane-wise of the `stmatrix.x4` of blocks `j`, `j +
/// 1`: matrix `k` is block `j + k / 2`'s rows `8 · (k % 2) ..`, whose
/// elements the accumulator holds as `i = 2 · (k % 2)` and `i + 1`
/// (`sm90::accumulator_position`), packed low first by `pack`.
#[inline(always)]
pub fn stmatrix_registers(acc: &[[f32; 4]], j: usize, pack: impl Fn(f32, f32) -> u32) -> [u32; 4] {
    [
        pack(acc[j][0], acc[j][1]),
        pack(acc[j][2], acc[j][3]),
        pack(acc[j + 1][0], acc[j + 1][1]),
        pack(acc[j + 1][2], acc[j + 1][3]),
    ]
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sm90::accumulator_position;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn staged_offsets_tile_the_a_stage() {
        let mut seen = vec![false; A_STAGE_BYTES / 16];
        for col in 0..ROUND_COLUMNS {
            for half in 0..2 {
                let at = staged_offset(col, half);
                assert_eq!(at % 16, 0);
                assert!(!seen[at / 16], "column {col} half {half}");
                seen[at / 16] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    /// Each `stmatrix` matrix is one phase of 8 rows × 16 bytes: distinct
    /// banks make it one wavefront. Each read-back quarter-warp likewise.
    #[test]
    fn stmatrix_phases_and_readback_quarters_are_conflict_free() {
        let bank_group = |at: usize| (at / 16) % 8;
        for p in 0..ROUND_COLUMNS / STEP_COLUMNS {
            for k in 0..4u32 {
                let groups: Vec<usize> = (0..8)
                    .map(|r| {
                        let (c, h) = stmatrix_target(8 * k + r);
                        bank_group(staged_offset(STEP_COLUMNS * p + c, h))
                    })
                    .collect();
                let mut sorted = groups.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), 8, "step {p} matrix {k}: {groups:?}");
            }
            for q in 0..4u32 {
                let mut groups: Vec<usize> = (0..8)
                    .map(|l| {
                        let (c, h) = readback_target(8 * q + l);
                        bank_group(staged_offset(STEP_COLUMNS * p + c, h))
                    })
                    .collect();
                groups.sort_unstable();
                groups.dedup();
                assert_eq!(groups.len(), 8);
            }
        }
    }

    /// The kernel's lane offsets are step-invariant: step `p` adds
    /// [`STEP_BYTES`] (so it computes each lane's offset once).
    #[test]
    fn steps_are_a_constant_stride() {
        for lane in 0..32 {
            let (c, h) = stmatrix_target(lane);
            let (rc, rh) = readback_target(lane);
            for p in 0..ROUND_COLUMNS / STEP_COLUMNS {
                assert_eq!(
                    staged_offset(STEP_COLUMNS * p + c, h),
                    staged_offset(c, h) + p * STEP_BYTES
                );
                assert_eq!(
                    staged_offset(STEP_COLUMNS * p + rc, rh),
                    staged_offset(rc, rh) + p * STEP_BYTES
                );
            }
        }
    }

    /// Replays one round: every lane's accumulators through `stmatrix.trans`
    /// (PTX ISA semantics) into the staging, then the read-back into a
    /// column-major 16 × 128 `Y`; each element must be the accumulator the
    /// layout places there.
    #[test]
    fn a_round_puts_every_accumulator_where_the_layout_says() {
        // acc[lane][j][i]: a value naming its (row, column).
        let value = |row: u32, col: u32| (row * 1000 + col) as f32;
        let acc: Vec<Vec<[f32; 4]>> = (0..32)
            .map(|lane| {
                (0..ROUND_BLOCKS as u32)
                    .map(|j| {
                        core::array::from_fn(|i| {
                            let (r, c) = accumulator_position(lane, j, i as u32);
                            value(r, c)
                        })
                    })
                    .collect()
            })
            .collect();
        // The "BF16" of the replay: each value (below 2^16) in 16 bits.
        let pack = |lo: f32, hi: f32| lo as u32 | (hi as u32) << 16;
        let mut staging = vec![f32::NAN; A_STAGE_BYTES / 2];
        for p in 0..ROUND_BLOCKS / 2 {
            for k in 0..4usize {
                // Matrix k, as the lanes hold it: lane i has row i / 4,
                // columns 2 (i % 4) and + 1.
                let mut m = [[0f32; 8]; 8];
                for lane in 0..32usize {
                    let regs = stmatrix_registers(&acc[lane], 2 * p, pack);
                    let (lo, hi) = ((regs[k] & 0xFFFF) as f32, (regs[k] >> 16) as f32);
                    m[lane / 4][2 * (lane % 4)] = lo;
                    m[lane / 4][2 * (lane % 4) + 1] = hi;
                }
                // Transposed: stored row r (address of lane 8k + r) gets
                // column r.
                for r in 0..8u32 {
                    let (c, h) = stmatrix_target(8 * k as u32 + r);
                    let at = staged_offset(STEP_COLUMNS * p + c, h) / 2;
                    for e in 0..8 {
                        staging[at + e] = m[e][r as usize];
                    }
                }
            }
        }
        let mut y = vec![f32::NAN; 16 * ROUND_COLUMNS];
        for i in 0..ROUND_COLUMNS / STEP_COLUMNS {
            for lane in 0..32u32 {
                let (c, h) = readback_target(lane);
                let col = STEP_COLUMNS * i + c;
                let at = staged_offset(col, h) / 2;
                for e in 0..8 {
                    y[col * 16 + 8 * h + e] = staging[at + e];
                }
            }
        }
        for col in 0..ROUND_COLUMNS as u32 {
            for row in 0..16u32 {
                assert_eq!(
                    y[(col * 16 + row) as usize],
                    value(row, col),
                    "({row}, {col})"
                );
            }
        }
    }

    #[test]
    fn stmatrix_registers_pair_the_halves() {
        let acc = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]];
        let r = stmatrix_registers(&acc, 0, |lo, hi| (lo as u32) << 8 | hi as u32);
        assert_eq!(r, [0x102, 0x304, 0x506, 0x708]);
    }
}
