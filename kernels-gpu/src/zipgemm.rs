//! ZipGEMM: `Y[N×M] = X[N×K] · W[M×K]ᵀ` with `W` compressed. Weights go
//! from global memory to registers and are decoded there into
//! `mma.m16n8k16` A fragments; decoded weights never return to global
//! memory (they pass through a 4 KB per-warp shared-memory stage, where the
//! exceptions are patched). Activations are staged in shared memory, where
//! every warp of the block reads its B fragments.
//!
//! Grid: x = groups of [`GEMM_WARPS`] row tiles, y = split-K slice, z = chunk
//! of `8 * NT` activation rows. Each warp owns one 16-row tile of `W` and
//! walks its slice of 128-column tiles; per tile:
//!   fetch  – the next tile's weights (six 16/8-byte loads per lane) and its
//!            first 32 exception entries are issued a tile ahead (two tiles
//!            ahead needed 122 instead of 94 registers and ran 5–10% slower
//!            on an H200: fewer resident warps outweighed the deeper queue);
//!   stage  – `cp.async` copies the next activation chunk into the other
//!            shared buffer while this one is used;
//!   decode – 32 BF16 pairs per lane, one k-step's A fragment at a time,
//!            parked in a per-warp shared-memory stage in fragment order;
//!   patch  – each lane fixes about one exception's exponent in the stage,
//!            so the tensor cores see the exact weights; the A fragments
//!            come back with one 16-byte load per k-step. (A first version added
//!            `(w_true − w_fast)·x` corrections with shared-memory atomics per
//!            activation row; it cost 3–8× at N = 16–32 and needed the
//!            sign+mantissa byte from global memory, a dependent load.)
//!   mma    – 8 k-steps × NT n-tiles;
//!   store  – BF16 or f32, or f32 atomic adds when K is split.

use crate::decode::{base_pair, exception_entry, lane_pair, patch_exponent};
use crate::format::{EXC_FAR, LANE_PAIRS, LANES, TILE_COLS, TILE_ROWS, lane_slot};
use crate::launch::{CONVERT_THREADS, GEMM_WARPS, STORE_BF16, STORE_F32};
use crate::ptx::{
    ballot, block_idx, cp_async_16, cp_async_commit, cp_async_wait, f32_to_bf16, lane_id,
    lanemask_lt, ld_nc_u8, ld_nc_u16, ld_nc_u32, ld_shared_u8, ld_shared_u16, ld_shared_u32,
    ld_shared_v4, mma_bf16_16816, red_global_add_f32, shfl_idx, st_shared_u16, st_shared_u32,
    st_shared_v4, sync_threads, sync_warp, thread_idx,
};
use crate::tile::{LaneTile, MatrixView};

/// Staged activation row in BF16: 8 extra elements make the B-fragment reads
/// of the eight lane groups hit distinct banks (row stride 68 words).
const X_STRIDE: usize = TILE_COLS + 8;
/// Activation buffers: one being read, one being filled.
const X_STAGES: usize = 2;
/// One warp's decoded tile in fragment order: chunk `j` (the A fragment of
/// k-step `j`) of lane `l` at byte `(j * 32 + l) * 16`.
const A_STAGE_BYTES: usize = LANES * LANE_PAIRS * 4;
/// The exception table, padded to 32 entries.
const TABLE_BYTES: usize = 32;

const fn x_stage_bytes(nt: usize) -> usize {
    8 * nt * X_STRIDE * 2
}
const fn smem_bytes(nt: usize) -> usize {
    X_STAGES * x_stage_bytes(nt) + GEMM_WARPS as usize * A_STAGE_BYTES + TABLE_BYTES
}
const _: () = assert!(smem_bytes(4) <= 48 * 1024);
const _: () = assert!((X_STRIDE * 2).is_multiple_of(16));

/// Kernel arguments besides the matrix.
#[derive(Clone, Copy)]
struct GemmArgs {
    x: *const u16,
    n: u32,
    /// Non-zero when every activation row starts 16-byte aligned (K % 8 == 0
    /// and an aligned buffer): activations then move with `cp.async`.
    x_vector_loads: u32,
    y: *mut u16,
    y32: *mut f32,
    store: u32,
    tiles_per_split: u32,
}

