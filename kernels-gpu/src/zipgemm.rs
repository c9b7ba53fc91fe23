//! ZipGEMM: `Y[N×M] = X[N×K] · W[M×K]ᵀ` with `W` compressed, FP32
//! accumulation. Decoded weights never reach global memory: they are built
//! in registers as `mma.m16n8k16` A fragments (passing through a 4 KB
//! per-warp shared-memory stage where exceptions are patched).
//!
//! Grid: x = groups of [`GEMM_WARPS`] row tiles, y = split-K slice, z = chunk
//! of `8 * NT` activation rows. Each warp owns one 16-row tile of `W` and
//! walks its slice of 128-column tiles; per tile:
//!   fetch  – `cp.async` keeps [`GEMM_PIPELINE`] compressed tiles of the warp
//!            in flight into its shared-memory queue, so the memory system
//!            always has work without spending registers. (Two earlier
//!            versions held the next tile in registers: one tile ahead
//!            reached 70–75% of copy bandwidth on an H200; two ahead needed
//!            122 registers and ran slower.) The tile's first 32 exception
//!            entries are loaded a tile ahead;
//!   decode – 32 BF16 pairs per lane, one k-step's A fragment at a time,
//!            parked in the warp's A stage in fragment order;
//!   patch  – each lane fixes about one exception's exponent in the stage,
//!            so the tensor cores see the exact weights. (A first version
//!            added `(w_true − w_fast)·x` per activation row with
//!            shared-memory atomics: 3–8× slower at N = 16–32.)
//!   mma    – 8 k-steps × NT n-tiles, B fragments from the block's staged
//!            activations (double-buffered, the next chunk loaded into
//!            registers during this tile and stored at its end);
//!   store  – one K slice: BF16 or f32 straight to `Y`. Several slices:
//!            each block writes f32 partial sums to its slice of a
//!            workspace, and the last block to arrive for an output tile
//!            adds the slices in order and writes `Y` — one launch, and the
//!            result does not depend on arrival order.

use crate::decode::{base_pair, exception_entry, lane_pair, patch_exponent};
use crate::format::{EXC_FAR, LANES, SM_BYTES, TILE_BYTES, TILE_COLS, TILE_ROWS, lane_slot};
use crate::launch::{
    GEMM_A_STAGE_BYTES, GEMM_PIPELINE, GEMM_TABLE_BYTES, GEMM_WARP_BYTES, GEMM_WARPS, GEMM_X_STAGES,
    GEMM_X_STRIDE, STORE_BF16, gemm_x_stage_bytes,
};
use crate::ptx::{
    atom_add_u32, ballot, block_idx, cp_async_16, cp_async_commit, cp_async_wait,
    dynamic_shared_memory, f32_to_bf16, fence_gpu, lane_id, lanemask_lt, ld_cg_f32, ld_nc_u8,
    ld_nc_u16, ld_nc_u32, ld_nc_v4, ld_shared_u8, ld_shared_u16, ld_shared_u32, ld_shared_v4,
    mma_bf16_16816, shfl_idx, st_shared_u16, st_shared_u32, st_shared_v4, sync_threads, sync_warp,
    thread_idx,
};
use crate::tile::MatrixView;

/// Kernel arguments besides the matrix.
#[derive(Clone, Copy)]
struct GemmArgs {
    x: *const u16,
    n: u32,
    /// Non-zero when every activation row starts 16-byte aligned (K % 8 == 0
    /// and an aligned buffer): activations then move 16 bytes at a time.
    x_vector_loads: u32,
    /// `Y` as BF16 or f32 (`store`), N × M row-major.
    y: *mut u16,
    y32: *mut f32,
    store: u32,
    tiles_per_split: u32,
    /// Split K only: f32 partial sums `[slice][n][m]` and one arrival
    /// counter per (x, z) block position, zero between launches.
    partial: *mut f32,
    counters: *mut u32,
}

/// Shared-memory addresses of one block, from the layout in `launch`.
#[derive(Clone, Copy)]
struct Smem {
    table: u32,
    /// First activation buffer; buffer `i` starts `i * x_bytes` later.
    x0: u32,
    x_bytes: u32,
    /// This warp's A stage (chunk `j` of lane `l` at `(j * 32 + l) * 16`).
    a: u32,
    /// This warp's tile queue.
    queue: u32,
    /// Block-wide scratch word (the split-K arrival verdict).
    flag: u32,
}

impl Smem {
    #[inline(always)]
    fn new(nt: usize, warp: u32) -> Self {
        let base = dynamic_shared_memory();
        let x0 = base + GEMM_TABLE_BYTES as u32;
        let x_bytes = gemm_x_stage_bytes(nt) as u32;
        let warps = x0 + GEMM_X_STAGES as u32 * x_bytes;
        let mine = warps + warp * GEMM_WARP_BYTES as u32;
        Self {
            table: base,
            x0,
            x_bytes,
            a: mine,
            queue: mine + GEMM_A_STAGE_BYTES as u32,
            flag: base + 32,
        }
    }

