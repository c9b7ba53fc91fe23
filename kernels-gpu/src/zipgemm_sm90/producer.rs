//! The load stage: one thread of warpgroup 0 fills the ring.

use super::smem::Smem;
use super::{Block, Ring};
use crate::format::TILE_BYTES;
use crate::ptx::block_idx;
use crate::ptx_sm90::{
    cp_async_bulk_g2s, fence_proxy_tensormap_acquire, fence_proxy_tensormap_release,
    mbarrier_arrive_expect_tx, mbarrier_wait_parity, tma_load_2d,
};
use crate::sm90::{UNIT_ROW_TILES, X_BOX_COLS, X_BOX_ROW_BYTES, X_BOXES, x_stage_bytes};

/// Words of a tensor map.
const MAP_WORDS: usize = 16;

/// Walks the block's share pair by pair, as the consumers do: for each,
/// waits for the stage to be empty, announces the bytes to come on its
/// "full" barrier and starts the copies. Tiles of row tiles past M are not
/// copied (their warps skip the decode); activations past N and K arrive
/// as zeros.
///
/// # Safety
/// Called by one thread; `b` and `s` describe this block (see the kernel).
#[inline(always)]
pub(super) unsafe fn run<const NJ: usize, const STAGES: usize>(b: &Block, s: &Smem) {
    let p = b.p;
    let n_tile = 8 * NJ;
    // SAFETY: the slot holds 128 bytes for this block; copies stay inside
    // the tile stream (pairs index existing tiles) and the stage.
    unsafe {
        // The tensor map reaches TMA from global memory (see
        // `sm90::TensorMap`): this block's slot, written by ordinary stores,
        // then handed to the tensor-map proxy.
        let slot = p.map_slots.add(block_idx().0 as usize * MAP_WORDS);
        seq_macro::seq!(I in 0..16 {
            *slot.add(I) = p.x_map.opaque[I];
        });
        fence_proxy_tensormap_release();
        fence_proxy_tensormap_acquire(slot);

        let col_tiles = p.matrix.col_tiles;
        let mut ring = Ring::<STAGES>::START;
        let mut q = b.start;
        while q < b.end {
            let (u, kt) = b.unit_and_tile(q);
            // The consumers released this stage's previous use (a fresh
            // barrier counts the phase before the first as complete).
            mbarrier_wait_parity(s.empty(ring.stage), ring.phase ^ 1);
            let first_rt = u * UNIT_ROW_TILES;
            let tiles = (b.row_tiles - first_rt).min(UNIT_ROW_TILES);
            let full = s.full(ring.stage);
            mbarrier_arrive_expect_tx(
                full,
                tiles * TILE_BYTES as u32 + x_stage_bytes(n_tile) as u32,
            );
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
            let k0 = kt * (X_BOXES * X_BOX_COLS) as u32;
            seq_macro::seq!(H in 0..2 {
                tma_load_2d(
                    s.x(ring.stage) + (H * n_tile * X_BOX_ROW_BYTES) as u32,
                    slot,
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

const _: () = assert!(X_BOXES == 2, "run copies exactly two boxes per stage");
