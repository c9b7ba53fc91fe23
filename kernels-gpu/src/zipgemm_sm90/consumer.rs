//! The decode and MMA stages: the two consumer warpgroups. Consumer warp
//! `w` (0..8) owns row tile `w` of every unit, so warpgroup `c` holds rows
//! `64c .. 64c + 64` of the unit: the 64 rows of its `wgmma`.

use super::epilogue::{self, Segment};
use super::smem::Smem;
use super::{Block, Ring};
use crate::format::{K_STEPS, LANE_PAIRS, LANES};
use crate::ptx::{
    FragA, lane_id, ld_nc_u32, ld_shared_v4, named_barrier_sync, st_shared_u32, st_shared_v4,
    sync_warp,
};
use crate::ptx_sm90::{
    mbarrier_arrive, mbarrier_wait_parity, wgmma_commit_group, wgmma_fence, wgmma_m64n64k16_bf16,
    wgmma_m64n128k16_bf16, wgmma_m64n256k16_bf16, wgmma_wait_group,
};
use crate::sm90::{CONSUMER_BARRIER, CONSUMER_THREADS, UNIT_ROW_TILES, x_descriptor};
use crate::tile::{LaneTile, MatrixView, TileExceptions, patch_a_stage};

/// A lane's decoded tile: the A fragments of the tile's 8 k-steps, pair
/// `4s + r` being register `r` of k-step `s` (docs/FORMAT.md §1.2).
type TileFrags = [u32; LANE_PAIRS];

/// This thread's accumulators: for each 8 activation rows (columns of
/// `Yᵀ`), the four f32 of `mma.m16n8k16`'s C fragment, which `wgmma`'s
/// m64nNk16 accumulator repeats (`sm90::accumulator_position`).
pub(super) type FragD<const NJ: usize> = [[f32; 4]; NJ];

/// A tile's exception range and this lane's entry among its first 32,
/// loaded one tile ahead so the dependent loads are off the critical path.
#[derive(Clone, Copy)]
struct Exceptions {
    range: TileExceptions,
    entry: u32,
}

impl Exceptions {
    const NONE: Self = Self {
        range: TileExceptions {
            start: 0,
            count: 0,
            far_start: 0,
        },
        entry: 0,
    };

    /// # Safety
    /// `tile` is a tile of the (validated) matrix `view`.
    #[inline(always)]
    unsafe fn load(view: &MatrixView, tile: u32, lane: u32) -> Self {
        // SAFETY: the caller's promise.
        unsafe {
            let range = view.tile_exceptions(tile);
            Self {
                entry: view.exception(&range, lane),
                range,
            }
        }
    }
}

/// The consumers' walk over the block's share: per (unit, column tile)
/// pair, wait for the stage, decode, patch, multiply, release the stage;
/// per unit segment, store. `ctid` is the thread's index among the
/// consumers (0..256).
///
/// # Safety
/// Called by every consumer thread; `b` and `s` describe this block.
#[inline(always)]
pub(super) unsafe fn run<const NJ: usize, const STAGES: usize>(b: &Block, s: &Smem, ctid: u32) {
    let view = &b.p.matrix;
    let col_tiles = view.col_tiles;
    let (warp, lane) = (ctid / LANES as u32, lane_id());
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
        while pos < b.end {
            let (u, kt0) = b.unit_and_tile(pos);
            let kt1 = (kt0 + (b.end - pos)).min(col_tiles);
            let rt = u * UNIT_ROW_TILES + warp;
            let active = rt < b.row_tiles; // uniform per warp
            let mut acc: FragD<NJ> = [[0.0; 4]; NJ];
            let mut next = Exceptions::NONE;
            if active {
                next = Exceptions::load(view, rt * col_tiles + kt0, lane);
            }
            let mut kt = kt0;
            while kt < kt1 {
                mbarrier_wait_parity(s.full(ring.stage), ring.phase);
                // decode (warps without a row tile multiply zeros)
                let mut a: TileFrags = [0; LANE_PAIRS];
                if active {
                    let exceptions = next;
                    a = LaneTile::load_shared(s.w(ring.stage, warp), lane).decode(view.base);
                    if kt + 1 < kt1 {
                        next = Exceptions::load(view, rt * col_tiles + kt + 1, lane);
                    }
                    // patch (warp-uniform: every lane read the same count)
                    if exceptions.range.count > 0 {
                        patch(view, &exceptions, &mut a, s, warp, lane);
                    }
                }
                mma::<NJ>(&mut acc, &a, s.x(ring.stage));
                // This thread is done with the stage: its weight loads were
                // consumed by the decode, and the wgmma reads of the
                // activations are complete (wait_group 0 in `mma`).
                mbarrier_arrive(s.empty(ring.stage));
                ring.advance();
                kt += 1;
            }
            let segment = Segment {
                u,
                tiles: kt1 - kt0,
                whole: kt0 == 0 && kt1 == col_tiles,
                first: pos == b.start,
            };
            epilogue::store::<NJ>(b, s, &acc, &segment, warp, lane, ctid);
            pos += kt1 - kt0;
        }
    }
}