/// A tile's data fetched one tile ahead.
struct Fetched {
    tile: LaneTile,
    /// Exception range of the tile, and where its far exponents start.
    start: u32,
    count: u32,
    far_start: u32,
    /// This lane's entry among the first 32 (0 if none).
    entry: u32,
}

/// Exception offsets of 32 consecutive tiles, one per lane, so a tile's
/// range comes from a shuffle instead of a dependent global load.
struct StartsWindow {
    first_tile: u32,
    exception_start: u32,
    far_start: u32,
}

impl StartsWindow {
    #[inline(always)]
    unsafe fn load(view: &MatrixView, first_tile: u32, tile_count: u32, lane: u32) -> Self {
        let t = (first_tile + lane).min(tile_count);
        // SAFETY: the starts arrays hold tile_count + 1 entries.
        unsafe {
            Self {
                first_tile,
                exception_start: ld_nc_u32(view.exception_starts.add(t as usize)),
                far_start: ld_nc_u32(view.far_starts.add(t as usize)),
            }
        }
    }
}

#[inline(always)]
unsafe fn fetch(
    view: &MatrixView,
    window: &mut StartsWindow,
    tile: u32,
    tile_count: u32,
    lane: u32,
) -> Fetched {
    // SAFETY: tile < tile_count; entry loads stay inside the tile's range.
    unsafe {
        if tile + 1 - window.first_tile >= LANES as u32 {
            *window = StartsWindow::load(view, tile, tile_count, lane);
        }
        let at = tile - window.first_tile;
        let start = shfl_idx(window.exception_start, at);
        let count = shfl_idx(window.exception_start, at + 1) - start;
        let far_start = shfl_idx(window.far_start, at);
        let entry = if lane < count {
            ld_nc_u16(view.exceptions.add((start + lane) as usize))
        } else {
            0
        };
        Fetched {
            tile: view.load_lane(tile, lane),
            start,
            count,
            far_start,
            entry,
        }
    }
}

/// Byte offset in the A stage of the weight at (row, col) of the tile.
#[inline(always)]
fn a_stage_offset(row: u32, col: u32) -> u32 {
    let (lane, pair, half) = lane_slot(row as usize, col as usize);
    (((pair / 4) * LANES + lane) * 16 + (pair % 4) * 4 + half * 2) as u32
}

/// Writes the true exponent of each of the tile's exceptions into the
/// warp's A stage, one entry per lane, 32 at a time.
#[inline(always)]
unsafe fn patch_exceptions(view: &MatrixView, f: &Fetched, s_a: u32, s_table: u32, lane: u32) {
    // SAFETY: entries index the tile's range; stage offsets stay in s_a.
    unsafe {
        let mut far_next = f.far_start;
        let mut first = 0;
        let mut entry = f.entry;
        loop {
            let active = first + lane < f.count;
            let (row, col, index) = exception_entry(entry as u16);
            let is_far = active && index == EXC_FAR;
            let far_mask = ballot(is_far);
            if active {
                let exponent = if is_far {
                    let k = far_next + (far_mask & lanemask_lt()).count_ones();
                    ld_nc_u8(view.far_exponents.add(k as usize))
                } else {
                    ld_shared_u8(s_table + index as u32)
                };
                let a = s_a + a_stage_offset(row as u32, col as u32);
                st_shared_u16(a, patch_exponent(ld_shared_u16(a), exponent as u8));
            }
            far_next += far_mask.count_ones();
            first += LANES as u32;
            if first >= f.count {
                break;
            }
            let i = first + lane;
            entry = if i < f.count {
                ld_nc_u16(view.exceptions.add((f.start + i) as usize))
            } else {
                0
            };
        }
    }
}

