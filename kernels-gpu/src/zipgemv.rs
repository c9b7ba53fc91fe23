//! The compressed matrix-vector product of decode batches, `Y[n×m] =
//! X[n×k] · Wᵀ` for n ≤ [`ZIPGEMV_MAX_N`] with `W` compressed: the BF16 GEMV's
//! way of dealing out work (`gemv`), with the `mma.sync` ZipGEMM's tile
//! decode (`zipgemm`).
//!
//! Why: at n ≤ 8 a product is a stream of the weights, and the ZipGEMM
//! kernels pay a fixed cost per product that a stream of the same bytes
//! does not (docs/PERFORMANCE.md, "The fixed cost per product": ~8 µs of
//! 4096×4096's 11.2 at N = 1 on an H200, where the BF16 GEMV streams 41%
//! more bytes in 11.0). Two of their parts have no place in a GEMV: the
//! split-K end (partial sums through global memory, an arrival counter,
//! the last block's reads), and a barrier of the whole block per tile for
//! the activations it stages. Here neither exists:
//!
//! - a block takes one 16-row tile row of W at a time (a row group, as
//!   few blocks as one wave holds taking them in turn,
//!   [`gemv_grid`](crate::gemv::gemv_grid)); its 8 warps split the row's
//!   128-column tiles into contiguous runs
//!   ([`warp_blocks`](crate::gemv::warp_blocks)) and add their sums in
//!   shared memory at the end, as the BF16 GEMV's warps do, so no partial
//!   sum leaves the block. (Tried after `d7bae5e`, branch
//!   `exp-gemv-even-shares`: one even share of the tiles per wave slot,
//!   cutting rows anywhere, the last block to finish a row adding the
//!   shares' sums: 4096×4096 took 13.5 µs against 9.9 at N = 1, as each
//!   cut row stalls the block's adding warps for an atomic round trip.)
//! - each warp stages its own activations: the next tile's columns of X
//!   go by `cp.async` into one of the warp's two shared buffers while this
//!   tile is decoded, and `ldmatrix` gives the B fragments
//!   ([`x_stage_offset`]), so warps never wait for one another inside a
//!   row. (First measured with each lane loading its two 32-bit words per
//!   k-step from global memory: at N = 8 every such load touches 8 lines
//!   of L1 and 28672×4096 took 69.6 µs against 47.0 at N = 1.)
//! - per tile, as in the `mma.sync` ZipGEMM: the next tile's compressed
//!   data and first exception entries are loaded before this one is
//!   decoded; the decode goes into the warp's 4 KB A stage in fragment
//!   order, each lane patches about one exception's exponent there, and
//!   each k-step's A fragment comes back with one 16-byte shared load into
//!   `mma.m16n8k16` (the activation rows are B's 8 columns: one `mma` per
//!   k-step and n-tile of 8 rows whatever n).
//! - two variants ([`ZIPGEMV_VARIANTS`](crate::launch::ZIPGEMV_VARIANTS)):
//!   one n-tile (n ≤ 8, 80 registers, 3 blocks per multiprocessor) and two
//!   (n ≤ 16, 128 registers, 2 blocks: its 16-row activation buffers make
//!   a block 107 KB); the second decodes each tile once for both n-tiles.
//!
//! Measured on an H200 (docs/PERFORMANCE.md, "A compressed GEMV" and "Up
//! to 16 rows"): launched alone, 13–16% faster than the `mma.sync` kernel
//! on 4096×4096 and 6144×4096 at n ≤ 8, and 14–21% on 4096×4096 at n =
//! 9–16 (the n16 variant against the `mma.sync` n16 one); slower where its
//! blocks take several row tiles each (28672×4096, and 6144×4096 at n >
//! 8); no faster in a decode step launched with overlap, which already
//! hides the fixed cost it saves. The host's `gemv_auto` takes it
//! accordingly.

use crate::format::TILE_COLS;
use crate::launch::ZIPGEMV_MAX_N;

/// Columns, relative to a tile's first, of the two activation words lane
/// `lane` gives `mma.m16n8k16` as its B fragment in k-step `s`: `b0` holds
/// columns `c, c + 1` and `b1` columns `c + 8, c + 9` of activation row
/// `lane / 4` (PTX ISA §9.7.14.5.8), `c = 16s + 2(lane % 4)`: the columns of
/// the weights the same lane's A fragment holds
/// ([`pair_position`](crate::format::pair_position)).
#[inline(always)]
pub const fn x_columns(lane: u32, s: u32) -> [u32; 2] {
    let c = 16 * s + 2 * (lane % 4);
    [c, c + 8]
}

