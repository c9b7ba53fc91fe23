//! ZipGEMM: `Y[N×M] = X[N×K] · W[M×K]ᵀ` with `W` compressed. Weights go
//! from global memory to registers, are decoded there into `mma.m16n8k16` A
//! fragments and never written back; activations are staged in shared
//! memory, where every warp of the block reads its B fragments.
//!
//! Grid: x = groups of [`GEMM_WARPS`] row tiles, y = split-K slice, z = chunk
//! of `8 * NT` activation rows. Each warp owns one 16-row tile of `W` and
//! walks its slice of 128-column tiles:
//!   fetch  – the next tile's six loads are issued before the current tile
//!            is decoded, so they are in flight during the work below;
//!   stage  – the block copies its activation chunk for this tile to shared
//!            memory (zero-filled past N and K);
//!   decode – 32 BF16 pairs per lane, in registers;
//!   mma    – 8 k-steps × NT n-tiles;
//!   patch  – exceptions: the fast decode used exponent `base` for them, so
//!            each adds `(w_true − w_fast) · x` to a per-warp correction
//!            table in shared memory, spread over the warp's lanes;
//!   store  – after the slice, corrections are folded into the accumulators
//!            and the warp writes its outputs (or adds them atomically when
//!            K is split).

use crate::format::{TILE_BYTES, TILE_COLS, TILE_ROWS, lane_slot, sm_byte_offset};
use crate::launch::{CONVERT_THREADS, GEMM_WARPS, STORE_BF16, STORE_F32};
use crate::ptx::{
    block_idx, f32_to_bf16, lane_id, ld_nc_u8, ld_nc_u16, ld_nc_v4, ld_shared_u16, ld_shared_u32,
    mma_bf16_16816, red_global_add_f32, red_shared_add_f32, shared_memory, st_shared_u32,
    st_shared_v4, sync_threads, sync_warp, thread_idx,
};
use crate::tile::{LaneTile, MatrixView};

/// Staged activation row in BF16: 8 extra elements make the B-fragment reads
/// of the eight lane groups hit distinct banks (row stride 68 words).
const X_STRIDE: usize = TILE_COLS + 8;

const fn x_stage_bytes(nt: usize) -> usize {
    8 * nt * X_STRIDE * 2
}
const fn corr_bytes(nt: usize) -> usize {
    GEMM_WARPS as usize * TILE_ROWS * 8 * nt * 4
}
const fn smem_bytes(nt: usize) -> usize {
    x_stage_bytes(nt) + corr_bytes(nt)
}
const _: () = assert!(smem_bytes(4) <= 48 * 1024);

/// Kernel arguments besides the matrix.
#[derive(Clone, Copy)]
struct GemmArgs {
    x: *const u16,
    n: u32,
    /// Non-zero when every activation row starts 16-byte aligned (K % 8 == 0).
    x_vector_loads: u32,
    y: *mut u16,
    y32: *mut f32,
    store: u32,
    tiles_per_split: u32,
}

