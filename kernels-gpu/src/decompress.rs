//! Decompression: compressed matrix → BF16 row-major in global memory,
//! bit-identical to the original. Used before cuBLAS for large batches.
//!
//! Each warp takes whole tiles (grid-stride): it decodes its lanes' pairs in
//! registers, stages the tile in shared memory so exceptions can be patched
//! and rows written with coalesced 16-byte stores, then moves on. In the
//! Hopper image the next tile's loads are issued before the current tile is
//! decoded (a software pipeline one tile deep), so the warp's memory
//! requests never stop.

use crate::format::{
    LANE_PAIRS, LANES, TILE_COLS, TILE_ROWS, TILE_WEIGHTS, pair_position, slot_position,
};
use crate::launch::{DECOMPRESS_WARPS, nonzero};
use crate::ptx::{
    block_idx, grid_dim_x, ld_nc_u8, ld_shared_u16, ld_shared_v4, shared_memory, st_global_v4,
    st_shared_u32, sync_warp, thread_idx, warp_index,
};
use crate::tile::{LaneTile, MatrixView, TileExceptions};

/// Staged row length in BF16: 8 extra elements (16 bytes) put the eight row
/// groups of a warp's pair stores in different banks.
const STAGE_STRIDE: usize = TILE_COLS + 8;
const STAGE_BYTES: usize = TILE_ROWS * STAGE_STRIDE * 2;
const SMEM_BYTES: usize = DECOMPRESS_WARPS as usize * STAGE_BYTES;
const _: () = assert!(SMEM_BYTES <= 48 * 1024);
const _: () = assert!((STAGE_STRIDE * 2).is_multiple_of(16));
const _: () = assert!(LANE_PAIRS == 32, "the pair stores unroll exactly 32 pairs");
/// Whether a warp loads its next tile before it decodes the current one
/// (the `sm_90a` image) or after it has stored it (the portable image);
/// see the loop.
const PIPELINED: bool = cfg!(target_feature = "sm_90a");

/// # Safety
/// Pointers describe a matrix validated by the host; `out` holds rows × cols
/// BF16; `vector_stores != 0` only if cols % 8 == 0 and `out` is 16-byte
/// aligned. Block size `32 * DECOMPRESS_WARPS`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn zipserv_decompress(
    tiles: *const u8,
    exception_starts: *const u32,
    exceptions: *const u16,
    far_starts: *const u32,
    far_exponents: *const u8,
    exception_table: *const u8,
    base: u32,
    rows: u32,
    cols: u32,
    col_tiles: u32,
    tile_count: u32,
    out: *mut u16,
    vector_stores: u32,
) {
    // Inputs may come from the kernel before (launch overlap).
    crate::ptx::start_after_prior_grids();
    let view = MatrixView {
        tiles,
        exception_starts,
        exceptions,
        far_starts,
        far_exponents,
        exception_table,
        base,
        rows,
        cols,
        col_tiles,
    };
    let s_all = shared_memory::<SMEM_BYTES>();
    let warp = warp_index(thread_idx());
    let lane = thread_idx() % 32;
    let out = Output {
        s_stage: s_all + warp * STAGE_BYTES as u32,
        // The host guarantees col_tiles ≥ 1; NonZero keeps a
        // division-by-zero panic path out of the loop.
        col_tiles: nonzero(col_tiles),
        out,
        vector_stores: vector_stores != 0,
    };

    let mut tile = block_idx().0 * DECOMPRESS_WARPS + warp;
    let tile_stride = grid_dim_x() * DECOMPRESS_WARPS;
    if PIPELINED {
        // Software pipeline, one tile deep: the next tile's data and
        // exception range are loaded before this tile is decoded and
        // stored, so a warp always has a tile's loads in flight. Without it
        // (12 blocks of 40 registers per SM, one tile at a time) a matrix of
        // about two tiles per warp, 6144×4096, reached 84.5% of the copy
        // bandwidth; with it (8 blocks of 64 registers) 87.7%, and
        // 28672×1024 86.5 → 88.6%, the others within 1% (H200, one call).
        // Loading the next tile's exception entries too, with the range two
        // tiles ahead, needed 96 registers (spills under 6–8 blocks), so the
        // entries stay one round trip behind the range, hidden by the
        // decode.
        if tile >= tile_count {
            return;
        }
        // SAFETY: tile < tile_count, and `following` is loaded only below
        // tile_count; shared addresses stay inside this warp's stage.
        unsafe {
            let mut ahead = (view.load_lane(tile, lane), view.tile_exceptions(tile));
            while tile < tile_count {
                let following = tile + tile_stride;
                let (lane_tile, exceptions) = ahead;
                // This tile's entries (the range came one iteration ago),
                // then the next tile.
                let first = view.exception(&exceptions, lane);
                let second = view.exception(&exceptions, 32 + lane);
                if following < tile_count {
                    ahead = (
                        view.load_lane(following, lane),
                        view.tile_exceptions(following),
                    );
                }
                out.write_tile(&view, tile, lane, &lane_tile, &exceptions, first, second);
                tile = following;
            }
        }
    } else {
        // The portable image (Ampere, Ada) takes one tile at a time: there
        // ptxas needs 127 registers for the pipelined loop (56 without it)
        // and spills 80 bytes under a bound of 8 blocks, and no such card
        // was measured.
        while tile < tile_count {
            // SAFETY: tile < tile_count; shared addresses stay inside this
            // warp's stage.
            unsafe {
                // The tile and its exception range together, then the
                // entries (their addresses need the range) while the tile's
                // loads are still in flight: two round trips per tile.
                let lane_tile = view.load_lane(tile, lane);
                let exceptions = view.tile_exceptions(tile);
                let first = view.exception(&exceptions, lane);
                let second = view.exception(&exceptions, 32 + lane);
                out.write_tile(&view, tile, lane, &lane_tile, &exceptions, first, second);
            }
            tile += tile_stride;
        }
    }
}

