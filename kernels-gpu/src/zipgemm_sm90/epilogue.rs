//! The store stage: one unit segment's accumulators to `Y`, directly or
//! through the stream-K partial sums (same protocol as the `mma.sync`
//! kernel's `Output::reduce_partial`, with 128-row units and the consumer
//! warpgroups' named barrier instead of the block's).

use super::Block;
use super::consumer::FragD;
use super::smem::Smem;
use crate::format::TILE_ROWS;
use crate::launch::STORE_BF16;
use crate::ptx::{
    atom_add_acq_rel_u32, f32_to_bf16, ld_cg_v4_f32, ld_shared_u32, named_barrier_sync, opaque,
    st_shared_u32,
};
use crate::sm90::{
    CONSUMER_BARRIER, CONSUMER_THREADS, UNIT_ROW_TILES, UNIT_ROWS, accumulator_position,
};

/// The part of one unit a block's share covers.
pub(super) struct Segment {
    pub(super) u: u32,
    /// Column tiles covered.
    pub(super) tiles: u32,
    /// All of the unit's column tiles: no partial sums.
    pub(super) whole: bool,
    /// The share's first segment (its partial sums go to slot 0, else 1).
    pub(super) first: bool,
}

/// Most 8-column blocks of any variant (N = 256): the unrolled loops below
/// run this far and skip the blocks a variant lacks.
const MAX_NJ: usize = 32;
/// Partial-sum runs a thread adds at a time in the split-K reduction.
const RUN_GROUP: usize = 8;
const _: () = assert!(
    MAX_NJ == 4 * RUN_GROUP,
    "the reduction unrolls 4 groups of 8 runs"
);

/// `Y[n][m] = v` as BF16 or f32.
///
/// # Safety
/// `at` < n × rows.
#[inline(always)]
unsafe fn put(b: &Block, at: usize, v: f32) {
    // SAFETY: the caller's promise.
    unsafe {
        if b.p.store == STORE_BF16 {
            *b.p.y.add(at) = f32_to_bf16(v)
        } else {
            *b.p.y32.add(at) = v
        }
    }
}

/// Stores a segment's results. Called by every consumer thread.
///
/// # Safety
/// `acc` holds this thread's accumulators for the segment, complete (no
/// `wgmma` pending); `warp` and `lane` place it (`consumer::run`).
#[inline(always)]
pub(super) unsafe fn store<const NJ: usize>(
    b: &Block,
    s: &Smem,
    acc: &FragD<NJ>,
    seg: &Segment,
    warp: u32,
    lane: u32,
    ctid: u32,
) {
    const { assert!(NJ <= MAX_NJ) };
    // Everything the stores derive from the lane is recomputed per segment
    // (see `ptx::opaque`): hoisted out of the caller's loop, it spilled.
    let (warp, lane, ctid) = (opaque(warp), opaque(lane), opaque(ctid));
    // SAFETY: the caller's promise; bounds checked below.
    unsafe {
        if seg.whole {
            let rt = seg.u * UNIT_ROW_TILES + warp;
            if rt < b.row_tiles {
                store_direct::<NJ>(b, acc, rt, lane);
            }
        } else {
            reduce_partial::<NJ>(b, s, acc, seg, warp, lane, ctid);
        }
    }
}

/// A whole unit in one share: this warp's 16 rows straight to `Y`.
#[inline(always)]
unsafe fn store_direct<const NJ: usize>(b: &Block, acc: &FragD<NJ>, rt: u32, lane: u32) {
    let (rows, n) = (b.p.matrix.rows, b.p.n);
    // Constant indices only: the accumulators stay in registers.
    seq_macro::seq!(J in 0..32 {
        if J < NJ {
            seq_macro::seq!(I in 0..4 {
                let (row, col) = accumulator_position(lane, J, I);
                let (m, col) = (rt * TILE_ROWS as u32 + row, b.n0 + col);
                if m < rows && col < n {
                    // SAFETY: inside Y (checked just above).
                    unsafe { put(b, col as usize * rows as usize + m as usize, acc[J][I]) }
                }
            });
        }
    });
}