#[inline(always)]
unsafe fn zipgemm<const NT: usize>(view: MatrixView, args: GemmArgs, s_base: u32) {
    let tid = thread_idx();
    let warp = tid / 32;
    let lane = lane_id();
    let (g, t) = (lane / 4, lane % 4);
    let x_bytes = x_stage_bytes(NT) as u32;
    let s_x = |stage: u32| s_base + stage * x_bytes; // (8·NT, X_STRIDE) bf16 each
    let s_a = s_base + X_STAGES as u32 * x_bytes + warp * A_STAGE_BYTES as u32;
    let s_table = s_base + X_STAGES as u32 * x_bytes + GEMM_WARPS * A_STAGE_BYTES as u32;

    let (bx, split, chunk) = block_idx();
    let row_tiles = view.rows.div_ceil(TILE_ROWS as u32);
    let tile_count = row_tiles * view.col_tiles;
    let rt = bx * GEMM_WARPS + warp;
    let active = rt < row_tiles; // uniform per warp
    let n0 = chunk * 8 * NT as u32;
    let kt0 = split * args.tiles_per_split;
    let kt1 = (kt0 + args.tiles_per_split).min(view.col_tiles);
    let tile_of = |kt: u32| rt * view.col_tiles + kt;

    // SAFETY: shared addresses stay in this block's allocation; global
    // accesses are bounded by the shapes the host checked.
    unsafe {
        if tid < (TABLE_BYTES / 4) as u32 {
            st_shared_u32(
                s_table + 4 * tid,
                ld_nc_u32((view.exception_table as *const u32).add(tid as usize)),
            );
        }
        stage_activations::<NT>(s_x(0), args, view.cols, n0, kt0 * TILE_COLS as u32, tid);
        cp_async_commit();

        let mut r_acc = [[0f32; 4]; NT];
        let mut window = StartsWindow::load(&view, tile_of(kt0).min(tile_count), tile_count, lane);
        let mut r_next = if active && kt0 < kt1 {
            Some(fetch(&view, &mut window, tile_of(kt0), tile_count, lane))
        } else {
            None
        };
        let mut kt = kt0;
        while kt < kt1 {
            // fetch
            let r_cur = r_next.take();
            if active && kt + 1 < kt1 {
                r_next = Some(fetch(&view, &mut window, tile_of(kt + 1), tile_count, lane));
            }
            // stage
            let stage = (kt - kt0) % 2;
            if kt + 1 < kt1 {
                stage_activations::<NT>(
                    s_x(1 - stage),
                    args,
                    view.cols,
                    n0,
                    (kt + 1) * TILE_COLS as u32,
                    tid,
                );
            }
            cp_async_commit();
            cp_async_wait::<1>();
            sync_threads();
            if let Some(f) = r_cur {
                // decode, one k-step (4 pairs) at a time, into the A stage
                let base2 = base_pair(view.base as u8);
                let (sm, codes) = (&f.tile.sm, &f.tile.codes);
                seq_macro::seq!(J in 0..8 {
                    let first = J * 4; // the k-step's four pairs: registers a0..a3
                    let a = [0, 1, 2, 3].map(|r| lane_pair(sm, codes, first + r, base2));
                    st_shared_v4(s_a + (J * 32 + lane) * 16, a);
                });
                sync_warp();
                // patch
                if f.count > 0 {
                    patch_exceptions(&view, &f, s_a, s_table, lane);
                    sync_warp();
                }
                // mma
                let s_xs = s_x(stage);
                seq_macro::seq!(S in 0..8 {
                    let a = ld_shared_v4(s_a + (S * 32 + lane) * 16);
                    let mut nt = 0;
                    while nt < NT {
                        let row = s_xs + ((nt as u32 * 8 + g) * X_STRIDE as u32 + S * 16 + 2 * t) * 2;
                        let b = [ld_shared_u32(row), ld_shared_u32(row + 16)];
                        r_acc[nt] = mma_bf16_16816(a, b, r_acc[nt]);
                        nt += 1;
                    }
                });
            }
            // Everyone is done with this stage before the next iteration
            // refills it.
            sync_threads();
            kt += 1;
        }
        cp_async_wait::<0>();

        if !active {
            return;
        }
        // store: C fragment element i of n-tile nt is row g + 8·(i / 2),
        // column nt·8 + 2t + i % 2 (PTX ISA §9.7.14.5.8, m16n8k16 C/D).
        let mut nt = 0;
        while nt < NT {
            let mut i = 0;
            while i < 4 {
                let row = g + 8 * (i as u32 / 2);
                let (m, n) = (
                    rt * TILE_ROWS as u32 + row,
                    n0 + nt as u32 * 8 + 2 * t + i as u32 % 2,
                );
                if m < view.rows && n < args.n {
                    let at = n as usize * view.rows as usize + m as usize;
                    let v = r_acc[nt][i];
                    match args.store {
                        STORE_BF16 => *args.y.add(at) = f32_to_bf16(v),
                        STORE_F32 => *args.y32.add(at) = v,
                        _ => red_global_add_f32(args.y32.add(at), v),
                    }
                }
                i += 1;
            }
            nt += 1;
        }
    }
}

