//! The decode and MMA stages: the two consumer warpgroups. Consumer warp
//! `w` (0..8) owns row tile `w` of every unit, so warpgroup `c` holds rows
//! `64c .. 64c + 64` of the unit: the 64 rows of its `wgmma`.

use super::epilogue::{self, Segment};
use super::smem::Smem;
use super::{Block, Ring};
use crate::format::{K_STEPS, LANE_PAIRS};
use crate::ptx::{
    FragA, lane_id, ld_nc_u32, ld_shared_u16, ld_shared_v4, named_barrier_sync, st_shared_u32,
    st_shared_v4, sync_warp, warp_index,
};
use crate::ptx_sm90::{
    mbarrier_arrive, mbarrier_wait_parity, wgmma_commit_group, wgmma_fence, wgmma_m64n16k16_bf16,
    wgmma_m64n32k16_bf16, wgmma_m64n64k16_bf16, wgmma_m64n128k16_bf16, wgmma_m64n256k16_bf16,
    wgmma_wait_group,
};
use crate::sm90::{
    CONSUMER_BARRIER, CONSUMER_THREADS, STAGED_ENTRIES, UNIT_ROW_TILES, x_descriptor,
    x_descriptor_step,
};
use crate::tile::{LaneTile, MatrixView, TileExceptions, patch_a_stage};

/// A lane's decoded tile: the A fragments of the tile's 8 k-steps, pair
/// `4s + r` being register `r` of k-step `s` (docs/FORMAT.md §1.2).
type TileFrags = [u32; LANE_PAIRS];

/// This thread's accumulators: for each 8 activation rows (columns of
/// `Yᵀ`), the four f32 of `mma.m16n8k16`'s C fragment, which `wgmma`'s
/// m64nNk16 accumulator repeats (`sm90::accumulator_position`).
pub(super) type FragD<const NJ: usize> = [[f32; 4]; NJ];

/// A tile's exception range and this lane's entries among its first 64,
/// as the producer staged them with the tile (`producer::run_tiles`).
#[derive(Clone, Copy)]
struct Exceptions {
    range: TileExceptions,
    entries: [u32; 2],
}

/// What a consumer warp needs to decode its tiles of one unit segment.
struct Decoder<'a> {
    view: &'a MatrixView,
    s: &'a Smem,
    warp: u32,
    lane: u32,
    /// The segment's end column.
    kt1: u32,
    /// Whether this warp has a row tile in the unit (warp-uniform).
    active: bool,
}

impl Decoder<'_> {
    /// Waits for stage `ring`'s tiles and returns this warp's tile's
    /// exceptions (none for a warp without a row tile, whose record the
    /// producer did not write). Every warp waits for every stage: one that
    /// skipped a use could take a later phase for the one it waits for.
    ///
    /// # Safety
    /// `ring` is the stage of this warp's next tile.
    #[inline(always)]
    unsafe fn wait_tile<const STAGES: usize>(&self, ring: Ring<STAGES>) -> Exceptions {
        let none = Exceptions {
            range: TileExceptions {
                start: 0,
                count: 0,
                far_start: 0,
            },
            entries: [0; 2],
        };
        // SAFETY: the record and entry slot of this warp's row tile, which
        // the producer wrote before its arrival (the caller's promise).
        unsafe {
            mbarrier_wait_parity(self.s.full_w(ring.stage), ring.phase);
            if !self.active {
                return none;
            }
            let r = ld_shared_v4(self.s.record(ring.stage, self.warp));
            let range = TileExceptions {
                start: r[0],
                count: r[1],
                far_start: r[2],
            };
            let staged = range.count.min(STAGED_ENTRIES);
            let first = self.s.entries(ring.stage, self.warp) + 2 * r[3];
            let entry = |i: u32| {
                if i < staged {
                    u32::from(ld_shared_u16(first + 2 * i))
                } else {
                    0
                }
            };
            Exceptions {
                range,
                entries: [entry(self.lane), entry(32 + self.lane)],
            }
        }
    }

    /// decode + patch into the warp's A stage: tile `kt` of stage `ring`
    /// decoded straight into the A stage, its tile slots released, its
    /// exceptions patched there; [`load_stage`] then gives the fragments.
    /// Nothing for a warp without a row tile but the barriers.
    ///
    /// # Safety
    /// All lanes of the warp call this together; as [`Self::wait_tile`];
    /// no earlier load of the A stage is pending.
    #[inline(always)]
    unsafe fn decode_to_stage<const STAGES: usize>(&self, ring: Ring<STAGES>) {
        let s_a = self.s.a(self.warp);
        // SAFETY: the caller's promise; offsets stay in the A stage.
        unsafe {
            let current = self.wait_tile(ring);
            if self.active {
                let s_tile = self.s.w(ring.stage, self.warp);
                LaneTile::decode_shared(s_tile, self.lane, self.view.base, |step, frag| {
                    st_shared_v4(s_a + (step as u32 * 32 + self.lane) * 16, frag)
                });
            }
            // This thread's loads of the tiles, entries and record were
            // consumed by the decode or are in registers.
            mbarrier_arrive(self.s.empty_w(ring.stage));
            // Warp-uniform: every lane read the same count.
            if self.active && current.range.count > 0 {
                patch_stage(self.view, &current, self.s, self.warp, self.lane);
            }
        }
    }
}