/// Bytes of one activation row of one tile (128 columns, BF16).
pub const X_ROW_BYTES: usize = TILE_COLS * 2;
/// Bytes of an activation buffer of the most rows (16).
pub const X_STAGE_BYTES: usize = ZIPGEMV_MAX_N * X_ROW_BYTES;

/// Byte offset in an activation buffer of the 16 bytes (8 columns) `unit`
/// (0..16) of activation row `row` (0..16): rows 256 bytes apart, the units
/// of row `r` permuted by `unit ^ r`, so the 8 row addresses of one
/// `ldmatrix` matrix (one unit, rows `8j..8j + 8`) fall in 8 different
/// groups of four banks: no conflicts.
#[inline(always)]
pub const fn x_stage_offset(row: u32, unit: u32) -> u32 {
    row * (TILE_COLS as u32 * 2) + ((unit ^ row) * 16)
}

/// The shared address lane `lane` gives `ldmatrix.x4` for k-steps `2p` and
/// `2p + 1` of n-tile `j` (activation rows `8j..8j + 8`) of the buffer at
/// `stage`, which holds rows `0..n`: matrix `q = lane / 8` is units `4p +
/// q` of those 8 rows, and lane `l`'s register `q` is then row `8j + l /
/// 4`, columns `2(l % 4), +1` of it, which is B's `b0` of k-step `2p` (`q`
/// = 0), `b1` (1), and the same of k-step `2p + 1` (2, 3): the columns of
/// [`x_columns`]. Rows from `n` on are read from the row of zeros at
/// `zero`.
#[inline(always)]
pub const fn x_fragment_address(stage: u32, zero: u32, n: u32, lane: u32, j: u32, p: u32) -> u32 {
    let (row, unit) = (8 * j + lane % 8, 4 * p + lane / 8);
    if row < n {
        stage + x_stage_offset(row, unit)
    } else {
        zero + ((unit ^ row) * 16)
    }
}