/// Where one warp's tiles go: its stage in shared memory and the output.
struct Output {
    /// (TILE_ROWS, STAGE_STRIDE) BF16 at this shared address.
    s_stage: u32,
    col_tiles: core::num::NonZeroU32,
    out: *mut u16,
    vector_stores: bool,
}

impl Output {
    fn stage_at(&self, row: u32, col: u32) -> u32 {
        self.s_stage + (row * STAGE_STRIDE as u32 + col) * 2
    }

    /// Decodes lane `lane`'s share of `tile` into the stage, patches the
    /// tile's exceptions there (`first`, `second`: this lane's entries among
    /// the first 64) and writes the tile's rows to the output. All 32 lanes
    /// call it together.
    ///
    /// # Safety
    /// `tile` is a tile of the (validated) matrix `view` and the other
    /// arguments are its lane data and exceptions; the kernel's contract
    /// on `out` holds.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn write_tile(
        &self,
        view: &MatrixView,
        tile: u32,
        lane: u32,
        lane_tile: &LaneTile,
        exceptions: &TileExceptions,
        first: u32,
        second: u32,
    ) {
        let (rows, cols) = (view.rows, view.cols);
        // SAFETY: the caller's promise; shared addresses stay inside the
        // stage, global ones inside the output (rows and columns checked or
        // the tile full).
        unsafe {
            // decode
            let r_pairs = lane_tile.decode(view.base);
            seq_macro::seq!(P in 0..32 {
                let (row, col) = pair_position(lane as usize, P, 0);
                st_shared_u32(self.stage_at(row as u32, col as u32), r_pairs[P]);
            });
            sync_warp();
            // patch exceptions
            let table = |index: u32| ld_nc_u8(view.exception_table.add(index as usize));
            // Entries name fragment slots (`format::device_entry`); this
            // stage is row-major.
            view.patch_in_shared(exceptions, first, second, lane, table, |slot| {
                let (row, col) = slot_position(slot as usize);
                self.stage_at(row as u32, col as u32)
            });
            sync_warp();
            // store
            let r0 = (tile / self.col_tiles) * TILE_ROWS as u32;
            let c0 = (tile % self.col_tiles) * TILE_COLS as u32;
            let full = r0 + TILE_ROWS as u32 <= rows && c0 + TILE_COLS as u32 <= cols;
            if full && self.vector_stores {
                const CHUNKS_PER_ROW: u32 = (TILE_COLS / 8) as u32;
                let mut it = 0;
                while it < TILE_WEIGHTS / 8 / LANES {
                    let id = it as u32 * LANES as u32 + lane;
                    let (row, chunk) = (id / CHUNKS_PER_ROW, id % CHUNKS_PER_ROW);
                    let v = ld_shared_v4(self.stage_at(row, chunk * 8));
                    let g = self
                        .out
                        .add(((r0 + row) as usize) * cols as usize + (c0 + chunk * 8) as usize);
                    st_global_v4(g as *mut u8, v);
                    it += 1;
                }
            } else {
                let mut id = lane;
                while id < TILE_WEIGHTS as u32 {
                    let (row, col) = (id / TILE_COLS as u32, id % TILE_COLS as u32);
                    if r0 + row < rows && c0 + col < cols {
                        let g = self
                            .out
                            .add(((r0 + row) as usize) * cols as usize + (c0 + col) as usize);
                        *g = ld_shared_u16(self.stage_at(row, col));
                    }
                    id += LANES as u32;
                }
            }
            sync_warp();
        }
    }
}
