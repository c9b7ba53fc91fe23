//! Token embedding: one row of the embedding table per token, from a BF16
//! table or straight from the compressed one (so a compressed model keeps
//! its embedding compressed, and a tied LM head shares it).
//!
//! From the compressed table a warp takes one (token, column tile) pair: it
//! decodes the whole 16-row tile in registers, as the decompression kernel
//! does, and stores only the token's row; a token therefore decodes 16 rows
//! to use one, which for a few hundred tokens per step is negligible next
//! to the matrix products.

/// Warps per block of `engine_embed_compressed`: each takes one column tile.
pub const EMBED_TILE_WARPS: u32 = 4;

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::EMBED_TILE_WARPS;
    use crate::engine::ROW_THREADS;
    use crate::format::{TILE_COLS, TILE_ROWS, pair_position, slot_position};
    use crate::ptx::{block_idx, ld_nc_u8, sync_warp, thread_idx, trap};
    use crate::tile::MatrixView;

    /// `out[r, :] = table[ids[r], :]` for `rows` tokens.
    ///
    /// # Safety
    /// `table` holds `vocab × cols` BF16, `ids` `rows` u32, `out` `rows ×
    /// cols` BF16; grid `rows`, block [`ROW_THREADS`]. An id ≥ `vocab` traps.
    #[unsafe(no_mangle)]
    pub unsafe extern "ptx-kernel" fn engine_embed(
        table: *const u16,
        ids: *const u32,
        vocab: u32,
        cols: u32,
        out: *mut u16,
    ) {
        // Inputs may come from the kernel before (launch overlap).
        crate::ptx::start_after_prior_grids();
        let r = block_idx().0;
        // SAFETY: r < rows (grid); the id is checked against the table.
        unsafe {
            let id = *ids.add(r as usize);
            if id >= vocab {
                trap();
            }
            let src = table.add(id as usize * cols as usize);
            let dst = out.add(r as usize * cols as usize);
            let mut c = thread_idx();
            while c < cols {
                *dst.add(c as usize) = *src.add(c as usize);
                c += ROW_THREADS;
            }
        }
    }

    /// As [`engine_embed`] from a compressed table (arguments as the
    /// decompression kernel takes them). Grid (`rows`, ⌈col_tiles /
    /// EMBED_TILE_WARPS⌉), block `32 * EMBED_TILE_WARPS`.
    ///
    /// # Safety
    /// The matrix sections describe a validated `vocab × cols` matrix
    /// (`vocab = rows` of the view); `ids` holds `rows` u32 and `out` `rows ×
    /// cols` BF16. An id ≥ `vocab` traps.
    #[unsafe(no_mangle)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe extern "ptx-kernel" fn engine_embed_compressed(
        tiles: *const u8,
        exception_starts: *const u32,
        exceptions: *const u16,
        far_starts: *const u32,
        far_exponents: *const u8,
        exception_table: *const u8,
        base: u32,
        vocab: u32,
        cols: u32,
        col_tiles: u32,
        ids: *const u32,
        out: *mut u16,
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
            rows: vocab,
            cols,
            col_tiles,
        };
        let (r, tile_group, _) = block_idx();
        let (warp, lane) = (thread_idx() / 32, thread_idx() % 32);
        let col_tile = tile_group * EMBED_TILE_WARPS + warp;
        if col_tile >= col_tiles {
            return; // a whole warp: no warp-wide operation is left waiting
        }
        // SAFETY: the id is checked against the matrix's rows, so the tile
        // index is valid; stores stay inside the token's output row.
        unsafe {
            let id = *ids.add(r as usize);
            if id >= vocab {
                trap();
            }
            let tile = (id / TILE_ROWS as u32) * col_tiles + col_tile;
            let want = id % TILE_ROWS as u32;
            let c0 = col_tile * TILE_COLS as u32;
            let g_row = out.add(r as usize * cols as usize);
            let r_pairs = view.load_lane(tile, lane).decode(base);
            seq_macro::seq!(P in 0..32 {
                let (row, col) = pair_position(lane as usize, P, 0);
                if row as u32 == want {
                    let c = c0 + col as u32;
                    if c < cols {
                        *g_row.add(c as usize) = r_pairs[P] as u16;
                    }
                    if c + 1 < cols {
                        *g_row.add(c as usize + 1) = (r_pairs[P] >> 16) as u16;
                    }
                }
            });
            // The exceptions below patch values other lanes stored; the
            // warp barrier orders those stores before the patches' loads.
            sync_warp();
            let e = view.tile_exceptions(tile);
            let first = view.exception(&e, lane);
            let table = |index: u32| ld_nc_u8(exception_table.add(index as usize));
            view.for_each_exception(&e, first, lane, table, |slot, exponent| {
                let (row, col) = slot_position(slot as usize);
                let c = c0 + col as u32;
                if row as u32 == want && c < cols {
                    let p = g_row.add(c as usize);
                    *p = crate::decode::patch_exponent(*p, exponent as u8);
                }
            });
        }
    }
}
