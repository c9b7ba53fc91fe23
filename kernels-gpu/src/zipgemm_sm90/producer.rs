//! The load stage: threads of warpgroup 0 fill the ring, eight (one per
//! row tile) the compressed tiles with their exception entries and one the
//! activations, each kind on its own pair of barriers per stage. A stage's tile slots are free once decoded, its
//! activations only once the `wgmma`s that read them are complete; with
//! one thread for both, the next tiles would wait behind the tensor cores,
//! and with them the consumers, which decode a tile ahead of them.

use super::smem::Smem;
use super::{Block, Ring};
use crate::format::TILE_BYTES;
use crate::ptx::{block_idx, st_shared_v4};
use crate::ptx_sm90::{
    cp_async_bulk_g2s, fence_proxy_tensormap_acquire, fence_proxy_tensormap_release,
    mbarrier_arrive, mbarrier_arrive_expect_tx, mbarrier_expect_tx, mbarrier_wait_parity,
    tma_load_2d,
};
use crate::sm90::{
    UNIT_ROW_TILES, WgmmaGemmParams, X_BOX_COLS, X_BOX_ROW_BYTES, X_BOXES, entry_window,
    x_stage_bytes,
};

/// Words of a tensor map.
const MAP_WORDS: usize = 16;

/// Copies the activations' tensor map from the kernel parameters to this
/// block's slot of global memory, where TMA can read it (see
/// `sm90::TensorMap`), and hands it to the tensor-map proxy. Done before
/// the roles split, so the 16 words never count against the producer's 40
/// registers.
///
/// # Safety
/// Called by the thread that will run [`run_activations`]; `map_slots` holds 128 bytes
/// for this block.
#[inline(always)]
pub(super) unsafe fn publish_tensor_map(p: &WgmmaGemmParams) -> *const u64 {
    // SAFETY: the caller's promise.
    unsafe {
        let slot = p.map_slots.add(block_idx().0 as usize * MAP_WORDS);
        seq_macro::seq!(I in 0..16 {
            *slot.add(I) = p.x_map.opaque[I];
        });
        fence_proxy_tensormap_release();
        slot
    }
}

/// Walks the block's share pair by pair, as the consumers do; thread `t`
/// (0..8) of warp 0 serves row tile `t` of each pair's unit: it issues the
/// loads of the tile's exception range, waits until the stage's slots are
/// empty, announces the tile's bytes on the stage's tiles' "full" barrier
/// and starts its bulk copy, then (once the range has landed) writes the
/// range record, arrives announcing the entries' bytes and copies the
/// window of the tile's first
/// [`STAGED_ENTRIES`](crate::sm90::STAGED_ENTRIES) exception entries
/// (`sm90::entry_window`). Threads of row tiles past M only arrive.
///
/// The consumers used to load ranges and entries themselves, two tiles
/// ahead, from global memory: 23 instructions per warp and tile, with
/// their address arithmetic (Nsight Compute, n128, 28672×4096: 5.8% of
/// the stall samples). The producer threads have the time: they wait
/// on the consumers most of theirs. With this (v18): 28672×4096 N = 128
/// 83.6 → 78.8 µs, N = 256 121.9 → 117.0 (H200).
///
/// # Safety
/// Called by threads 0..8 of the block, `t` being the thread index; `b`
/// and `s` describe this block (see the kernel); the matrix's device
/// exception array ends with
/// [`EXCEPTION_TAIL_ENTRIES`](crate::sm90::EXCEPTION_TAIL_ENTRIES) spare
/// entries.
#[inline(always)]
pub(super) unsafe fn run_tiles<const STAGES: usize>(b: &Block, s: &Smem, t: u32) {
    let p = b.p;
    let view = &p.matrix;
    // SAFETY: copies stay inside the tile stream (pairs index existing
    // tiles), the exception array (its tail entries) and the stage.
    unsafe {
        let col_tiles = view.col_tiles;
        let mut ring = Ring::<STAGES>::START;
        let mut q = b.start;
        while q < b.end {
            let (u, kt) = b.unit_and_tile(q);
            let first_rt = u * UNIT_ROW_TILES;
            let has_tile = t < (b.row_tiles - first_rt).min(UNIT_ROW_TILES);
            // A thread without a tile loads its unit's first tile's range
            // (in the matrix, unused), so the loads need no branch.
            let tile = (first_rt + if has_tile { t } else { 0 }) * col_tiles + kt;
            // Issued before the wait, which they outlast only when the
            // consumers are ahead.
            let bounds = view.exception_bounds(tile);
            // The consumers released this slot's previous use (a fresh
            // barrier counts the phase before the first as complete).
            mbarrier_wait_parity(s.empty_w(ring.stage), ring.phase ^ 1);
            let full = s.full_w(ring.stage);
            if has_tile {
                // The tile's copy first: it needs nothing of the range,
                // whose loads are still in flight on a block's first stages
                // (v27; before, the first tile left one DRAM round trip
                // after them, ~3 µs after the block started).
                mbarrier_expect_tx(full, TILE_BYTES as u32);
                cp_async_bulk_g2s(
                    s.w(ring.stage, t),
                    view.tiles.add(tile as usize * TILE_BYTES),
                    TILE_BYTES as u32,
                    full,
                );
                let e = bounds.range();
                let (lo, bytes, first) = entry_window(e.start, e.count);
                // Before the arrival, whose release makes it visible to
                // the consumers' wait.
                st_shared_v4(
                    s.record(ring.stage, t),
                    [e.start, e.count, e.far_start, first],
                );
                mbarrier_arrive_expect_tx(full, bytes);
                if bytes > 0 {
                    cp_async_bulk_g2s(
                        s.entries(ring.stage, t),
                        (view.exceptions as *const u8).add(lo as usize),
                        bytes,
                        full,
                    );
                }
            } else {
                mbarrier_arrive(full);
            }
            ring.advance();
            q += 1;
        }
    }
}

/// The same walk for the activations `X[n0 ..][k-tile]` of each pair, as
/// two TMA boxes on the stage's activation barriers; rows past N and
/// columns past K arrive as zeros. `map` is the slot
/// [`publish_tensor_map`] filled.
///
/// # Safety
/// As [`run_tiles`].
#[inline(always)]
pub(super) unsafe fn run_activations<const NJ: usize, const STAGES: usize>(
    b: &Block,
    s: &Smem,
    map: *const u64,
) {
    let n_tile = 8 * NJ;
    // SAFETY: copies stay inside the stage; `map` is a published tensor map.
    unsafe {
        fence_proxy_tensormap_acquire(map);
        let mut ring = Ring::<STAGES>::START;
        let mut q = b.start;
        while q < b.end {
            let (_, kt) = b.unit_and_tile(q);
            mbarrier_wait_parity(s.empty_x(ring.stage), ring.phase ^ 1);
            let full = s.full_x(ring.stage);
            mbarrier_arrive_expect_tx(full, x_stage_bytes(n_tile) as u32);
            let k0 = kt * (X_BOXES * X_BOX_COLS) as u32;
            seq_macro::seq!(H in 0..2 {
                tma_load_2d(
                    s.x(ring.stage) + (H * n_tile * X_BOX_ROW_BYTES) as u32,
                    map,
                    (k0 + (H * X_BOX_COLS) as u32) as i32,
                    b.n0 as i32,
                    full,
                );
            });
            ring.advance();
            q += 1;
        }
    }
}

const _: () = assert!(
    X_BOXES == 2,
    "run_activations copies exactly two boxes per stage"
);
