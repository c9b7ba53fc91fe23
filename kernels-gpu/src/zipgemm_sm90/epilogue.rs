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
    st_global_v4, st_shared_u32,
};
use crate::sm90::{
    CONSUMER_BARRIER, CONSUMER_THREADS, UNIT_ROW_TILES, UNIT_ROWS, accumulator_position,
    element_offset,
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
/// Accumulator blocks a thread adds at a time in the split-K reduction
/// (all 32 at once, at N = 256, would keep another 128 registers live).
const RUN_GROUP: usize = 8;
const _: () = assert!(
    MAX_NJ == 4 * RUN_GROUP,
    "the reduction unrolls 4 groups of 8 blocks"
);

/// Stores a segment's results. Called by every consumer thread.
///
/// # Safety
/// `acc` holds this thread's accumulators for the segment, complete (no
/// `wgmma` pending); `warp` and `lane` place it (`consumer::run`).
#[inline(always)]
pub(super) unsafe fn store<const NJ: usize>(
    b: &Block,
    s: &Smem,
    acc: &mut FragD<NJ>,
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
        // Two call sites, one per way the sums came: merged into one
        // (`whole || reduce_partial(..)`), n256 kept more values live
        // across the reduction and spilled 436 bytes.
        let rt = seg.u * UNIT_ROW_TILES + warp;
        #[allow(clippy::if_same_then_else)]
        if seg.whole {
            store_unit::<NJ>(b, acc, rt, lane);
        } else if reduce_partial::<NJ>(b, s, acc, seg, ctid) {
            store_unit::<NJ>(b, acc, rt, lane);
        }
    }
}

/// Row tile `rt` (this warp's) of a complete unit to `Y`, as BF16 or f32.
///
/// # Safety
/// As [`store_direct`].
#[inline(always)]
unsafe fn store_unit<const NJ: usize>(b: &Block, acc: &FragD<NJ>, rt: u32, lane: u32) {
    // SAFETY: the caller's promise; `store_direct` keeps indices in Y.
    unsafe {
        if rt >= b.row_tiles {
            return;
        }
        if b.p.store == STORE_BF16 {
            let y = b.p.y;
            store_direct::<NJ>(b, acc, rt, lane, |at, v| *y.add(at) = f32_to_bf16(v));
        } else {
            let y = b.p.y32;
            store_direct::<NJ>(b, acc, rt, lane, |at, v| *y.add(at) = v);
        }
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

/// Part of a unit: publish this share's sums in the block's slot and count
/// arrivals (in column tiles); the last block to finish the unit adds every
/// share's sums in block order, so the result does not depend on arrival
/// order, into its own accumulators, and returns true: the caller stores
/// them as a whole unit's.
///
/// A slot holds the sums in accumulator order, the 16 bytes of block `j`
/// of consumer thread `c` at float `(j · 256 + c) · 4`: each store and
/// load is 16 bytes, a warp's 512 contiguous ones, and the last block's
/// threads read exactly the elements they hold, so they add them in
/// registers and need no second layout. Before (v18 and earlier) a slot
/// was (row, column) ordered: 4-byte stores 8 rows tall per warp, and the
/// last block summed runs of four rows and stored them element by element
/// (Nsight Compute, 28672×4096, N = 256: the reduction held 15% of the
/// stall samples and executed a quarter as many instructions as the main
/// loop). This layout (v19): 28672×4096 N = 256 117.5 → 114.0 µs, N = 128
/// 79.2 → 76.8 (H200).
#[inline(always)]
unsafe fn reduce_partial<const NJ: usize>(
    b: &Block,
    s: &Smem,
    acc: &mut FragD<NJ>,
    seg: &Segment,
    ctid: u32,
) -> bool {
    let p = b.p;
    let (work, u, chunks) = (&p.work, seg.u, p.chunks);
    let slot_len = (UNIT_ROWS * 8 * NJ as u32) as usize;
    // Slot of share `sh` for this chunk: 0 for the unit its share starts
    // in, 1 for the unit it ends in.
    let slot = |sh: u32, second: bool| (2 * (sh * chunks + b.chunk) + u32::from(second)) as usize;
    // Float offset of this thread's block `j` inside a slot.
    let at = |j: usize| 4 * (j * CONSUMER_THREADS as usize + ctid as usize);
    // SAFETY: slots lie in the partial buffer (2 × grid slots of slot_len,
    // host-sized, 16-byte aligned); counters hold one entry per unit and
    // chunk.
    unsafe {
        let mine = p.partial.add(slot(b.share, !seg.first) * slot_len);
        seq_macro::seq!(J in 0..32 {
            if J < NJ {
                st_global_v4(mine.add(at(J)) as *mut u8, acc[J].map(f32::to_bits));
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
            return false;
        }
        let (first, last) = work.unit_blocks(u, b.share);
        // Only the first share may hold this unit in its second slot.
        let first_second = work.starts_before(first, u);
        let slot_of = |sh: u32| slot(sh, sh == first && first_second);
        // [`RUN_GROUP`] blocks of accumulators at a time (fewer for NJ <
        // 8): one 16-byte load per block and share, 8 in flight; each
        // block's sum replaces it once every share is in. This share's own
        // sums come from the registers they are still in: the same values,
        // added in the same place of the order.
        const { assert!(NJ < RUN_GROUP || NJ.is_multiple_of(RUN_GROUP)) };
        seq_macro::seq!(G in 0..4 {
            if G * RUN_GROUP < NJ {
                let mut sum = [[0f32; 4]; RUN_GROUP];
                let mut blk = first;
                while blk <= last {
                    let from = p.partial.add(slot_of(blk) * slot_len);
                    let own = blk == b.share;
                    seq_macro::seq!(R in 0..8 {
                        let j = G * RUN_GROUP + R;
                        if j < NJ {
                            let v = if own { acc[j] } else { ld_cg_v4_f32(from.add(at(j))) };
                            seq_macro::seq!(E in 0..4 {
                                sum[R][E] += v[E];
                            });
                        }
                    });
                    blk += 1;
                }
                seq_macro::seq!(R in 0..8 {
                    if G * RUN_GROUP + R < NJ {
                        acc[G * RUN_GROUP + R] = sum[R];
                    }
                });
            }
        });
        true
    }
}