#[inline(always)]
unsafe fn zipgemm<const NT: usize>(view: MatrixView, args: GemmArgs, s_base: u32) {
    let s_x = s_base; // (8·NT, X_STRIDE) bf16
    let tid = thread_idx();
    let warp = tid / 32;
    let lane = lane_id();
    let (g, t) = (lane / 4, lane % 4);
    let s_corr = s_base + x_stage_bytes(NT) as u32 + warp * (TILE_ROWS * 8 * NT * 4) as u32; // (16, 8·NT) f32

    let (bx, split, chunk) = block_idx();
    let row_tiles = view.rows.div_ceil(TILE_ROWS as u32);
    let rt = bx * GEMM_WARPS + warp;
    let active = rt < row_tiles; // uniform per warp
    let n0 = chunk * 8 * NT as u32;
    let kt0 = split * args.tiles_per_split;
    let kt1 = (kt0 + args.tiles_per_split).min(view.col_tiles);

    // SAFETY: shared addresses stay in this block's allocation; global
    // accesses are bounded by the shapes the host checked.
    unsafe {
        let mut i = lane;
        while i < (TILE_ROWS * 8 * NT) as u32 {
            st_shared_u32(s_corr + 4 * i, 0);
            i += 32;
        }

        let mut r_acc = [[0f32; 4]; NT];
        let tile_of = |kt: u32| rt * view.col_tiles + kt;
        let mut r_next: Option<LaneTile> = if active && kt0 < kt1 {
            Some(view.load_lane(tile_of(kt0), lane))
        } else {
            None
        };
        let mut kt = kt0;
        while kt < kt1 {
            // fetch: the next tile's loads fly while this one is worked on.
            let r_cur = r_next.take();
            if active && kt + 1 < kt1 {
                r_next = Some(view.load_lane(tile_of(kt + 1), lane));
            }
            // stage
            sync_threads();
            stage_activations::<NT>(s_x, args, view.cols, n0, kt * TILE_COLS as u32, tid);
            sync_threads();
            if let Some(r_cur) = r_cur {
                // decode + mma
                let r_pairs = r_cur.decode(view.base);
                seq_macro::seq!(S in 0..8 {
                    let a = [r_pairs[4 * S], r_pairs[4 * S + 1], r_pairs[4 * S + 2], r_pairs[4 * S + 3]];
                    let mut nt = 0;
                    while nt < NT {
                        let row = s_x + (((nt as u32 * 8 + g) * X_STRIDE as u32 + S * 16 + 2 * t) * 2);
                        let b = [ld_shared_u32(row), ld_shared_u32(row + 16)];
                        r_acc[nt] = mma_bf16_16816(a, b, r_acc[nt]);
                        nt += 1;
                    }
                });
                // patch
                let tile = tile_of(kt);
                let g_tile = view.tiles.add(tile as usize * TILE_BYTES);
                view.for_each_exception(tile, lane, |row, col, exponent| {
                    let (l, p, h) = lane_slot(row as usize, col as usize);
                    let sm = ld_nc_u8(g_tile.add(sm_byte_offset(l, p, h)));
                    let bits = |e: u32| ((sm & 0x80) << 8 | e << 7 | (sm & 0x7F)) << 16;
                    let delta = f32::from_bits(bits(exponent)) - f32::from_bits(bits(view.base));
                    let mut nn = 0;
                    while nn < 8 * NT as u32 {
                        let x = ld_shared_u16(s_x + (nn * X_STRIDE as u32 + col) * 2);
                        let x = f32::from_bits((x as u32) << 16);
                        red_shared_add_f32(s_corr + (row * 8 * NT as u32 + nn) * 4, delta * x);
                        nn += 1;
                    }
                });
            }
            kt += 1;
        }

        if !active {
            return;
        }
        sync_warp();
        // store: C fragment element i of n-tile nt is row g + 8·(i / 2),
        // column nt·8 + 2t + i % 2 (PTX ISA §9.7.14.5.8, m16n8k16 C/D).
        let mut nt = 0;
        while nt < NT {
            let mut i = 0;
            while i < 4 {
                let row = g + 8 * (i as u32 / 2);
                let nn = nt as u32 * 8 + 2 * t + i as u32 % 2;
                let corr = f32::from_bits(ld_shared_u32(s_corr + (row * 8 * NT as u32 + nn) * 4));
                let v = r_acc[nt][i] + corr;
                let (m, n) = (rt * TILE_ROWS as u32 + row, n0 + nn);
                if m < view.rows && n < args.n {
                    let at = n as usize * view.rows as usize + m as usize;
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

/// Copies activations `X[n0 .. n0 + 8·NT][k0 .. k0 + 128]` into shared
/// memory, zero past N and K, in 16-byte units spread over the block.
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
            let mut v = [0u32; 4];
            if n < args.n && kc < k {
                let g_x = args.x.add(n as usize * k as usize + kc as usize);
                if args.x_vector_loads != 0 {
                    v = ld_nc_v4(g_x as *const u8);
                } else {
                    let mut e = 0;
                    while e < 8 {
                        if kc + e < k {
                            v[e as usize / 2] |= ld_nc_u16(g_x.add(e as usize)) << (16 * (e % 2));
                        }
                        e += 1;
                    }
                }
            }
            st_shared_v4(s_x + (row * X_STRIDE as u32 + unit * 8) * 2, v);
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
            let s_base = shared_memory::<{ smem_bytes($nt) }>();
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

const _: () = assert!(8 * TILE_ROWS as u32 == 128);
