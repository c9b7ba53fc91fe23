//! The store stage: one unit segment's accumulators to `Y` (`unit_store`)
//! whole or through the stream-K partial sums (same protocol as the `mma.sync`
//! kernel's `Output::reduce_partial`, with 128-row units and the consumer
//! warpgroups' named barrier instead of the block's).

use super::Block;
use super::consumer::FragD;
use super::smem::Smem;
use super::unit_store::store_unit;
use crate::launch::STORE_LATE_FIRST_COUNT;
use crate::ptx::{
    atom_add_acq_rel_u32, global_timer_ns, lane0_count_to, ld_cg_v4_f32, ld_shared_u32,
    named_barrier_arrive, named_barrier_sync, opaque, st_global_v4, st_shared_u32,
};
use crate::sm90::{
    CONSUMER_BARRIER, CONSUMER_THREADS, FINISHER_BARRIER_THREADS, PARTIALS_STORED_BARRIER,
    UNIT_ROW_TILES, UNIT_ROWS, VERDICT_BARRIER,
};

/// The part of one unit a block's share covers.
#[derive(Clone, Copy)]
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
            store_unit::<NJ>(b, s, acc, warp, rt, lane);
        } else if reduce_partial::<NJ>(b, s, acc, seg, ctid) {
            store_unit::<NJ>(b, s, acc, warp, rt, lane);
        }
    }
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
    // SAFETY: the slot and counter of this share and unit (see
    // `publish`); the flag word is the block's.
    unsafe {
        let counter = p.counters.add((seg.u * p.chunks + b.chunk) as usize);
        // Only the final segment comes here (a first one with more to
        // follow goes through `publish_first`). Checking the count first
        // (an acquire load by one thread), to skip publishing when every
        // other share is in, was v29: 1–2.4% faster on 28672×4096, 1.4–3.9%
        // slower on the small shapes, the same engine speed; not kept.
        publish::<NJ>(b, acc, seg, ctid);
        named_barrier_sync(CONSUMER_BARRIER, CONSUMER_THREADS);
        if ctid == 0 {
            // Release publishes the consumers' sums (ordered before it by
            // the barrier); acquire, for the last, sees every other block's.
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
        add_shares::<NJ>(b, acc, seg, ctid, true);
        true
    }
}

/// Float offset, in the partial-sum buffer, of share `sh`'s slot for this
/// block's activation chunk: each share has two, for the unit it starts in
/// and (`second`) the one it ends in.
#[inline(always)]
fn slot_offset<const NJ: usize>(b: &Block, sh: u32, second: bool) -> usize {
    let slot_len = (UNIT_ROWS * 8 * NJ as u32) as usize;
    (2 * (sh * b.p.chunks + b.chunk) + u32::from(second)) as usize * slot_len
}

/// Float offset of consumer thread `ctid`'s block `j` inside a slot.
#[inline(always)]
fn slot_at(j: usize, ctid: u32) -> usize {
    4 * (j * CONSUMER_THREADS as usize + ctid as usize)
}

/// This thread's sums of segment `seg` to the share's slot for it: 16-byte
/// stores, a warp's 512 contiguous bytes.
///
/// # Safety
/// The slot lies in the partial buffer (2 × grid slots, host-sized,
/// 16-byte aligned).
#[inline(always)]
unsafe fn publish<const NJ: usize>(b: &Block, acc: &FragD<NJ>, seg: &Segment, ctid: u32) {
    // SAFETY: the caller's promise.
    unsafe {
        let mine = b.p.partial.add(slot_offset::<NJ>(b, b.share, !seg.first));
        seq_macro::seq!(J in 0..32 {
            if J < NJ {
                st_global_v4(mine.add(slot_at(J, ctid)) as *mut u8, acc[J].map(f32::to_bits));
            }
        });
    }
}