    /// Activation buffer `stage` (an address computed, not an array indexed:
    /// an indexed array went to local memory).
    #[inline(always)]
    fn x(&self, stage: u32) -> u32 {
        self.x0 + stage * self.x_bytes
    }

    #[inline(always)]
    fn slot(&self, kt: u32) -> u32 {
        self.queue + (kt % GEMM_PIPELINE as u32) * TILE_BYTES as u32
    }
}

/// Starts the copy of tile `tile` into queue slot `dst`: 176 16-byte
/// `cp.async` per warp, 5.5 per lane, each instruction 512 contiguous bytes.
#[inline(always)]
unsafe fn queue_tile(view: &MatrixView, tile: u32, dst: u32, lane: u32) {
    const CHUNKS: u32 = (TILE_BYTES / 16) as u32;
    // SAFETY: tile is a valid tile index; dst a queue slot of TILE_BYTES.
    unsafe {
        let src = view.tiles.add(tile as usize * TILE_BYTES);
        let mut c = lane;
        while c < CHUNKS {
            cp_async_16(dst + 16 * c, src.add(16 * c as usize), 16);
            c += LANES as u32;
        }
    }
}

/// Exception metadata of a tile, fetched a tile ahead.
#[derive(Clone, Copy)]
struct Exceptions {
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

