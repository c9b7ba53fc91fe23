//! ZipGEMM: `Y[N×M] = X[N×K] · W[M×K]ᵀ` with `W` compressed, FP32
//! accumulation. Compressed weights go from global memory to registers and
//! are decoded there into `mma.m16n8k16` A fragments; decoded weights never
//! reach global memory (they pass through a 4 KB per-warp shared-memory
//! stage, where exceptions are patched).
//!
//! Grid: x = (group of [`GEMM_WARPS`] row tiles) × (chunk of `8 * NT`
//! activation rows), the chunk varying fastest, y = split-K slice. The
//! blocks of one row group's chunks run side by side, so only the first
//! reads the weights from HBM; the others find them in L2. (Measured on an
//! H200: 2–4% faster at N ≥ 64 than with the chunk in grid z, where every
//! chunk re-read the weights from HBM. What remains at large N is the decode,
//! repeated for every chunk.) Each warp owns one 16-row tile of `W` and
//! walks its slice of 128-column tiles; per tile:
//!   fetch  – the next tile's six 16/8-byte loads per lane and its first 32
//!            exception entries are issued a tile ahead (when: see
//!            `fetch_early`). (Two tiles ahead in registers cost 122
//!            registers and ran 5–10% slower on an H200; a three-deep
//!            `cp.async` queue in shared memory ran 10–50% slower: it needed
//!            55–68 KB per block, so fewer blocks fit and grids spilled into
//!            a second wave.)
//!   stage  – `cp.async` copies the next activation chunk into the other
//!            shared buffer while this one is used;
//!   decode – 32 BF16 pairs per lane, one k-step's A fragment at a time,
//!            parked in the warp's A stage in fragment order;
//!   patch  – each lane fixes about one exception's exponent in the stage,
//!            so the tensor cores see the exact weights; each k-step's A
//!            fragment comes back with one 16-byte load. (Tried instead:
//!            `(w_true − w_fast)·x` corrections with shared-memory atomics,
//!            3–8× slower at N = 16–32; and routing exceptions to the lanes
//!            that hold them to patch registers in place, 1.6× slower: some
//!            lane of the warp has an exception in almost every k-step, so
//!            the divergent patch ran every time.)
//!   mma    – NT n-tiles per k-step, B fragments from the staged activations
//!            with `ldmatrix` (one instruction per two n-tiles);
//!   store  – one K slice: BF16 or f32 straight to `Y`. Several slices:
//!            each block writes f32 partial sums to its slice of a
//!            workspace, and the last block to arrive for an output tile
//!            adds the slices in order and writes `Y` — one launch, and the
//!            result does not depend on arrival order.

use crate::decode::{base_pair, lane_pair, patch_exponent};
use crate::format::{LANES, TILE_COLS, TILE_ROWS, lane_slot};
use crate::launch::{
    GEMM_A_STAGE_BYTES, GEMM_FLAG_BYTES, GEMM_TABLE_BYTES, GEMM_WARPS, GEMM_X_STAGES,
    GEMM_X_STRIDE, STORE_BF16, gemm_x_stage_bytes,
};
use crate::ptx::{
    atom_add_u32, block_idx, cp_async_16, cp_async_commit, cp_async_wait, dynamic_shared_memory,
    f32_to_bf16, fence_gpu, grid_dim_y, lane_id, ld_cg_f32, ld_nc_u16, ld_nc_u32, ld_shared_u8,
    ld_shared_u16, ld_shared_u32, ld_shared_v4, ldmatrix_x2, ldmatrix_x4, mma_bf16_16816, shfl_idx,
    st_shared_u16, st_shared_u32, st_shared_v4, sync_threads, sync_warp, thread_idx,
};
use crate::tile::{LaneTile, MatrixView, TileExceptions};