/// The consumers' walk over the block's share, one unit segment at a
/// time (see [`segment`]). `ctid` is the thread's index among the
/// consumers (0..256).
///
/// # Safety
/// Called by every consumer thread; `b` and `s` describe this block.
#[inline(always)]
pub(super) unsafe fn run<const NJ: usize, const STAGES: usize>(b: &Block, s: &Smem, ctid: u32) {
    let view = &b.p.matrix;
    let col_tiles = view.col_tiles;
    let (warp, lane) = (warp_index(ctid), lane_id());
    // SAFETY: as in the kernel: shared addresses inside the block's layout,
    // tiles inside the matrix; every wgmma is issued by whole warpgroups.
    unsafe {
        if ctid < 8 {
            let table = view.exception_table as *const u32;
            st_shared_u32(s.table() + 4 * ctid, ld_nc_u32(table.add(ctid as usize)));
        }
        named_barrier_sync(CONSUMER_BARRIER, CONSUMER_THREADS);

        let mut ring = Ring::<STAGES>::START;
        let mut pos = b.start;
        // Block-uniform, as the finisher warp computes it.
        let defer = b.defers_first_arrival();
        let mut first_segment = None;
        while pos < b.end {
            let (u, kt0) = b.unit_and_tile(pos);
            let kt1 = (kt0 + (b.end - pos)).min(col_tiles);
            let d = Decoder {
                view,
                s,
                warp,
                lane,
                kt1,
                active: u * UNIT_ROW_TILES + warp < b.row_tiles,
            };
            let mut acc: FragD<NJ> = [[0.0; 4]; NJ];
            segment::<NJ, STAGES>(&d, &mut acc, &mut ring, kt0);
            let segment = Segment {
                u,
                tiles: kt1 - kt0,
                whole: kt0 == 0 && kt1 == col_tiles,
                first: pos == b.start,
            };
            if defer && segment.first {
                epilogue::publish_first::<NJ>(b, &acc, &segment, ctid);
                first_segment = Some(segment);
            } else {
                epilogue::store::<NJ>(b, s, &mut acc, &segment, warp, lane, ctid);
            }
            pos += kt1 - kt0;
        }
        if let Some(first) = first_segment {
            epilogue::finish_first::<NJ>(b, s, &first, warp, lane, ctid);
        }
    }
}

/// One segment's tiles `kt0 .. d.kt1`, the next tile decoded into the
/// warp's A stage while the tensor cores work on this one: the decode, the
/// release of its tile slots and its patch all happen during the `wgmma`s;
/// once they are complete, this tile's activations go back to the producer
/// and the next tile's fragments come from the A stage into the same
/// registers. On return every `wgmma` is complete and every stage released.
///
/// What came before, on an H200 (docs/PERFORMANCE.md, Hopper v1–v13):
/// - v1 decoded, multiplied and waited for each tile in turn.
/// - v2 decoded the next tile into a second set of 32 fragment registers
///   while the `wgmma`s ran (28672×4096, N = 64: 92.1 → 79.5 µs). The
///   two-block variants had no room for that set (ptxas serialised their
///   `wgmma`s, "C7512"), nor N = 256 (its accumulators spilled), so they
///   kept v1's order.
/// - v8 (branch `exp-a-shared`) had the tensor cores read A from a shared
///   stage, but needed two warpgroup barriers per tile: 5–10% slower.
/// - This order (v12) needs no second register set and only warp
///   barriers: 6–9% faster than v1's at N = 17–32 and N = 256 on the large
///   shapes, and 2–3% faster than v2's at N = 65–128.
/// - v22 (branch `exp-wgmma-halves`) committed each tile's `wgmma`s as two
///   groups of four k-steps and reloaded each half's registers as soon as
///   its group completed, so a group was always queued: 1–3% slower at
///   N ≥ 64 (28672×4096, N = 256: 112.1 → 113.6 µs), the second fence and
///   warpgroup arrival costing more than the gap they closed.
///
/// # Safety
/// As [`run`]; `ring` is the stage of tile `kt0`.
#[inline(always)]
unsafe fn segment<const NJ: usize, const STAGES: usize>(
    d: &Decoder,
    acc: &mut FragD<NJ>,
    ring: &mut Ring<STAGES>,
    kt0: u32,
) {
    let s = d.s;
    let s_a = s.a(d.warp);
    // SAFETY: the caller's promise.
    unsafe {
        // Zeros for a warp without a row tile, which never loads.
        let mut a: TileFrags = [0; LANE_PAIRS];
        let mut kt = kt0;
        d.decode_to_stage(*ring);
        loop {
            if d.active {
                sync_warp();
                a = load_stage(s_a, d.lane);
            }
            mma_issue::<NJ, STAGES>(acc, &a, s, *ring);
            let current = ring.stage;
            ring.advance();
            kt += 1;
            let more = kt < d.kt1;
            if more {
                // The A stage's loads above were consumed by the wgmmas'
                // issue (registers), so the stage may be overwritten.
                d.decode_to_stage(*ring);
            }
            wgmma_wait_group::<0>();
            // The wgmma reads of the stage's activations are complete.
            mbarrier_arrive(s.empty_x(current));
            if !more {
                break;
            }
        }
    }
}

