//! The load stage: two threads of warpgroup 0 fill the ring, one the
//! compressed tiles and one the activations, each on its own pair of
//! barriers per stage. A stage's tile slots are free once decoded, its
//! activations only once the `wgmma`s that read them are complete; with
//! one thread for both, the next tiles would wait behind the tensor cores,
//! and with them the consumers, which decode a tile ahead of them.

use super::smem::Smem;
use super::{Block, Ring};
use crate::format::TILE_BYTES;
use crate::ptx::block_idx;
use crate::ptx_sm90::{
    cp_async_bulk_g2s, fence_proxy_tensormap_acquire, fence_proxy_tensormap_release,
    mbarrier_arrive_expect_tx, mbarrier_wait_parity, tma_load_2d,
};
use crate::sm90::{
    UNIT_ROW_TILES, WgmmaGemmParams, X_BOX_COLS, X_BOX_ROW_BYTES, X_BOXES, x_stage_bytes,
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

/// Walks the block's share pair by pair, as the consumers do: for each,
/// waits for the stage's tile slots to be empty, announces the bytes to
/// come on its tiles' "full" barrier and starts the copies. Tiles of row
/// tiles past M are not copied (their warps skip the decode).
///
/// # Safety
/// Called by one thread; `b` and `s` describe this block (see the kernel).
#[inline(always)]
pub(super) unsafe fn run_tiles<const STAGES: usize>(b: &Block, s: &Smem) {
    let p = b.p;
    // SAFETY: copies stay inside the tile stream (pairs index existing
    // tiles) and the stage.
    unsafe {
        let col_tiles = p.matrix.col_tiles;
        let mut ring = Ring::<STAGES>::START;
        let mut q = b.start;
        while q < b.end {
            let (u, kt) = b.unit_and_tile(q);
            // The consumers released this slot's previous use (a fresh
            // barrier counts the phase before the first as complete).
            mbarrier_wait_parity(s.empty_w(ring.stage), ring.phase ^ 1);
            let first_rt = u * UNIT_ROW_TILES;
            let tiles = (b.row_tiles - first_rt).min(UNIT_ROW_TILES);
            let full = s.full_w(ring.stage);
            mbarrier_arrive_expect_tx(full, tiles * TILE_BYTES as u32);
            let mut t = 0;
            while t < tiles {
                let tile = (first_rt + t) as usize * col_tiles as usize + kt as usize;
                cp_async_bulk_g2s(
                    s.w(ring.stage, t),
                    p.matrix.tiles.add(tile * TILE_BYTES),
                    TILE_BYTES as u32,
                    full,
                );
                t += 1;
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