/// Kernel arguments besides the matrix.
#[derive(Clone, Copy)]
struct GemmArgs {
    x: *const u16,
    n: u32,
    /// Non-zero when every activation row starts 16-byte aligned (K % 8 == 0
    /// and an aligned buffer): activations then move with `cp.async`.
    x_vector_loads: u32,
    /// `Y` as BF16 or f32 (`store`), N × M row-major.
    y: *mut u16,
    y32: *mut f32,
    store: u32,
    tiles_per_split: u32,
    /// Split K only: f32 partial sums `[slice][n][m]` and one arrival
    /// counter per block index x, zero between launches.
    partial: *mut f32,
    counters: *mut u32,
}

/// Shared-memory addresses of one block (layout in `launch`).
#[derive(Clone, Copy)]
struct Smem {
    table: u32,
    flag: u32,
    x0: u32,
    x_bytes: u32,
    /// This warp's A stage: chunk `j` (the A fragment of k-step `j`) of
    /// lane `l` at byte `(j * 32 + l) * 16`.
    a: u32,
}

impl Smem {
    #[inline(always)]
    fn new(nt: usize, warp: u32) -> Self {
        let base = dynamic_shared_memory();
        let x0 = base + (GEMM_TABLE_BYTES + GEMM_FLAG_BYTES) as u32;
        let x_bytes = gemm_x_stage_bytes(nt) as u32;
        Self {
            table: base,
            flag: base + GEMM_TABLE_BYTES as u32,
            x0,
            x_bytes,
            a: x0 + GEMM_X_STAGES as u32 * x_bytes + warp * GEMM_A_STAGE_BYTES as u32,
        }
    }

    /// Activation buffer `stage` (an address computed, not an array indexed:
    /// an indexed array went to local memory).
    #[inline(always)]
    fn x(&self, stage: u32) -> u32 {
        self.x0 + stage * self.x_bytes
    }
}

/// A tile's data fetched one tile ahead.
struct Fetched {
    tile: LaneTile,
    exceptions: TileExceptions,
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
        let exceptions = TileExceptions {
            start,
            count: shfl_idx(window.exception_start, at + 1) - start,
            far_start: shfl_idx(window.far_start, at),
        };
        Fetched {
            tile: view.load_lane(tile, lane),
            entry: view.exception(&exceptions, lane),
            exceptions,
        }
    }
}

/// Byte offset in the A stage of the weight at (row, col) of the tile.
#[inline(always)]
fn a_stage_offset(row: usize, col: usize) -> u32 {
    let (lane, pair, half) = lane_slot(row, col);
    (((pair / 4) * LANES + lane) * 16 + (pair % 4) * 4 + half * 2) as u32
}

/// Writes the true exponent of each of the tile's exceptions into the
/// warp's A stage: one entry per lane, 32 at a time.
#[inline(always)]
unsafe fn patch_exceptions(view: &MatrixView, f: &Fetched, s: &Smem, lane: u32) {
    // SAFETY: stage offsets stay in s.a; the table lies in shared memory.
    unsafe {
        let table = |index: u32| ld_shared_u8(s.table + index);
        view.for_each_exception(&f.exceptions, f.entry, lane, table, |row, col, exponent| {
            let a = s.a + a_stage_offset(row as usize, col as usize);
            st_shared_u16(a, patch_exponent(ld_shared_u16(a), exponent as u8));
        });
    }
}