/// The sum of every share's sums of unit `seg.u`, in share order, into
/// `acc`: from the slots, but this share's own from `acc` where
/// `own_in_registers` (the caller has just published them from there).
/// [`RUN_GROUP`] blocks of accumulators at a time (fewer for NJ < 8): one
/// 16-byte load per block and share, 8 in flight; each block's sum
/// replaces it once every share is in.
///
/// # Safety
/// Every share of the unit has published its sums, and this thread
/// acquired them (the count that found the unit complete, then barriers).
#[inline(always)]
unsafe fn add_shares<const NJ: usize>(
    b: &Block,
    acc: &mut FragD<NJ>,
    seg: &Segment,
    ctid: u32,
    own_in_registers: bool,
) {
    let (work, u) = (&b.p.work, seg.u);
    let (first, last) = work.unit_blocks(u, b.share);
    // Only the first share may hold this unit in its second slot.
    let first_second = work.starts_before(first, u);
    let slot_of = |sh: u32| slot_offset::<NJ>(b, sh, sh == first && first_second);
    const { assert!(NJ < RUN_GROUP || NJ.is_multiple_of(RUN_GROUP)) };
    // SAFETY: the caller's promise; slots lie in the partial buffer.
    unsafe {
        seq_macro::seq!(G in 0..4 {
            if G * RUN_GROUP < NJ {
                let mut sum = [[0f32; 4]; RUN_GROUP];
                let mut blk = first;
                while blk <= last {
                    let from = b.p.partial.add(slot_of(blk));
                    let own = own_in_registers && blk == b.share;
                    seq_macro::seq!(R in 0..8 {
                        let j = G * RUN_GROUP + R;
                        if j < NJ {
                            let v = if own { acc[j] } else { ld_cg_v4_f32(from.add(slot_at(j, ctid))) };
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
    }
}

/// The share's first segment when more follow (`Block::defers_first_arrival`):
/// its sums go to the slot, and the finisher warp counts the arrival
/// ([`count_first`]) while the consumers go on to the next segment, instead
/// of all of them waiting for the count. The count is a fenced atomic that
/// waits for the 32 KB of sums to reach L2 first: 1.2–4.9 µs per segment
/// under load (per-block timeline on an H200, 28672×4096 and 6144×4096 at
/// N = 64), during which the block's tensor cores had nothing to do.
/// [`finish_first`] takes the verdict after the last segment.
///
/// # Safety
/// As [`store`], for the share's first segment.
#[inline(always)]
pub(super) unsafe fn publish_first<const NJ: usize>(
    b: &Block,
    acc: &FragD<NJ>,
    seg: &Segment,
    ctid: u32,
) {
    // SAFETY: the caller's promise; the finisher warp waits on this use of
    // the barrier (it ran the same `defers_first_arrival`).
    unsafe {
        publish::<NJ>(b, acc, seg, ctid);
        named_barrier_arrive(PARTIALS_STORED_BARRIER, FINISHER_BARRIER_THREADS);
    }
}

/// The finisher warp (all 32 lanes): for a share whose first segment is
/// published by [`publish_first`], waits for the consumers' sums, counts
/// the segment's arrival on its unit (release: they were ordered before by
/// the barrier), and leaves the verdict in the block's flag word 1 for
/// [`finish_first`]. Nothing for other shares.
///
/// # Safety
/// Called by the whole finisher warp; `b` and `s` describe this block.
#[inline(always)]
pub(super) unsafe fn count_first(b: &Block, s: &Smem, lane: u32) {
    if !b.defers_first_arrival() {
        return;
    }
    let p = b.p;
    let (u, kt0) = b.unit_and_tile(b.start);
    // The first segment runs to the unit's end (more segments follow).
    let tiles = p.matrix.col_tiles - kt0;
    // SAFETY: the counter of this unit and chunk (host-sized); the flag
    // word is the block's.
    unsafe {
        named_barrier_sync(PARTIALS_STORED_BARRIER, FINISHER_BARRIER_THREADS);
        if p.store & STORE_LATE_FIRST_COUNT != 0 {
            let until = global_timer_ns() + 20_000;
            while global_timer_ns() < until {}
        }
        let counter = p.counters.add((u * p.chunks + b.chunk) as usize);
        let done = lane0_count_to(counter, tiles, p.matrix.col_tiles, lane);
        st_shared_u32(s.flag() + 4, u32::from(done));
        named_barrier_arrive(VERDICT_BARRIER, FINISHER_BARRIER_THREADS);
    }
}

/// After the share's last segment, for a share whose first segment went
/// through [`publish_first`]: takes the finisher's verdict and, if this
/// share completed that unit (rare: its first segment is a unit's tail,
/// done early, while the unit's head is another share's last segment),
/// adds every share's sums from the slots and stores the unit.
///
/// # Safety
/// As [`store`]; `seg` is the share's first segment; no `wgmma` pending.
#[inline(always)]
pub(super) unsafe fn finish_first<const NJ: usize>(
    b: &Block,
    s: &Smem,
    seg: &Segment,
    warp: u32,
    lane: u32,
    ctid: u32,
) {
    let (warp, lane, ctid) = (opaque(warp), opaque(lane), opaque(ctid));
    // SAFETY: the caller's promise; the finisher warp arrives on this use
    // of the barrier after writing the verdict.
    unsafe {
        named_barrier_sync(VERDICT_BARRIER, FINISHER_BARRIER_THREADS);
        if ld_shared_u32(s.flag() + 4) == 0 {
            return;
        }
        let mut acc: FragD<NJ> = [[0.0; 4]; NJ];
        add_shares::<NJ>(b, &mut acc, seg, ctid, false);
        store_unit::<NJ>(b, s, &acc, warp, seg.u * UNIT_ROW_TILES + warp, lane);
    }
}