/// Part of a unit: publish this share's sums in the block's slot and count
/// arrivals (in column tiles); the last block to finish the unit adds every
/// share's sums in block order, so the result does not depend on arrival
/// order, and writes `Y`.
#[inline(always)]
unsafe fn reduce_partial<const NJ: usize>(
    b: &Block,
    s: &Smem,
    acc: &FragD<NJ>,
    seg: &Segment,
    warp: u32,
    lane: u32,
    ctid: u32,
) {
    let p = b.p;
    let (work, u, chunks) = (&p.work, seg.u, p.chunks);
    let slot_len = (UNIT_ROWS * 8 * NJ as u32) as usize;
    // Slot of share `sh` for this chunk: 0 for the unit its share starts
    // in, 1 for the unit it ends in. Inside a slot, element (row of the
    // unit, column) is at `column · UNIT_ROWS + row`.
    let slot = |sh: u32, second: bool| (2 * (sh * chunks + b.chunk) + u32::from(second)) as usize;
    // SAFETY: slots lie in the partial buffer (2 × grid slots of slot_len,
    // host-sized); counters hold one entry per unit and chunk.
    unsafe {
        let mine = p.partial.add(slot(b.share, !seg.first) * slot_len);
        let row0 = warp * TILE_ROWS as u32;
        seq_macro::seq!(J in 0..32 {
            if J < NJ {
                seq_macro::seq!(I in 0..4 {
                    let (row, col) = accumulator_position(lane, J, I);
                    *mine.add((col * UNIT_ROWS + row0 + row) as usize) = acc[J][I];
                });
            }
        });
        named_barrier_sync(CONSUMER_BARRIER, CONSUMER_THREADS);
        if ctid == 0 {
            // Release publishes the consumers' sums (ordered before it by
            // the barrier); acquire, for the last, sees every other block's.
            let counter = p.counters.add((u * chunks + b.chunk) as usize);
            let done = atom_add_acq_rel_u32(counter, seg.tiles) + seg.tiles == p.matrix.col_tiles;
            if done {
                *counter = 0; // ready for the next launch
            }
            st_shared_u32(s.flag(), u32::from(done));
        }
        named_barrier_sync(CONSUMER_BARRIER, CONSUMER_THREADS);
        if ld_shared_u32(s.flag()) == 0 {
            return;
        }
        let (first, last) = work.unit_blocks(u, b.share);
        // Only the first share may hold this unit in its second slot.
        let first_second = work.starts_before(first, u);
        let slot_of = |sh: u32| slot(sh, sh == first && first_second);
        // Each thread adds NJ runs of four consecutive rows of one column,
        // run r at element 4 · (ctid + r · 256), [`RUN_GROUP`] runs at a
        // time (fewer for NJ < 8): one 16-byte load per run and slot, 8 in
        // flight. (All NJ runs at once kept 2 × 128 registers live at
        // N = 256 and spilled.)
        const {
            assert!(UNIT_ROWS.is_multiple_of(4) && (NJ < RUN_GROUP || NJ.is_multiple_of(RUN_GROUP)))
        };
        let run = |r: usize| 4 * (ctid as usize + r * CONSUMER_THREADS as usize);
        let (rows, n) = (p.matrix.rows, p.n);
        seq_macro::seq!(G in 0..4 {
            if G * RUN_GROUP < NJ {
                let mut sum = [[0f32; 4]; RUN_GROUP];
                let mut blk = first;
                while blk <= last {
                    let from = p.partial.add(slot_of(blk) * slot_len);
                    seq_macro::seq!(R in 0..8 {
                        if G * RUN_GROUP + R < NJ {
                            let v = ld_cg_v4_f32(from.add(run(G * RUN_GROUP + R)));
                            seq_macro::seq!(E in 0..4 {
                                sum[R][E] += v[E];
                            });
                        }
                    });
                    blk += 1;
                }
                seq_macro::seq!(R in 0..8 {
                    let i = run(G * RUN_GROUP + R) as u32;
                    let (m, col) = (u * UNIT_ROWS + i % UNIT_ROWS, b.n0 + i / UNIT_ROWS);
                    if G * RUN_GROUP + R < NJ && col < n {
                        seq_macro::seq!(E in 0..4 {
                            if m + E < rows {
                                put(b, col as usize * rows as usize + (m + E) as usize, sum[R][E]);
                            }
                        });
                    }
                });
            }
        });
    }
}