/// Starts copying activations `X[n0 .. n0 + 8·NT][k0 .. k0 + 128]` into the
/// shared buffer `s_x` (zero past N and K), in 16-byte units spread over the
/// block: asynchronously when rows are 16-byte aligned, else element-wise.
#[inline(always)]
unsafe fn stage_activations<const NT: usize>(
    s_x: u32,
    args: &GemmArgs,
    k: u32,
    n0: u32,
    k0: u32,
    tid: u32,
) {
    // Thread `tid` moves the same 16-byte column unit of rows tid / 16,
    // tid / 16 + 8, ...: one row offset per unit, the rest fixed per tile.
    // Indices are u32: the host keeps n × k below 2^32.
    const UNITS_PER_ROW: u32 = (TILE_COLS / 8) as u32;
    const ROWS_PER_PASS: u32 = GEMM_WARPS * 32 / UNITS_PER_ROW;
    let (row0, unit) = (tid / UNITS_PER_ROW, tid % UNITS_PER_ROW);
    let kc = k0 + unit * 8;
    let mut dst = s_x + (row0 * GEMM_X_STRIDE as u32 + unit * 8) * 2;
    let mut n = n0 + row0;
    let mut at = n.wrapping_mul(k).wrapping_add(kc);
    // SAFETY: loads are bounded by N and K; stores by the stage size.
    unsafe {
        let mut pass = 0;
        while pass < NT as u32 * 8 / ROWS_PER_PASS {
            let inside = n < args.n && kc < k;
            if args.x_vector_loads != 0 {
                let src = if inside {
                    args.x.add(at as usize)
                } else {
                    args.x
                };
                cp_async_16(dst, src as *const u8, if inside { 16 } else { 0 });
            } else {
                let mut e = 0;
                while e < 8 {
                    let v = if inside && kc + e < k {
                        ld_nc_u16(args.x.add((at + e) as usize))
                    } else {
                        0
                    };
                    st_shared_u16(dst + 2 * e, v as u16);
                    e += 1;
                }
            }
            n += ROWS_PER_PASS;
            at = at.wrapping_add(ROWS_PER_PASS * k);
            dst += ROWS_PER_PASS * GEMM_X_STRIDE as u32 * 2;
            pass += 1;
        }
    }
}

