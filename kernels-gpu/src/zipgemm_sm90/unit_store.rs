//! The store stage's last step: a complete unit's results, one row tile
//! per consumer warp, from the accumulators to `Y`.
//!
//! BF16 results go through the warp's A stage (free between segments)
//! when `Y`'s columns allow 16-byte stores (`store_staged`); f32 results,
//! and BF16 ones into a `Y` whose columns do not start 16-byte aligned (a
//! row count that is not a multiple of 8, or an offset base), go straight
//! from the accumulators (`store_direct`).

use super::Block;
use super::consumer::FragD;
use super::smem::Smem;
use crate::format::TILE_ROWS;
use crate::launch::{STORE_BF16, STORE_KIND_MASK};
use crate::ptx::{f32_to_bf16, ld_shared_v4, opaque, pack_bf16x2, st_global_v4, sync_warp};
use crate::ptx_sm90::stmatrix_x4_trans;
use crate::sm90::{accumulator_position, element_offset};
use crate::staged_store::{
    ROUND_BLOCKS, ROUND_COLUMNS, STEP_BYTES, STEP_COLUMNS, readback_target, staged_offset,
    stmatrix_registers, stmatrix_target,
};

/// Row tile `rt` (consumer warp `warp`'s) of a complete unit to `Y`, as
/// BF16 or f32.
///
/// # Safety
/// `acc` holds the unit's complete sums for this thread (no `wgmma`
/// pending) and the warp's A stage holds nothing still to be read; all 32
/// lanes of the warp call this together.
#[inline(always)]
pub(super) unsafe fn store_unit<const NJ: usize>(
    b: &Block,
    s: &Smem,
    acc: &FragD<NJ>,
    warp: u32,
    rt: u32,
    lane: u32,
) {
    // SAFETY: the caller's promise; both stores keep indices in Y.
    unsafe {
        if rt >= b.row_tiles {
            return;
        }
        if b.p.store & STORE_KIND_MASK == STORE_BF16 {
            let y = b.p.y;
            // Block-uniform: every column of Y starts 16-byte aligned.
            // Through `opaque`, so it is tested here: hoisted to the
            // kernel's start, the two-block n64 variant spilled the flag.
            let bits = opaque((2 * b.p.matrix.rows) | (y as usize as u32));
            if bits.is_multiple_of(16) {
                store_staged::<NJ>(b, s.a(warp), acc, rt, lane);
            } else {
                store_direct::<NJ>(b, acc, rt, lane, |at, v| *y.add(at) = f32_to_bf16(v));
            }
        } else {
            let y = b.p.y32;
            store_direct::<NJ>(b, acc, rt, lane, |at, v| *y.add(at) = v);
        }
    }
}