/// Starts copying activations `X[n0 .. n0 + 8·NT][k0 .. k0 + 128]` into the
/// shared buffer `s_x` (zero past N and K), in 16-byte units spread over the
/// block: asynchronously when rows are 16-byte aligned, else element-wise.
#[inline(always)]
unsafe fn stage_activations<const NT: usize>(
    s_x: u32,
    args: GemmArgs,
    k: u32,
    n0: u32,
    k0: u32,
    tid: u32,
) {
    const UNITS_PER_ROW: u32 = (TILE_COLS / 8) as u32;
    let units = 8 * NT as u32 * UNITS_PER_ROW;
    let mut u = tid;
    // SAFETY: loads are bounded by N and K; stores by the stage size.
    unsafe {
        while u < units {
            let (row, unit) = (u / UNITS_PER_ROW, u % UNITS_PER_ROW);
            let (n, kc) = (n0 + row, k0 + unit * 8);
            let dst = s_x + (row * X_STRIDE as u32 + unit * 8) * 2;
            let inside = n < args.n && kc < k;
            if args.x_vector_loads != 0 {
                let src = if inside {
                    args.x.add(n as usize * k as usize + kc as usize)
                } else {
                    args.x
                };
                cp_async_16(dst, src as *const u8, if inside { 16 } else { 0 });
            } else {
                let mut e = 0;
                while e < 8 {
                    let v = if inside && kc + e < k {
                        ld_nc_u16(args.x.add(n as usize * k as usize + (kc + e) as usize))
                    } else {
                        0
                    };
                    st_shared_u16(dst + 2 * e, v as u16);
                    e += 1;
                }
            }
            u += GEMM_WARPS * 32;
        }
    }
}

macro_rules! zipgemm_entry {
    ($name:ident, $nt:literal) => {
        /// ZipGEMM for chunks of
        #[doc = concat!(stringify!($nt), " × 8 activation rows.")]
        ///
        /// # Safety
        /// The matrix pointers describe a matrix validated by the host; `x`
        /// holds n × cols BF16; `y` (or `y32`) n × rows outputs; block size
        /// `32 * GEMM_WARPS`; grid as in the module documentation.
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
            x_vector_loads: u32,
            y: *mut u16,
            y32: *mut f32,
            store: u32,
            tiles_per_split: u32,
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
            let args = GemmArgs {
                x,
                n,
                x_vector_loads,
                y,
                y32,
                store,
                tiles_per_split,
            };
            let s_base = crate::ptx::shared_memory::<{ smem_bytes($nt) }>();
            // SAFETY: forwarded from the caller.
            unsafe { zipgemm::<$nt>(view, args, s_base) }
        }
    };
}

zipgemm_entry!(zipserv_gemm_n8, 1);
zipgemm_entry!(zipserv_gemm_n16, 2);
zipgemm_entry!(zipserv_gemm_n32, 4);

/// Rounds the f32 split-K sums to BF16.
///
/// # Safety
/// `src` and `dst` hold `len` elements.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn zipserv_f32_to_bf16(src: *const f32, dst: *mut u16, len: u32) {
    let (bx, _, _) = block_idx();
    let stride = crate::ptx::grid_dim_x() * CONVERT_THREADS;
    let mut i = bx * CONVERT_THREADS + thread_idx();
    while i < len {
        // SAFETY: i < len.
        unsafe { *dst.add(i as usize) = f32_to_bf16(*src.add(i as usize)) };
        i += stride;
    }
}