#[inline(always)]
unsafe fn zipgemm<const NT: usize>(view: MatrixView, args: GemmArgs) {
    let tid = thread_idx();
    let warp = tid / 32;
    let lane = lane_id();
    let (g, t) = (lane / 4, lane % 4);
    let s = Smem::new(NT, warp);
    const { assert!(NT == 1 || NT.is_multiple_of(2), "ldmatrix.x4 pairs n-tiles") };
    // When to issue the next tile's loads. Early (before the barrier and
    // the decode) gives them the longest flight but keeps two tiles in
    // registers; late (after this tile is decoded) frees those registers,
    // and more warps fit. Measured on an H200: late is 10–20% faster for one
    // n-tile (72 instead of 96 registers), early is 10–20% faster for two or
    // four, whose longer MMA phase needs the head start.
    let fetch_early = NT > 1;

    let (x, split, _) = block_idx();
    // n ≥ 1 (host-checked); NonZero keeps a division-by-zero panic path out.
    let chunks = core::num::NonZeroU32::new(args.n.div_ceil(8 * NT as u32))
        .unwrap_or(core::num::NonZeroU32::MIN);
    let (bx, chunk) = (x / chunks, x % chunks);
    let slices = grid_dim_y();
    let row_tiles = view.rows.div_ceil(TILE_ROWS as u32);
    let tile_count = row_tiles * view.col_tiles;
    let rt = bx * GEMM_WARPS + warp;
    let active = rt < row_tiles; // uniform per warp
    let n0 = chunk * 8 * NT as u32;
    let kt0 = split * args.tiles_per_split;
    let kt1 = (kt0 + args.tiles_per_split).min(view.col_tiles);
    let tile_of = |kt: u32| rt * view.col_tiles + kt;

    // SAFETY: shared addresses stay in this block's allocation (the host
    // sizes it with `gemm_smem_bytes`); global accesses are bounded by the
    // shapes the host checked.
    unsafe {
        if tid < (GEMM_TABLE_BYTES / 4) as u32 {
            st_shared_u32(
                s.table + 4 * tid,
                ld_nc_u32((view.exception_table as *const u32).add(tid as usize % 8)),
            );
        }
        stage_activations::<NT>(s.x(0), &args, view.cols, n0, kt0 * TILE_COLS as u32, tid);
        cp_async_commit();

        let mut r_acc = [[0f32; 4]; NT];
        let base2 = base_pair(view.base as u8);
        let mut window = StartsWindow::load(&view, tile_of(kt0).min(tile_count), tile_count, lane);
        let mut r_next = if active && kt0 < kt1 {
            Some(fetch(&view, &mut window, tile_of(kt0), tile_count, lane))
        } else {
            None
        };
        let mut kt = kt0;
        while kt < kt1 {
            let r_cur = r_next.take();
            if fetch_early && active && kt + 1 < kt1 {
                r_next = Some(fetch(&view, &mut window, tile_of(kt + 1), tile_count, lane));
            }
            // stage
            let stage = (kt - kt0) % GEMM_X_STAGES as u32;
            if kt + 1 < kt1 {
                stage_activations::<NT>(
                    s.x((stage + 1) % GEMM_X_STAGES as u32),
                    &args,
                    view.cols,
                    n0,
                    (kt + 1) * TILE_COLS as u32,
                    tid,
                );
            }
            cp_async_commit();
            cp_async_wait::<1>();
            // Activations of this tile are visible to all; the exception
            // scratch of the last tile has been read by its owners.
            sync_threads();
            if let Some(f) = r_cur {
                // decode, one k-step (4 pairs) at a time, into the A stage
                let (sm, codes) = (&f.tile.sm, &f.tile.codes);
                seq_macro::seq!(S in 0..8 {
                    let first = S * 4; // the k-step's four pairs: registers a0..a3
                    let a = [0, 1, 2, 3].map(|r| lane_pair(sm, codes, first + r, base2));
                    st_shared_v4(s.a + (S * 32 + lane) * 16, a);
                });
                if !fetch_early && kt + 1 < kt1 {
                    r_next = Some(fetch(&view, &mut window, tile_of(kt + 1), tile_count, lane));
                }
                sync_warp();
                // patch
                if f.exceptions.count > 0 {
                    patch_exceptions(&view, &f, &s, lane);
                    sync_warp();
                }
                // mma
                let s_x = s.x(stage);
                seq_macro::seq!(S in 0..8 {
                    let a = ld_shared_v4(s.a + (S * 32 + lane) * 16);
                    mma_kstep::<NT>(&mut r_acc, a, s_x, S, lane);
                });
            }
            // Everyone is done with this activation buffer before the next
            // iteration refills it.
            sync_threads();
            kt += 1;
        }
        cp_async_wait::<0>();

        if slices == 1 {
            if active {
                store_fragments::<NT>(&r_acc, rt, n0, g, t, view.rows, args.n, |at, v| {
                    if args.store == STORE_BF16 {
                        *args.y.add(at) = f32_to_bf16(v)
                    } else {
                        *args.y32.add(at) = v
                    }
                });
            }
            return;
        }

        // Split K: publish this slice's partial sums, count arrivals; the
        // last block adds all slices for its outputs.
        let slice_len = args.n as usize * view.rows as usize;
        if active {
            let mine = args.partial.add(split as usize * slice_len);
            store_fragments::<NT>(&r_acc, rt, n0, g, t, view.rows, args.n, |at, v| {
                *mine.add(at) = v
            });
        }
        fence_gpu();
        sync_threads();
        if tid == 0 {
            let counter = args.counters.add(x as usize);
            let last = atom_add_u32(counter, 1) == slices - 1;
            if last {
                *counter = 0; // ready for the next launch
            }
            st_shared_u32(s.flag, u32::from(last));
        }
        sync_threads();
        if ld_shared_u32(s.flag) == 0 {
            return;
        }
        fence_gpu();
        // This block's outputs: GEMM_WARPS row tiles × 8·NT columns.
        let rows_here = GEMM_WARPS * TILE_ROWS as u32;
        let m0 = bx * rows_here;
        let mut i = tid;
        while i < rows_here * 8 * NT as u32 {
            let (m, n) = (m0 + i % rows_here, n0 + i / rows_here);
            if m < view.rows && n < args.n {
                let at = n as usize * view.rows as usize + m as usize;
                // Loads in groups of 8 before adding, so their L2 latencies
                // overlap instead of queueing behind each add.
                let mut sum = 0f32;
                let mut sl = 0;
                while sl < slices {
                    let mut v = [0f32; 8];
                    seq_macro::seq!(J in 0..8 {
                        if sl + J < slices {
                            v[J] = ld_cg_f32(args.partial.add((sl + J) as usize * slice_len + at));
                        }
                    });
                    sum += v.iter().sum::<f32>();
                    sl += 8;
                }
                if args.store == STORE_BF16 {
                    *args.y.add(at) = f32_to_bf16(sum)
                } else {
                    *args.y32.add(at) = sum
                }
            }
            i += GEMM_WARPS * 32;
        }
    }
}