/// This warp's 16 rows of a complete unit as BF16 through its A stage at
/// `s_a` (`crate::staged_store`): per 16 columns one `stmatrix.x4.trans`,
/// then one 16-byte shared load and one 16-byte global store per lane, in
/// rounds of 128 columns. Bounds are per 8-row half (the row count is a
/// multiple of 8) and per column.
///
/// Before (v28 and earlier) every element was a 2-byte store, a warp
/// instruction covering 8 rows of 4 columns in half-used sectors: 3 µs
/// for a 128 × 128 unit in the per-block timeline (28672×4096, N = 128).
///
/// # Safety
/// `Y` is 16-byte aligned with a row count that is a multiple of 8; as
/// [`store_unit`].
#[inline(always)]
unsafe fn store_staged<const NJ: usize>(b: &Block, s_a: u32, acc: &FragD<NJ>, rt: u32, lane: u32) {
    // The unrolled loops below: two rounds of 8 steps, whole stmatrix pairs.
    const {
        assert!(NJ.is_multiple_of(2) && NJ <= 2 * ROUND_BLOCKS);
        assert!(ROUND_COLUMNS / STEP_COLUMNS == 8);
    };
    // Opaque, as in `store_direct`: hoisted out of the loop over units,
    // values derived from them spilled.
    let (rows, n, lane) = (opaque(b.p.matrix.rows), b.p.n, opaque(lane));
    let (sc, sh) = stmatrix_target(lane);
    let s_write = s_a + staged_offset(sc, sh) as u32;
    let (rc, rh) = readback_target(lane);
    let s_read = s_a + staged_offset(rc, rh) as u32;
    let m = rt * TILE_ROWS as u32 + 8 * rh as u32;
    let row_ok = m < rows;
    let c0 = b.n0 + rc as u32;
    let y = b.p.y as *mut u8;
    // Bytes from column c0's element m: columns further are `rows` apart.
    let base = 2 * (c0 as usize * rows as usize + m as usize);
    let step = 2 * STEP_COLUMNS * rows as usize;
    // SAFETY: the caller's promise; the staging stays in the A stage
    // (`staged_store` tests), stores are bounded by row and column.
    unsafe {
        seq_macro::seq!(R in 0..2 {
            if R * ROUND_BLOCKS < NJ {
                // Every lane's earlier reads of the stage (the last tile's
                // fragments, or the round before) are done before it is
                // overwritten.
                sync_warp();
                seq_macro::seq!(P in 0..8 {
                    let j = R * ROUND_BLOCKS + 2 * P;
                    if j < NJ {
                        let regs = stmatrix_registers(acc, j, pack_bf16x2);
                        stmatrix_x4_trans(s_write + (P * STEP_BYTES) as u32, regs);
                    }
                });
                sync_warp();
                seq_macro::seq!(I in 0..8 {
                    let first = R * ROUND_COLUMNS + I * STEP_COLUMNS;
                    if first < 8 * NJ {
                        let v = ld_shared_v4(s_read + (I * STEP_BYTES) as u32);
                        let steps = first / STEP_COLUMNS;
                        if row_ok & (c0 + (first as u32) < n) {
                            st_global_v4(y.add(base + steps * step), v);
                        }
                    }
                });
            }
        });
        // The next segment's decode writes the stage.
        sync_warp();
    }
}

/// This warp's 16 rows of a complete unit straight to `Y` (element (row
/// `m`, activation `col`) at `col · rows + m`), each through `put(at, v)`.
///
/// The lane's element `i` of block `j` is at a constant offset from its
/// element 0 of block 0 (`accumulator_position`), so the addresses are one
/// base and constants, and the bounds are two row flags per thread and two
/// column flags per block. Computing each element's place and bounds, and
/// choosing BF16 or f32, per element (v19 and earlier) took ~22
/// instructions per element: 5 M executed at 28672×4096, N = 256, 17% of
/// the stall samples. This way (v20) took N = 256 from 112.8 to 109.2 µs
/// there (H200), N = 128 from 76.7 to 75.8.
///
/// # Safety
/// `put` stores to `Y` at an index below n × rows.
#[inline(always)]
unsafe fn store_direct<const NJ: usize>(
    b: &Block,
    acc: &FragD<NJ>,
    rt: u32,
    lane: u32,
    put: impl Fn(usize, f32),
) {
    // Opaque, as the lane is in `store`: the 64 column offsets `dc · rows`
    // depend on nothing else, and hoisted out of the loop over units they
    // spilled.
    let (rows, n) = (opaque(b.p.matrix.rows), b.p.n);
    let (row, col) = accumulator_position(lane, 0, 0);
    let m0 = rt * TILE_ROWS as u32 + row;
    let c0 = b.n0 + col;
    let base = c0 as usize * rows as usize + m0 as usize;
    let row_ok = [m0 < rows, m0 + 8 < rows];
    // Constant indices only: the accumulators stay in registers.
    seq_macro::seq!(J in 0..32 {
        if J < NJ {
            let col_ok = [c0 + 8 * J < n, c0 + 8 * J + 1 < n];
            seq_macro::seq!(I in 0..4 {
                let (dm, dc) = element_offset(J, I);
                // `&`, not `&&`: one predicate, no branch per element.
                if row_ok[dm / 8] & col_ok[dc % 2] {
                    put(base + dc * rows as usize + dm, acc[J][I]);
                }
            });
        }
    });
}