    #[inline(always)]
    unsafe fn exceptions(&mut self, view: &MatrixView, tile: u32, tile_count: u32, lane: u32) -> Exceptions {
        // SAFETY: entry loads stay inside the tile's range.
        unsafe {
            if tile + 1 - self.first_tile >= LANES as u32 {
                *self = Self::load(view, tile, tile_count, lane);
            }
            let at = tile - self.first_tile;
            let start = shfl_idx(self.exception_start, at);
            let count = shfl_idx(self.exception_start, at + 1) - start;
            let far_start = shfl_idx(self.far_start, at);
            let entry = if lane < count { ld_nc_u16(view.exceptions.add((start + lane) as usize)) } else { 0 };
            Exceptions { start, count, far_start, entry }
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
unsafe fn patch_exceptions(view: &MatrixView, e: Exceptions, s: &Smem, lane: u32) {
    // SAFETY: entries index the tile's range; stage offsets stay in s.a.
    unsafe {
        let mut far_next = e.far_start;
        let mut first = 0;
        let mut entry = e.entry;
        loop {
            let active = first + lane < e.count;
            let (row, col, index) = exception_entry(entry as u16);
            let is_far = active && index == EXC_FAR;
            let far_mask = ballot(is_far);
            if active {
                let exponent = if is_far {
                    let k = far_next + (far_mask & lanemask_lt()).count_ones();
                    ld_nc_u8(view.far_exponents.add(k as usize))
                } else {
                    ld_shared_u8(s.table + index as u32)
                };
                let a = s.a + a_stage_offset(row as u32, col as u32);
                st_shared_u16(a, patch_exponent(ld_shared_u16(a), exponent as u8));
            }
            far_next += far_mask.count_ones();
            first += LANES as u32;
            if first >= e.count {
                break;
            }
            let i = first + lane;
            entry = if i < e.count { ld_nc_u16(view.exceptions.add((e.start + i) as usize)) } else { 0 };
        }
    }
}

/// Loads this thread's share of the activation chunk `X[n0 .. n0 + 8·NT]
/// [k0 .. k0 + 128]` into registers (zero past N and K); NT 16-byte units.
#[inline(always)]
unsafe fn load_activations<const NT: usize>(args: &GemmArgs, k: u32, n0: u32, k0: u32, tid: u32) -> [[u32; 4]; NT] {
    const UNITS_PER_ROW: u32 = (TILE_COLS / 8) as u32;
    let mut r = [[0u32; 4]; NT];
    // SAFETY: loads are bounded by N and K.
    unsafe {
        let mut i = 0;
        while i < NT {
            let u = tid + i as u32 * GEMM_WARPS * 32;
            let (row, unit) = (u / UNITS_PER_ROW, u % UNITS_PER_ROW);
            let (n, kc) = (n0 + row, k0 + unit * 8);
            if n < args.n && kc < k {
                let g_x = args.x.add(n as usize * k as usize + kc as usize);
                if args.x_vector_loads != 0 {
                    r[i] = ld_nc_v4(g_x as *const u8);
                } else {
                    let mut e = 0;
                    while e < 8 {
                        if kc + e < k {
                            r[i][e as usize / 2] |= ld_nc_u16(g_x.add(e as usize)) << (16 * (e % 2));
                        }
                        e += 1;
                    }
                }
            }
            i += 1;
        }
    }
    r
}

/// Stores what [`load_activations`] fetched into an activation buffer.
#[inline(always)]
unsafe fn store_activations<const NT: usize>(s_x: u32, r: &[[u32; 4]; NT], tid: u32) {
    const UNITS_PER_ROW: u32 = (TILE_COLS / 8) as u32;
    let mut i = 0;
    while i < NT {
        let u = tid + i as u32 * GEMM_WARPS * 32;
        let (row, unit) = (u / UNITS_PER_ROW, u % UNITS_PER_ROW);
        // SAFETY: row < 8·NT and unit < 16 address inside the buffer.
        unsafe { st_shared_v4(s_x + (row * GEMM_X_STRIDE as u32 + unit * 8) * 2, r[i]) };
        i += 1;
    }
}

const _: () = assert!(TILE_COLS / 8 * 8 == GEMM_WARPS as usize * 32, "one 16-byte unit per thread per 8 rows");

#[inline(always)]
unsafe fn zipgemm<const NT: usize>(view: MatrixView, args: GemmArgs) {
    let tid = thread_idx();
    let warp = tid / 32;
    let lane = lane_id();
    let (g, t) = (lane / 4, lane % 4);
    let s = Smem::new(NT, warp);

    let (bx, split, chunk) = block_idx();
    let slices = crate::ptx::grid_dim_y();
    let row_tiles = view.rows.div_ceil(TILE_ROWS as u32);
    let tile_count = row_tiles * view.col_tiles;
    let rt = bx * GEMM_WARPS + warp;
    let active = rt < row_tiles; // uniform per warp
    let n0 = chunk * 8 * NT as u32;
    let kt0 = split * args.tiles_per_split;
    let kt1 = (kt0 + args.tiles_per_split).min(view.col_tiles);
    let tile_of = |kt: u32| rt * view.col_tiles + kt;

    // SAFETY: shared addresses stay in this block's allocation (host sizes
    // it with `gemm_smem_bytes`); global accesses are bounded by the shapes
    // the host checked.
    unsafe {
        if tid < 8 {
            st_shared_u32(s.table + 4 * tid, ld_nc_u32((view.exception_table as *const u32).add(tid as usize)));
        }
        // Prologue: the first PIPELINE - 1 tiles in flight (one group each,
        // empty past the slice), the first activation chunk in place.
        let mut q = 0;
        while q < GEMM_PIPELINE as u32 - 1 {
            if active && kt0 + q < kt1 {
                queue_tile(&view, tile_of(kt0 + q), s.slot(kt0 + q), lane);
            }
            cp_async_commit();
            q += 1;
        }
        let r_x = load_activations::<NT>(&args, view.cols, n0, kt0 * TILE_COLS as u32, tid);
        store_activations::<NT>(s.x(0), &r_x, tid);
        let mut window = StartsWindow::load(&view, tile_of(kt0).min(tile_count), tile_count, lane);
        let mut next_exc = if active && kt0 < kt1 { Some(window.exceptions(&view, tile_of(kt0), tile_count, lane)) } else { None };
        sync_threads();

        let mut r_acc = [[0f32; 4]; NT];
        let base2 = base_pair(view.base as u8);
        let mut kt = kt0;
        while kt < kt1 {
            let stage = (kt - kt0) % GEMM_X_STAGES as u32;
            // fetch: keep the queue full, and the next activations coming.
            let ahead = kt + GEMM_PIPELINE as u32 - 1;
            if active && ahead < kt1 {
                queue_tile(&view, tile_of(ahead), s.slot(ahead), lane);
            }
            cp_async_commit();
            let r_x_next =
                if kt + 1 < kt1 { Some(load_activations::<NT>(&args, view.cols, n0, (kt + 1) * TILE_COLS as u32, tid)) } else { None };
            let exc = next_exc.take();
            if active && kt + 1 < kt1 {
                next_exc = Some(window.exceptions(&view, tile_of(kt + 1), tile_count, lane));
            }
            cp_async_wait::<{ GEMM_PIPELINE as u32 - 1 }>();
            sync_warp();

            if let Some(exc) = exc {
                // decode, one k-step (4 pairs) at a time, into the A stage
                let slot = s.slot(kt);
                let mut sm = [0u32; 16];
                seq_macro::seq!(J in 0..4 {
                    let v = ld_shared_v4(slot + (J * LANES as u32 + lane) * 16);
                    sm[4 * J..4 * J + 4].copy_from_slice(&v);
                });
                let c0 = ld_shared_v4(slot + SM_BYTES as u32 + lane * 16);
                let c1 = [
                    ld_shared_u32(slot + SM_BYTES as u32 + (LANES * 16) as u32 + lane * 8),
                    ld_shared_u32(slot + SM_BYTES as u32 + (LANES * 16) as u32 + lane * 8 + 4),
                ];
                let codes = [c0[0], c0[1], c0[2], c0[3], c1[0], c1[1]];
                seq_macro::seq!(J in 0..8 {
                    let first = J * 4; // the k-step's four pairs: registers a0..a3
                    let a = [0, 1, 2, 3].map(|r| lane_pair(&sm, &codes, first + r, base2));
                    st_shared_v4(s.a + (J * 32 + lane) * 16, a);
                });
                sync_warp();
                // patch
                if exc.count > 0 {
                    patch_exceptions(&view, exc, &s, lane);
                    sync_warp();
                }
                // mma
                let s_x = s.x(stage);
                seq_macro::seq!(S in 0..8 {
                    let a = ld_shared_v4(s.a + (S * 32 + lane) * 16);
                    let mut nt = 0;
                    while nt < NT {
                        let row = s_x + ((nt as u32 * 8 + g) * GEMM_X_STRIDE as u32 + S * 16 + 2 * t) * 2;
                        let b = [ld_shared_u32(row), ld_shared_u32(row + 16)];
                        r_acc[nt] = mma_bf16_16816(a, b, r_acc[nt]);
                        nt += 1;
                    }
                });
            }
            if let Some(r_x_next) = r_x_next {
                store_activations::<NT>(s.x((stage + 1) % GEMM_X_STAGES as u32), &r_x_next, tid);
            }
            // The next activations are visible, and nobody still reads the
            // buffer the next iteration overwrites.
            sync_threads();
            kt += 1;
        }
        cp_async_wait::<0>();

        if slices == 1 {
            if active {
                store_fragments::<NT>(&r_acc, |m, n, v| {
                    let at = n as usize * view.rows as usize + m as usize;
                    if args.store == STORE_BF16 { *args.y.add(at) = f32_to_bf16(v) } else { *args.y32.add(at) = v }
                }, rt, n0, g, t, view.rows, args.n);
            }
            return;
        }

        // Split K: publish this slice's partial sums, count arrivals; the
        // last block adds all slices for its outputs.
        let slice_len = args.n as usize * view.rows as usize;
        if active {
            store_fragments::<NT>(&r_acc, |m, n, v| {
                *args.partial.add(split as usize * slice_len + n as usize * view.rows as usize + m as usize) = v;
            }, rt, n0, g, t, view.rows, args.n);
        }
        fence_gpu();
        sync_threads();
        if tid == 0 {
            let counter = args.counters.add((chunk * crate::ptx::grid_dim_x() + bx) as usize);
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
        // This block's outputs: rows of GEMM_WARPS tiles × 8·NT columns.
        let (m0, rows_here) = (bx * GEMM_WARPS * TILE_ROWS as u32, GEMM_WARPS * TILE_ROWS as u32);
        let mut i = tid;
        while i < rows_here * 8 * NT as u32 {
            let (m, n) = (m0 + i % rows_here, n0 + i / rows_here);
            if m < view.rows && n < args.n {
                let at = n as usize * view.rows as usize + m as usize;
                let mut sum = 0f32;
                let mut sl = 0;
                while sl < slices {
                    sum += ld_cg_f32(args.partial.add(sl as usize * slice_len + at));
                    sl += 1;
                }
                if args.store == STORE_BF16 { *args.y.add(at) = f32_to_bf16(sum) } else { *args.y32.add(at) = sum }
            }
            i += GEMM_WARPS * 32;
        }
    }
}

/// Calls `put(m, n, value)` for each accumulator of the warp inside the
/// matrix: C fragment element `i` of n-tile `nt` is row `g + 8·(i / 2)`,
/// column `nt·8 + 2t + i % 2` (PTX ISA §9.7.14.5.8, m16n8k16 C/D).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn store_fragments<const NT: usize>(
    acc: &[[f32; 4]; NT],
    mut put: impl FnMut(u32, u32, f32),
    rt: u32,
    n0: u32,
    g: u32,
    t: u32,
    rows: u32,
    n: u32,
) {
    let mut nt = 0;
    while nt < NT {
        let mut i = 0;
        while i < 4 {
            let m = rt * TILE_ROWS as u32 + g + 8 * (i as u32 / 2);
            let col = n0 + nt as u32 * 8 + 2 * t + i as u32 % 2;
            if m < rows && col < n {
                put(m, col, acc[nt][i]);
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
        /// `counters` one zeroed u32 per (x, z) block position; block size
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
            let args = GemmArgs { x, n, x_vector_loads, y, y32, store, tiles_per_split, partial, counters };
            // SAFETY: forwarded from the caller.
            unsafe { zipgemm::<$nt>(view, args) }
        }
    };
}

zipgemm_entry!(zipserv_gemm_n8, 1);
zipgemm_entry!(zipserv_gemm_n16, 2);
zipgemm_entry!(zipserv_gemm_n32, 4);