/// The MMAs of one k-step: A fragment `a` against the NT n-tiles of the
/// staged activations. `ldmatrix.x4` fetches the B fragments of two n-tiles
/// at once: lanes 8q..8q+7 address the rows of matrix q = (n-tile pair
/// member q / 2, k half q % 2); the result registers come out as
/// (b0, b1) of the first n-tile, then of the second (PTX ISA §9.7.14.5.15).
/// (Per-lane `ld.shared.u32` pairs cost 8 instructions per k-step at NT = 4
/// instead of 2.)
#[inline(always)]
unsafe fn mma_kstep<const NT: usize>(
    acc: &mut [[f32; 4]; NT],
    a: [u32; 4],
    s_x: u32,
    step: u32,
    lane: u32,
) {
    let q = lane / 8;
    let k = step * 16 + (q % 2) * 8;
    let mut nt = 0;
    // SAFETY: rows n < 8·NT and columns k + 8 ≤ 128 lie in the buffer.
    unsafe {
        if NT == 1 {
            let row = lane % 8;
            let b = ldmatrix_x2(s_x + (row * GEMM_X_STRIDE as u32 + k) * 2);
            acc[0] = mma_bf16_16816(a, b, acc[0]);
            return;
        }
        while nt < NT {
            let row = (nt as u32 + q / 2) * 8 + lane % 8;
            let b = ldmatrix_x4(s_x + (row * GEMM_X_STRIDE as u32 + k) * 2);
            acc[nt] = mma_bf16_16816(a, [b[0], b[1]], acc[nt]);
            acc[nt + 1] = mma_bf16_16816(a, [b[2], b[3]], acc[nt + 1]);
            nt += 2;
        }
    }
}

/// Calls `put(index in Y, value)` for each accumulator of the warp inside
/// the matrix: C fragment element `i` of n-tile `nt` is row `g + 8·(i / 2)`,
/// column `nt·8 + 2t + i % 2` (PTX ISA §9.7.14.5.8, m16n8k16 C/D).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn store_fragments<const NT: usize>(
    acc: &[[f32; 4]; NT],
    rt: u32,
    n0: u32,
    g: u32,
    t: u32,
    rows: u32,
    n: u32,
    mut put: impl FnMut(usize, f32),
) {
    let mut nt = 0;
    while nt < NT {
        let mut i = 0;
        while i < 4 {
            let m = rt * TILE_ROWS as u32 + g + 8 * (i as u32 / 2);
            let col = n0 + nt as u32 * 8 + 2 * t + i as u32 % 2;
            if m < rows && col < n {
                put(col as usize * rows as usize + m as usize, acc[nt][i]);
            }
            i += 1;
        }
        nt += 1;
    }
}

macro_rules! zipgemm_entry {
    ($name:ident, $nt:literal) => {
        /// ZipGEMM for chunks of
        #[doc = concat!(stringify!($nt), " × 8 activation rows.")]
        ///
        /// # Safety
        /// The matrix pointers describe a matrix validated by the host; `x`
        /// holds n × cols BF16; `y` (or `y32`) n × rows outputs; with
        /// several slices, `partial` holds slices × n × rows f32 and
        /// `counters` one zeroed u32 per block index x; block size
        /// `32 * GEMM_WARPS`; dynamic shared memory `gemm_smem_bytes(NT)`.
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
            partial: *mut f32,
            counters: *mut u32,
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
                partial,
                counters,
            };
            // SAFETY: forwarded from the caller.
            unsafe { zipgemm::<$nt>(view, args) }
        }
    };
}

zipgemm_entry!(zipserv_gemm_n8, 1);
zipgemm_entry!(zipserv_gemm_n16, 2);
zipgemm_entry!(zipserv_gemm_n32, 4);