/// Puts each exception's true exponent into the lane registers that hold
/// it, through the warp's 4 KB A stage: the fragments go out with 8
/// 16-byte stores, each lane patches about one entry in place, and they
/// come back with 8 loads (16 shared-memory instructions per lane and
/// tile). Patching registers directly needs the owning lane to select one
/// of its 32 registers by a run-time index: in the `mma.sync` kernel (its
/// v4) routing entries to their owners ran 1.6× slower, since some lane of
/// the warp has an exception in almost every k-step; a uniform
/// test-and-select over all 32 registers costs ~96 instructions per lane
/// and tile, more than the round trip.
///
/// # Safety
/// All 32 lanes of the warp call this together; `e` is this warp's tile.
#[inline(always)]
unsafe fn patch(
    view: &MatrixView,
    e: &Exceptions,
    a: &mut TileFrags,
    s: &Smem,
    warp: u32,
    lane: u32,
) {
    let s_a = s.a(warp);
    // SAFETY: the stage is this warp's 4 KB; the caller's promise.
    unsafe {
        seq_macro::seq!(S in 0..8 {
            st_shared_v4(s_a + (S * 32 + lane) * 16, [a[4 * S], a[4 * S + 1], a[4 * S + 2], a[4 * S + 3]]);
        });
        sync_warp();
        patch_a_stage(view, &e.range, e.entry, lane, s.table(), s_a);
        sync_warp();
        seq_macro::seq!(S in 0..8 {
            let v = ld_shared_v4(s_a + (S * 32 + lane) * 16);
            a[4 * S..4 * S + 4].copy_from_slice(&v);
        });
    }
}

const _: () = assert!(K_STEPS == 8, "mma and patch unroll exactly 8 k-steps");

/// The tile's 8 k-steps as `wgmma`s against the stage's activations at
/// `s_x`, then a wait for all of them: after it, the accumulators are
/// valid and the stage's activations and `a` may be reused. (First
/// version: no overlap of this warpgroup's MMAs with its next decode; the
/// other consumer warpgroup's decode fills the gap.)
///
/// # Safety
/// Warpgroup-collective: every thread of the warpgroup calls it converged;
/// `s_x` holds a full stage of activations.
#[inline(always)]
unsafe fn mma<const NJ: usize>(acc: &mut FragD<NJ>, a: &TileFrags, s_x: u32) {
    // SAFETY: the caller's promise.
    unsafe {
        wgmma_fence();
        seq_macro::seq!(S in 0..8 {
            let frag: FragA = [a[4 * S], a[4 * S + 1], a[4 * S + 2], a[4 * S + 3]];
            wgmma::<NJ>(acc, frag, x_descriptor(s_x, 8 * NJ, S));
        });
        wgmma_commit_group();
        wgmma_wait_group::<0>();
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
            NJ == 8 || NJ == 16 || NJ == 32,
            "no wgmma wrapper for this N"
        )
    };
    let acc = acc as *mut FragD<NJ>;
    // SAFETY: the caller's promise; each cast is to the type of the same
    // size (the branch taken is the one with NJ blocks).
    unsafe {
        match NJ {
            8 => wgmma_m64n64k16_bf16(&mut *(acc as *mut [[f32; 4]; 8]), a, b_desc),
            16 => wgmma_m64n128k16_bf16(&mut *(acc as *mut [[f32; 4]; 16]), a, b_desc),
            _ => wgmma_m64n256k16_bf16(&mut *(acc as *mut [[f32; 4]; 32]), a, b_desc),
        }
    }
}