/// Why a product of this shape cannot run on the compressed GEMV, or
/// `None`. Activations move in 16-byte units, so `k` must be a multiple
/// of 8 (the host also checks that X starts on a 16-byte boundary).
pub fn zipgemv_unsupported(m: usize, k: usize, n: usize) -> Option<&'static str> {
    if m == 0 || k == 0 || n == 0 {
        Some("an empty product")
    } else if n > ZIPGEMV_MAX_N {
        Some("more activation rows than the compressed GEMV's 16")
    } else if !k.is_multiple_of(8) {
        Some("a row length (k) that is not a multiple of 8")
    } else if n
        .checked_mul(m.max(k.next_multiple_of(TILE_COLS)))
        .is_none_or(|e| e > u32::MAX as usize)
    {
        Some("a product beyond 32-bit indexing")
    } else {
        None
    }
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::*;
    use crate::decode::{base_pair, lane_pair};
    use crate::format::{K_STEPS, LANES, TILE_ROWS};
    use crate::gemv::gpu::{GroupOutput, finish_group};
    use crate::gemv::{GemvLane, warp_blocks};
    use crate::launch::{
        GEMM_A_STAGE_BYTES, GEMM_TABLE_BYTES, GEMV_SMEM_BYTES, GEMV_WARPS, ZIPGEMV_VARIANTS,
        ZipgemvVariant, zipgemv_warp_bytes,
    };
    use crate::ptx::{
        block_idx, cp_async_16, cp_async_commit, cp_async_wait, dynamic_shared_memory, grid_dim_x,
        lane_id, ld_shared_v4, ldmatrix_x4, mma_bf16_16816, st_shared_v4, start_after_prior_grids,
        sync_threads, sync_warp, thread_idx, warp_index,
    };
    use crate::tile::{MatrixView, patch_a_stage, stage_exception_table};
    use crate::zipgemm::{Fetched, StartsWindow, fetch};

    const _: () = assert!(
        TILE_ROWS == crate::launch::GEMV_ROWS,
        "a row group is a tile row"
    );
    const _: () = assert!(K_STEPS == 8, "the loops below unroll exactly 8 k-steps");
    // The block's warps are the BF16 GEMV's: `finish_group` adds that many slots.
    const _: () = assert!(GEMV_WARPS == 8);

    /// Shared memory of a block (dynamic, `zipgemv_smem_bytes(n)`): the
    /// warps' sum slots (as the BF16 GEMV's), the exception table, a row
    /// of zeros, then each warp's A stage and two activation buffers of
    /// `n` rows.
    #[derive(Clone, Copy)]
    struct Smem {
        slots: u32,
        table: u32,
        zero: u32,
        a: u32,
        x0: u32,
        x_bytes: u32,
    }

    impl Smem {
        /// Activation buffer `b` (0 or 1): an address computed, not an
        /// array indexed, which would go to local memory.
        #[inline(always)]
        fn x(&self, b: u32) -> u32 {
            self.x0 + b * self.x_bytes
        }
    }

    /// Where a warp's stream of tiles stands: a row tile and a column tile.
    #[derive(Clone, Copy)]
    struct Cursor {
        group: u32,
        kt: u32,
    }

    /// What every warp of a launch knows.
    struct Walk {
        view: MatrixView,
        x: *const u16,
        n: u32,
        lane: GemvLane,
        /// This warp's column tiles of every row (see [`warp_blocks`]).
        first: u32,
        end: u32,
        row_tiles: u32,
        tile_count: u32,
        base2: u32,
    }

    impl Walk {
        /// The tile after `at` in this warp's stream: on in the row, else
        /// the first of the block's next row.
        #[inline(always)]
        fn advance(&self, at: Cursor, grid: u32) -> Cursor {
            match at.kt + 1 < self.end {
                true => Cursor {
                    group: at.group,
                    kt: at.kt + 1,
                },
                false => Cursor {
                    group: at.group + grid,
                    kt: self.first,
                },
            }
        }

        /// The compressed data of the tile at `at`, or nothing past the
        /// last row tile (warp-uniform). (Tried after `6ba0816`: fetching
        /// the window's first tile again there, never decoded, took 26
        /// instructions out of each warp-tile but made the GEMV 3–8%
        /// slower: that load's registers are copied into the current
        /// tile's right after a row's last multiply, so each warp waited
        /// out its latency before the row's barrier.)
        #[inline(always)]
        unsafe fn fetch(&self, window: &mut StartsWindow, at: Cursor) -> Fetched {
            if at.group < self.row_tiles {
                let tile = at.group * self.view.col_tiles + at.kt;
                // SAFETY: tile < tile_count.
                unsafe { fetch(&self.view, window, tile, self.tile_count, lane_id()) }
            } else {
                Fetched::NONE
            }
        }

        /// Starts copying the activations of the tile at `at` into the
        /// buffer at `stage` (one commit group, empty past the last row
        /// tile): rows below `n`, 16 bytes per lane and row pair; units
        /// past `k` are zero-filled (rows from `n` on come from the row of
        /// zeros). The tile's padding columns must meet zeros: they decode
        /// to the window base, not to zero.
        #[inline(always)]
        unsafe fn stage_x<const NT: usize>(&self, stage: u32, at: Cursor) {
            let lane = lane_id();
            let (row0, unit) = (lane / 16, lane % 16);
            let col = at.kt * TILE_COLS as u32 + 8 * unit;
            let k = self.view.cols;
            if at.group < self.row_tiles {
                let mut j = 0;
                while j < 4 * NT as u32 {
                    let row = row0 + 2 * j;
                    if row < self.n {
                        let inside = col < k;
                        let at = row as usize * k as usize + col as usize;
                        let src = if inside {
                            self.x.wrapping_add(at)
                        } else {
                            self.x
                        };
                        // SAFETY: inside X when `inside` (k is a multiple of
                        // 8, X 16-byte aligned), else no byte is read.
                        unsafe {
                            cp_async_16(
                                stage + x_stage_offset(row, unit),
                                src.cast(),
                                if inside { 16 } else { 0 },
                            )
                        };
                    }
                    j += 1;
                }
            }
            cp_async_commit();
        }

        /// Decodes `cur` into the warp's A stage, starts the activations
        /// of the tile at `next` into buffer `1 - b`, patches `cur`'s
        /// exceptions, waits for its own activations (buffer `b`), and adds
        /// its products to `acc`. The tile's `mma` chain starts from zero
        /// and is added to `acc` in f32, as in the BF16 GEMV.
        #[inline(always)]
        unsafe fn multiply_tile<const NT: usize>(
            &self,
            s: &Smem,
            cur: &Fetched,
            b: u32,
            next: Cursor,
            acc: &mut [[f32; 4]; NT],
        ) {
            let lane = lane_id();
            let (sm, codes) = (&cur.tile.sm, &cur.tile.codes);
            // SAFETY: the warp's own A stage and buffers; the table in
            // shared memory; `cur` describes a tile of this matrix.
            unsafe {
                seq_macro::seq!(S in 0..8 {
                    let first = S * 4;
                    let a = [0, 1, 2, 3].map(|r| lane_pair(sm, codes, first + r, self.base2));
                    st_shared_v4(s.a + (S * LANES as u32 + lane) * 16, a);
                });
                // After this every lane is done with the previous tile,
                // whose activations were in buffer 1 - b.
                sync_warp();
                self.stage_x::<NT>(s.x(1 - b), next);
                if cur.exceptions.count > 0 {
                    patch_a_stage(
                        &self.view,
                        &cur.exceptions,
                        cur.entry,
                        cur.second,
                        lane,
                        s.table,
                        s.a,
                    );
                }
                // This tile's activations (all but the newest group).
                cp_async_wait::<1>();
                sync_warp();
                let mut part = [[0f32; 4]; NT];
                seq_macro::seq!(P in 0..4 {
                    let mut bx = [[0u32; 4]; NT];
                    seq_macro::seq!(J in 0..2 {
                        if J < NT {
                            bx[J] = ldmatrix_x4(x_fragment_address(
                                s.x(b), s.zero, self.n, lane, J, P,
                            ));
                        }
                    });
                    seq_macro::seq!(H in 0..2 {
                        let a = ld_shared_v4(s.a + ((2 * P + H) * LANES as u32 + lane) * 16);
                        seq_macro::seq!(J in 0..2 {
                            if J < NT {
                                part[J] = mma_bf16_16816(
                                    a, [bx[J][2 * H], bx[J][2 * H + 1]], part[J],
                                );
                            }
                        });
                    });
                });
                seq_macro::seq!(J in 0..2 {
                    if J < NT {
                        seq_macro::seq!(I in 0..4 {
                            acc[J][I] += part[J][I];
                        });
                    }
                });
            }
        }
    }

    /// The kernel's body for `NT` n-tiles (see the module documentation
    /// and [`ZIPGEMV_VARIANTS`]); `view` is the matrix the entry points
    /// receive as separate parameters, the rest as they receive them.
    ///
    /// # Safety
    /// As the entry points'.
    #[inline(always)]
    unsafe fn zipgemv<const NT: usize>(
        view: MatrixView,
        x: *const u16,
        n: u32,
        y: *mut u16,
        y32: *mut f32,
        store: u32,
    ) {
        let (exception_table, col_tiles, rows) = (view.exception_table, view.col_tiles, view.rows);
        let base = view.base;
        let smem = dynamic_shared_memory();
        let (tid, warp) = (thread_idx(), warp_index(thread_idx()));
        let zero = smem + (GEMV_SMEM_BYTES + GEMM_TABLE_BYTES) as u32;
        let own = zero + X_ROW_BYTES as u32 + warp * zipgemv_warp_bytes(n as usize) as u32;
        let s = Smem {
            slots: smem,
            table: smem + GEMV_SMEM_BYTES as u32,
            zero,
            a: own,
            x0: own + GEMM_A_STAGE_BYTES as u32,
            x_bytes: n * X_ROW_BYTES as u32,
        };
        let (first, end) = warp_blocks(warp, col_tiles);
        let row_tiles = rows.div_ceil(TILE_ROWS as u32);
        let w = Walk {
            view,
            x,
            n,
            lane: GemvLane::new(lane_id()),
            first,
            end,
            row_tiles,
            tile_count: row_tiles * col_tiles,
            base2: base_pair(base as u8),
        };
        // Where n-tile j's sums go: Y from activation row 8j on.
        let out = |j: u32| GroupOutput {
            y: y.wrapping_add((8 * j * rows) as usize),
            y32: y32.wrapping_add((8 * j * rows) as usize),
            rows,
            n: n.saturating_sub(8 * j),
            store,
        };
        let grid = grid_dim_x();
        let mut at = Cursor {
            group: block_idx().0,
            kt: first,
        };
        let active = first < end;
        // SAFETY (every access below): the launch contract above; shared
        // addresses stay inside zipgemv_smem_bytes(n).
        unsafe {
            stage_exception_table(exception_table, s.table, tid);
            if tid < (X_ROW_BYTES / 16) as u32 {
                st_shared_v4(s.zero + 16 * tid, [0; 4]);
            }
            let tile0 = (at.group * col_tiles + at.kt).min(w.tile_count);
            let mut window = StartsWindow::load(&w.view, tile0, w.tile_count, lane_id());
            // The weights depend on no earlier kernel: the first tile is
            // on its way before this waits for the kernel that writes X.
            let mut cur = if active {
                w.fetch(&mut window, at)
            } else {
                Fetched::NONE
            };
            start_after_prior_grids();
            if active {
                w.stage_x::<NT>(s.x(0), at);
            }
            // The table is in shared memory before anyone patches.
            sync_threads();
            let (mut parity, mut b) = (0, 0);
            while at.group < row_tiles {
                let group = at.group;
                let mut acc = [[0f32; 4]; NT];
                // `at` is warp-uniform, so the warp takes every turn whole.
                while at.group == group && at.kt < end {
                    let next_at = w.advance(at, grid);
                    // One tile ahead. (Tried, commit e42ca86: two ahead,
                    // at 126 registers and 2 blocks per multiprocessor:
                    // slower at N = 1 on every Llama-3-8B shape, e.g.
                    // 28672×4096 49.5 against 46.9 µs, and in the engine.)
                    let next = w.fetch(&mut window, next_at);
                    w.multiply_tile(&s, &cur, b, next_at, &mut acc);
                    cur = next;
                    at = next_at;
                    b = 1 - b;
                }
                // Every warp reaches these barriers, one per n-tile and row
                // group; the slots alternate between them.
                seq_macro::seq!(J in 0..2 {
                    if J < NT {
                        finish_group(&out(J), w.lane, warp, group, acc[J], s.slots, parity);
                        parity ^= 1;
                    }
                });
                at = Cursor {
                    group: group + grid,
                    kt: first,
                };
            }
            cp_async_wait::<0>();
        }
    }

    macro_rules! zipgemv_entry {
        ($name:ident, $v:literal) => {
            /// Compressed `Y[n×rows] = X[n×cols] · Wᵀ` (see the module
            /// documentation), variant
            #[doc = concat!(stringify!($v), " of `launch::ZIPGEMV_VARIANTS`.")]
            ///
            /// # Safety
            /// The matrix sections describe a validated compressed matrix
            /// of `rows × cols` (`col_tiles` column tiles, window base
            /// `base`); `x` holds n × cols BF16, 16-byte aligned, n at most
            /// the variant's `max_n()`; `zipgemv_unsupported(rows, cols, n)`
            /// is `None`; `y` (BF16, `store` = `STORE_BF16`) or `y32` (f32,
            /// otherwise) holds n × rows; a grid of at most as many blocks
            /// as row tiles, each of `32 · GEMV_WARPS` threads with
            /// `zipgemv_smem_bytes(n)` of dynamic shared memory.
            ///
            /// The matrix comes as separate parameters, as in the
            /// `mma.sync` kernel: taken as one by-value `MatrixView` (tried
            /// after `d7bae5e`) the kernel spilled 4 bytes at its 80
            /// registers.
            #[unsafe(no_mangle)]
            #[allow(clippy::too_many_arguments)]
            pub unsafe extern "ptx-kernel" fn $name(
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
                x: *const u16,
                n: u32,
                y: *mut u16,
                y32: *mut f32,
                store: u32,
            ) {
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
                const V: ZipgemvVariant = ZIPGEMV_VARIANTS[$v];
                // SAFETY: forwarded from the caller.
                unsafe { zipgemv::<{ V.nt }>(view, x, n, y, y32, store) }
            }
        };
    }

    zipgemv_entry!(zipserv_zipgemv, 0);
    zipgemv_entry!(zipserv_zipgemv_n16, 1);
    const _: () = assert!(ZIPGEMV_VARIANTS.len() == 2, "one entry point per variant");
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::format::{LANE_PAIRS, LANES, pair_position};

    /// The B fragment of each lane and k-step holds the activation columns
    /// of the weights its A fragment holds (a0, a1: columns `c, c + 1`;
    /// a2, a3: `c + 8, c + 9`), which is what makes the product right.
    #[test]
    fn b_fragments_meet_the_tile_columns_of_a() {
        for lane in 0..LANES {
            for pair in 0..LANE_PAIRS {
                let (s, reg) = (pair / 4, pair % 4);
                let [b0, b1] = x_columns(lane as u32, s as u32);
                let want = if reg >> 1 == 0 { b0 } else { b1 };
                for half in 0..2 {
                    let (_, col) = pair_position(lane, pair, half);
                    assert_eq!(col as u32, want + half as u32, "lane {lane} pair {pair}");
                }
            }
        }
    }

    /// `ldmatrix` hands each lane the columns [`x_columns`] says, from
    /// buffer places that hold each (row, unit) once, and the 8 rows of
    /// one matrix touch 8 different groups of four banks.
    #[test]
    fn activation_buffers_give_the_b_fragments_without_conflicts() {
        let mut seen = [0u32; X_STAGE_BYTES / 16];
        for row in 0..16 {
            for unit in 0..16 {
                seen[(x_stage_offset(row, unit) / 16) as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
        for (j, p) in (0..2).flat_map(|j| (0..4).map(move |p| (j, p))) {
            // ldmatrix: lane l gives the address of row l % 8 of matrix
            // l / 8; lane (g, t) then gets row 8j + g, columns 2t, 2t + 1
            // of each.
            let address = |lane: u32| x_fragment_address(0, 1 << 20, 16, lane, j, p);
            for q in 0..4u32 {
                let banks: std::collections::BTreeSet<u32> =
                    (0..8).map(|r| (address(8 * q + r) / 16) % 8).collect();
                assert_eq!(
                    banks.len(),
                    8,
                    "matrix {q} of k-steps {}, {}",
                    2 * p,
                    2 * p + 1
                );
                for lane in 0..32u32 {
                    let (g, t) = (lane / 4, lane % 4);
                    // The unit matrix q's row g was read from.
                    let at = address(8 * q + g);
                    let (row, unit) = (at / 256, (at % 256 / 16) ^ (at / 256));
                    assert_eq!(row, 8 * j + g);
                    let col = 8 * unit + 2 * t;
                    let [b0, b1] = x_columns(lane, 2 * p + q / 2);
                    assert_eq!(col, if q % 2 == 0 { b0 } else { b1 }, "lane {lane} q {q}");
                }
            }
        }
    }

    /// Rows from `n` on read the row of zeros, at 8 different banks groups.
    #[test]
    fn rows_past_n_read_the_row_of_zeros() {
        let zero = 1 << 20;
        for n in 1..16u32 {
            for (j, lane) in (0..2).flat_map(|j| (0..32u32).map(move |l| (j, l))) {
                let row = 8 * j + lane % 8;
                let at = x_fragment_address(0, zero, n, lane, j, 1);
                assert_eq!(at >= zero, row >= n, "n {n} j {j} lane {lane}");
                if row < n {
                    assert!(at < n * X_ROW_BYTES as u32);
                } else {
                    assert!(at < zero + X_ROW_BYTES as u32);
                }
            }
            let banks: std::collections::BTreeSet<u32> = (0..8)
                .map(|r| (x_fragment_address(0, zero, n, r, 1, 2) / 16) % 8)
                .collect();
            assert_eq!(banks.len(), 8, "n {n}");
        }
    }

    #[test]
    fn unsupported_shapes_say_why() {
        assert_eq!(zipgemv_unsupported(4096, 4096, 1), None);
        assert_eq!(zipgemv_unsupported(5, 8, 8), None);
        assert!(
            zipgemv_unsupported(4096, 4095, 1)
                .unwrap()
                .contains("multiple of 8")
        );
        assert_eq!(zipgemv_unsupported(4096, 4096, 16), None);
        assert!(zipgemv_unsupported(4096, 4096, 17).unwrap().contains("16"));
        assert!(zipgemv_unsupported(0, 4096, 1).is_some());
        assert!(
            zipgemv_unsupported(1 << 30, 4096, 8)
                .unwrap()
                .contains("32-bit")
        );
    }
}