/// Puts each exception's true exponent into the warp's 4 KB A stage,
/// which holds the decoded tile in fragment order (`format::fragment_slot`):
/// each lane patches about one entry in place. The fragments reach the
/// stage straight from the decode and come back with [`load_stage`] (16
/// shared-memory instructions per lane and tile).
/// Patching registers directly needs the owning lane to select one
/// of its 32 registers by a run-time index: in the `mma.sync` kernel (its
/// v4) routing entries to their owners ran 1.6× slower, since some lane of
/// the warp has an exception in almost every k-step; a uniform
/// test-and-select over all 32 registers costs ~96 instructions per lane
/// and tile, more than the round trip.
///
/// # Safety
/// All 32 lanes of the warp call this together, after the tile is in the
/// stage; `e` is this warp's tile.
#[inline(always)]
unsafe fn patch_stage(view: &MatrixView, e: &Exceptions, s: &Smem, warp: u32, lane: u32) {
    // SAFETY: the stage is this warp's 4 KB; the caller's promise.
    unsafe {
        sync_warp();
        patch_a_stage(
            view,
            &e.range,
            e.entries[0],
            e.entries[1],
            lane,
            s.table(),
            s.a(warp),
        );
    }
}

/// The fragments back from the A stage at `s_a`, once every lane's
/// patches are in (the caller syncs the warp first).
///
/// # Safety
/// `s_a` is this warp's A stage.
#[inline(always)]
unsafe fn load_stage(s_a: u32, lane: u32) -> TileFrags {
    let mut a: TileFrags = [0; LANE_PAIRS];
    // SAFETY: the caller's promise.
    unsafe {
        seq_macro::seq!(S in 0..8 {
            let v = ld_shared_v4(s_a + (S * 32 + lane) * 16);
            a[4 * S..4 * S + 4].copy_from_slice(&v);
        });
    }
    a
}

const _: () = assert!(K_STEPS == 8, "mma and patch unroll exactly 8 k-steps");

/// The tile's 8 k-steps as `wgmma`s against the activations of stage
/// `ring`, once they have landed, committed as one group; they run while
/// the caller goes on (see `run`).
///
/// # Safety
/// Warpgroup-collective: every thread of the warpgroup calls it converged;
/// neither the stage's activations nor `a`'s registers change until the
/// group is complete.
#[inline(always)]
unsafe fn mma_issue<const NJ: usize, const STAGES: usize>(
    acc: &mut FragD<NJ>,
    a: &TileFrags,
    s: &Smem,
    ring: Ring<STAGES>,
) {
    let s_x = s.x(ring.stage);
    // SAFETY: the caller's promise.
    unsafe {
        mbarrier_wait_parity(s.full_x(ring.stage), ring.phase);
        // The fragments were just written by the decode.
        wgmma_fence();
        // One descriptor per stage, then a constant per k-step: built from
        // the address for each k-step, ptxas spent ~4 uniform instructions
        // on each of the 8 (shift, mask, or, and the box's offset).
        let d0 = x_descriptor(s_x, 8 * NJ, 0);
        seq_macro::seq!(S in 0..8 {
            let frag: FragA = [a[4 * S], a[4 * S + 1], a[4 * S + 2], a[4 * S + 3]];
            wgmma::<NJ>(acc, frag, d0 + x_descriptor_step(8 * NJ, S));
        });
        wgmma_commit_group();
    }
}

/// The `wgmma` of N = 8·NJ (one of the compiled variants).
///
/// # Safety
/// As [`mma`].
#[inline(always)]
unsafe fn wgmma<const NJ: usize>(acc: &mut FragD<NJ>, a: FragA, b_desc: u64) {
    const {
        assert!(
            NJ == 2 || NJ == 4 || NJ == 8 || NJ == 16 || NJ == 32,
            "no wgmma wrapper for this N"
        )
    };
    let acc = acc as *mut FragD<NJ>;
    // SAFETY: the caller's promise; each cast is to the type of the same
    // size (the branch taken is the one with NJ blocks).
    unsafe {
        match NJ {
            2 => wgmma_m64n16k16_bf16(&mut *(acc as *mut [[f32; 4]; 2]), a, b_desc),
            4 => wgmma_m64n32k16_bf16(&mut *(acc as *mut [[f32; 4]; 4]), a, b_desc),
            8 => wgmma_m64n64k16_bf16(&mut *(acc as *mut [[f32; 4]; 8]), a, b_desc),
            16 => wgmma_m64n128k16_bf16(&mut *(acc as *mut [[f32; 4]; 16]), a, b_desc),
            _ => wgmma_m64n256k16_bf16(&mut *(acc as *mut [[f32; 4]; 32]), a, b_desc),
        }
    }
}
