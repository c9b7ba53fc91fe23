//! ZipGEMM: `Y[N×M] = X[N×K] · W[M×K]ᵀ` with `W` compressed, FP32
//! accumulation. Compressed weights go from global memory to registers and
//! are decoded there into `mma.m16n8k16` A fragments; decoded weights never
//! reach global memory (they pass through a 4 KB per-warp shared-memory
//! stage, where exceptions are patched).
//!
//! Work: a *unit* is a group of [`GEMM_WARPS`] row tiles of W; the (unit,
//! 128-column tile) pairs are cut into equal contiguous shares
//! ([`WorkSplit`], "stream-K"), so every block gets the same work whatever
//! the shape. Each share is run once per chunk of `8 * NT` activation rows,
//! by neighbouring blocks (block `b`: share `b / chunks`, chunk
//! `b % chunks`), so they read the same weights at the same time and only
//! the first gets them from HBM; the others find them in L2. (Measured on
//! an H200: 2–4% faster at N ≥ 64 than with every chunk re-reading the
//! weights from HBM. What remains at large N is the decode, repeated for
//! every chunk.) Each warp owns one 16-row tile of `W` in each unit of its
//! block's share and
//! walks the share's 128-column tiles; per tile:
//!   fetch  – the next tile's six 16/8-byte loads per lane and its first 32
//!            exception entries are issued a tile ahead (when: see
//!            `fetch_early`). (Two tiles ahead in registers cost 122
//!            registers and ran 5–10% slower on an H200; a three-deep
//!            `cp.async` queue in shared memory ran 10–50% slower: it needed
//!            55–68 KB per block, so fewer blocks fit and grids spilled into
//!            a second wave.)
//!   stage  – `cp.async` copies the activation chunk of the tile after next
//!            into the third of three shared buffers while one is used, so
//!            a block passes one barrier per tile;
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
//!   store  – a whole unit in one share: BF16 or f32 straight to `Y`.
//!            Part of a unit: each block writes f32 partial sums to its
//!            slot of a workspace, and the last block to finish the unit
//!            (for its chunk) adds the shares in order and writes `Y` — one
//!            launch, and the result does not depend on arrival order.

use crate::decode::{base_pair, lane_pair};
use crate::format::{LANES, TILE_COLS, TILE_ROWS};
use crate::launch::{
    GEMM_A_STAGE_BYTES, GEMM_FLAG_BYTES, GEMM_TABLE_BYTES, GEMM_VARIANTS, GEMM_WARPS,
    GEMM_WIDEST_NT, GEMM_X_STAGES, GEMM_X_STRIDE, MmaGemmVariant, STORE_BF16, WorkSplit,
    gemm_x_stage_bytes, nonzero,
};
use crate::ptx::{
    atom_add_acq_rel_u32, block_idx, cp_async_16, cp_async_commit, cp_async_wait,
    dynamic_shared_memory, f32_to_bf16, grid_dim_x, lane_id, ld_cg_v4_f32, ld_nc_u16, ld_nc_u32,
    ld_shared_u32, ld_shared_v4, ldmatrix_x2, ldmatrix_x4, mma_bf16_16816, shfl_idx, st_shared_u16,
    st_shared_u32, st_shared_v4, start_after_prior_grids, sync_threads, sync_warp, thread_idx,
    warp_index,
};
use crate::tile::{LaneTile, MatrixView, TileExceptions, patch_a_stage, stage_exception_table};

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
    /// When shares split units: two f32 partial-sum slots per block (see
    /// `reduce_partial`) and one arrival counter per unit and chunk, zero
    /// between launches.
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
#[derive(Clone, Copy)]
pub(crate) struct Fetched {
    pub(crate) tile: LaneTile,
    pub(crate) exceptions: TileExceptions,
    /// This lane's entries among the first 32 and the next 32 (0 if
    /// none), loaded with the tile: the second was a dependent load inside
    /// the patch, and a 2048-weight tile averages ~33 exceptions at 1.6%,
    /// so many tiles have more than 32.
    pub(crate) entry: u32,
    pub(crate) second: u32,
}

impl Fetched {
    /// Placeholder for warps without a row tile, which never decode.
    pub(crate) const NONE: Self = Self {
        tile: LaneTile {
            sm: [0; 16],
            codes: [0; 6],
        },
        exceptions: TileExceptions {
            start: 0,
            count: 0,
            far_start: 0,
        },
        entry: 0,
        second: 0,
    };
}

/// Exception offsets of 32 consecutive tiles, one per lane, so a tile's
/// range comes from a shuffle instead of a dependent global load.
pub(crate) struct StartsWindow {
    first_tile: u32,
    exception_start: u32,
    far_start: u32,
}

impl StartsWindow {
    #[inline(always)]
    pub(crate) unsafe fn load(
        view: &MatrixView,
        first_tile: u32,
        tile_count: u32,
        lane: u32,
    ) -> Self {
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
pub(crate) unsafe fn fetch(
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
            second: view.exception(&exceptions, 32 + lane),
            exceptions,
        }
    }
}

/// Writes the true exponent of each of the tile's exceptions into the
/// warp's A stage: one entry per lane, 32 at a time.
#[inline(always)]
unsafe fn patch_exceptions(view: &MatrixView, f: &Fetched, s: &Smem, lane: u32) {
    // SAFETY: s.a is this warp's A stage; the table lies in shared memory.
    unsafe { patch_a_stage(view, &f.exceptions, f.entry, f.second, lane, s.table, s.a) }
}

/// One thread's share of staging activation chunks `X[n0 .. n0 + 8·NT]
/// [k0 .. k0 + 128]` into a shared buffer (zero past N and K), in 16-byte
/// units spread over the block. Thread `tid` always moves the same column
/// unit of rows `tid / 16 + 8p`. Rebuilt from the thread index for every
/// tile: kept in registers across the K loop, these four words pushed the
/// one-n-tile kernel from 64 to 72 registers (7 instead of 8 blocks per
/// multiprocessor).
struct Stager {
    /// Element index in X of this thread's first unit at column tile 0.
    at: u32,
    /// Column of this thread's unit inside a tile.
    kc: u32,
    /// Rows of the chunk left below this thread's first row (≤ 0: none).
    rows_left: i32,
    /// Byte offset of this thread's first unit inside a buffer.
    dst: u32,
}

const UNITS_PER_ROW: u32 = (TILE_COLS / 8) as u32;
const ROWS_PER_PASS: u32 = GEMM_WARPS * 32 / UNITS_PER_ROW;

impl Stager {
    #[inline(always)]
    fn new(args: &GemmArgs, k: u32, n0: u32, tid: u32) -> Self {
        let (row0, unit) = (tid / UNITS_PER_ROW, tid % UNITS_PER_ROW);
        // Indices are u32: the host keeps n × k below 2^32.
        Self {
            at: (n0 + row0).wrapping_mul(k).wrapping_add(unit * 8),
            kc: unit * 8,
            rows_left: args.n as i32 - (n0 + row0) as i32,
            dst: (row0 * GEMM_X_STRIDE as u32 + unit * 8) * 2,
        }
    }

    /// Starts copying column tile `kt` into the buffer at `s_x`: with
    /// `cp.async` when every row is 16-byte aligned, else element by element.
    #[inline(always)]
    unsafe fn stage<const NT: usize>(&self, args: &GemmArgs, k: u32, s_x: u32, kt: u32) {
        let col = kt * TILE_COLS as u32;
        let inside_k = col + self.kc < k;
        let at = self.at.wrapping_add(col);
        // SAFETY: loads are bounded by N and K; stores by the buffer size.
        unsafe {
            seq_macro::seq!(P in 0..4 {
                if P < NT as u32 * 8 / ROWS_PER_PASS {
                    let inside = inside_k && ((P * ROWS_PER_PASS) as i32) < self.rows_left;
                    let at = at.wrapping_add(P * ROWS_PER_PASS * k);
                    let dst = s_x + self.dst + P * ROWS_PER_PASS * GEMM_X_STRIDE as u32 * 2;
                    if args.x_vector_loads != 0 {
                        let src = if inside { args.x.add(at as usize) } else { args.x };
                        cp_async_16(dst, src as *const u8, if inside { 16 } else { 0 });
                    } else {
                        let mut e = 0;
                        while e < 8 {
                            let v = if inside && col + self.kc + e < k {
                                ld_nc_u16(args.x.add((at + e) as usize))
                            } else {
                                0
                            };
                            st_shared_u16(dst + 2 * e, v as u16);
                            e += 1;
                        }
                    }
                }
            });
        }
    }
}
const _: () = assert!(
    4 * ROWS_PER_PASS as usize >= 8 * 4,
    "stage unrolls at most 4 passes"
);

/// What a warp's K loop needs besides its accumulators.
struct Walk<'a> {
    view: &'a MatrixView,
    args: &'a GemmArgs,
    s: Smem,
    n0: u32,
    lane: u32,
    active: bool,
    rt: u32,
    tile_count: u32,
    kt1: u32,
    base2: u32,
    /// This lane's `ldmatrix` row address relative to an activation buffer.
    b_lane: u32,
}

impl Walk<'_> {
    #[inline(always)]
    fn tile_of(&self, kt: u32) -> u32 {
        self.rt * self.view.col_tiles + kt
    }
}

/// The warp's walk over its K slice `kt0 .. kt1`. With the early fetch, two
/// tiles per loop turn, so the tile in flight and the tile being decoded
/// swap roles without register copies (one turn per tile cost 30 moves per
/// tile at NT = 4).
#[inline(always)]
unsafe fn k_loop<const NT: usize, const EARLY: bool>(
    w: &Walk,
    kt0: u32,
    first_segment: bool,
    acc: &mut [[f32; 4]; NT],
) {
    let k = w.view.cols;
    // SAFETY: as in `zipgemm`.
    unsafe {
        let stage = |buffer: u32, kt: u32| {
            if kt < w.kt1 {
                let stager = Stager::new(w.args, k, w.n0, thread_idx());
                stager.stage::<NT>(w.args, k, w.s.x(buffer), kt);
            }
            cp_async_commit();
        };
        let mut window = StartsWindow::load(
            w.view,
            w.tile_of(kt0).min(w.tile_count),
            w.tile_count,
            w.lane,
        );
        let mut a = Fetched::NONE;
        let mut b = Fetched::NONE;
        if w.active && kt0 < w.kt1 {
            a = fetch(w.view, &mut window, w.tile_of(kt0), w.tile_count, w.lane);
        }
        // The weights above are never written by another kernel, so they
        // may be on their way while the kernel before (with launch overlap)
        // still runs; the activations below may be its output. (Tried on
        // an H200, commit 2418ede, launched without overlap: also asking
        // L2 for each warp's next two tiles here (`cp.async.bulk.prefetch`)
        // made N = 1–16 2–7% slower, and with launch overlap the engine's
        // batch-1 step 10% slower (4.09 -> 4.50 ms; the bulk prefetch of
        // three tiles per warp, commit 218b0bc); issuing the tile's loads
        // before the exception range's shuffles in `fetch` made N = 1–16
        // 1–11% slower.)
        if first_segment {
            start_after_prior_grids();
        }
        stage(0, kt0);
        stage(1, kt0 + 1);
        let (mut kt, mut buffer) = (kt0, 0);
        if !EARLY {
            // One tile in registers at a time: the next is fetched after
            // this one is decoded, into the same variables.
            while kt < w.kt1 {
                // A copy, not a take: resetting `a` cost 8 registers
                // of zeros kept live through the decode.
                let cur = a;
                tile_step::<NT, EARLY>(w, acc, kt, buffer, &cur, &mut a, &mut window, &stage);
                (kt, buffer) = (kt + 1, next_buffer(buffer));
            }
        } else {
            while kt < w.kt1 {
                tile_step::<NT, EARLY>(w, acc, kt, buffer, &a, &mut b, &mut window, &stage);
                (kt, buffer) = (kt + 1, next_buffer(buffer));
                if kt == w.kt1 {
                    break;
                }
                tile_step::<NT, EARLY>(w, acc, kt, buffer, &b, &mut a, &mut window, &stage);
                (kt, buffer) = (kt + 1, next_buffer(buffer));
            }
        }
        cp_async_wait::<0>();
    }
}

#[inline(always)]
fn next_buffer(buffer: u32) -> u32 {
    if buffer + 1 == GEMM_X_STAGES as u32 {
        0
    } else {
        buffer + 1
    }
}

/// One 128-column tile of the warp: wait for its activations, start staging
/// the tile after next, fetch the next tile's weights, decode, patch, MMA.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_step<const NT: usize, const EARLY: bool>(
    w: &Walk,
    acc: &mut [[f32; 4]; NT],
    kt: u32,
    buffer: u32,
    cur: &Fetched,
    next: &mut Fetched,
    window: &mut StartsWindow,
    stage: &impl Fn(u32, u32),
) {
    let fetch_early = EARLY;
    let has_next = w.active && kt + 1 < w.kt1;
    let lane = w.lane;
    // SAFETY: as in `zipgemm`.
    unsafe {
        // Issued before the barrier: a warp that waits there still has its
        // next tile's weights on the way (measured: 3–9% slower when issued
        // after the barrier).
        if fetch_early && has_next {
            *next = fetch(w.view, window, w.tile_of(kt + 1), w.tile_count, lane);
        }
        // This thread's copies of tile kt are done (only kt + 1's may be
        // pending); after the barrier everyone's are, and every warp has
        // finished tile kt − 1, whose buffer the stage below refills.
        cp_async_wait::<1>();
        sync_threads();
        let after_next = if buffer == 0 {
            GEMM_X_STAGES as u32 - 1
        } else {
            buffer - 1
        };
        stage(after_next, kt + 2);
        if !w.active {
            return;
        }
        // decode, one k-step (4 pairs) at a time, into the A stage
        let (sm, codes) = (&cur.tile.sm, &cur.tile.codes);
        seq_macro::seq!(S in 0..8 {
            let first = S * 4; // the k-step's four pairs: registers a0..a3
            let a = [0, 1, 2, 3].map(|r| lane_pair(sm, codes, first + r, w.base2));
            st_shared_v4(w.s.a + (S * 32 + lane) * 16, a);
        });
        if !fetch_early && has_next {
            *next = fetch(w.view, window, w.tile_of(kt + 1), w.tile_count, lane);
        }
        sync_warp();
        // patch
        if cur.exceptions.count > 0 {
            patch_exceptions(w.view, cur, &w.s, lane);
            sync_warp();
        }
        // mma
        let b = w.s.x(buffer) + w.b_lane;
        seq_macro::seq!(S in 0..8 {
            let a = ld_shared_v4(w.s.a + (S * 32 + lane) * 16);
            mma_kstep::<NT>(acc, a, b, S);
        });
    }
}

#[inline(always)]
unsafe fn zipgemm<const NT: usize, const EARLY: bool>(view: MatrixView, args: GemmArgs) {
    let tid = thread_idx();
    let warp = warp_index(tid);
    let lane = lane_id();
    let s = Smem::new(NT, warp);
    const { assert!(NT == 1 || NT.is_multiple_of(2), "ldmatrix.x4 pairs n-tiles") };

    // n ≥ 1 and col_tiles ≥ 1 (host-checked); `nonzero` keeps
    // division-by-zero panic paths out.
    // Only the widest variant takes more than one chunk (the host picks the
    // narrowest variant that covers n); knowing that saves the narrow ones
    // a register.
    let chunks = if NT == GEMM_WIDEST_NT {
        nonzero(args.n.div_ceil(8 * NT as u32))
    } else {
        core::num::NonZeroU32::MIN
    };
    // Block b runs share b / chunks for activation chunk b % chunks.
    let (share, chunk) = (block_idx().0 / chunks, block_idx().0 % chunks);
    let row_tiles = view.rows.div_ceil(TILE_ROWS as u32);
    let work = WorkSplit {
        units: row_tiles.div_ceil(GEMM_WARPS),
        col_tiles: view.col_tiles,
        blocks: grid_dim_x() / chunks,
    };
    let col_tiles = nonzero(view.col_tiles);
    let n0 = chunk * 8 * NT as u32;
    let (start, end) = (work.share_start(share), work.share_start(share + 1));

    // SAFETY: shared addresses stay in this block's allocation (the host
    // sizes it with `gemm_smem_bytes`); global accesses are bounded by the
    // shapes the host checked.
    unsafe {
        stage_exception_table(view.exception_table, s.table, tid);
        // The share, one unit's column range at a time (block-uniform).
        let mut pos = start;
        while pos < end {
            let u = pos / col_tiles;
            let kt0 = pos - u * view.col_tiles;
            let kt1 = (kt0 + (end - pos)).min(view.col_tiles);
            let rt = u * GEMM_WARPS + warp;
            let walk = Walk {
                view: &view,
                args: &args,
                s,
                n0,
                lane,
                active: rt < row_tiles, // uniform per warp
                rt,
                tile_count: row_tiles * view.col_tiles,
                kt1,
                base2: base_pair(view.base as u8),
                b_lane: b_lane_offset::<NT>(lane),
            };
            let mut acc = [[0f32; 4]; NT];
            k_loop::<NT, EARLY>(&walk, kt0, pos == start, &mut acc);
            let out = Output {
                view: &view,
                args: &args,
                work: &work,
                s,
                tid,
                share,
                u,
                chunk,
                chunks: chunks.get(),
                first_segment: pos == start,
                n0,
            };
            if kt0 == 0 && kt1 == view.col_tiles {
                if walk.active {
                    out.store_direct::<NT>(&acc, rt, lane);
                }
            } else {
                out.reduce_partial::<NT>(&acc, kt1 - kt0, warp, lane);
            }
            pos += kt1 - kt0;
            // Everyone is done with the activation buffers before the next
            // unit restages them.
            sync_threads();
        }
    }
}

/// Where one unit's results for one activation chunk go (see [`WorkSplit`]).
struct Output<'a> {
    view: &'a MatrixView,
    args: &'a GemmArgs,
    work: &'a WorkSplit,
    s: Smem,
    tid: u32,
    /// This block's share, the unit (row group), the activation chunk and
    /// its first row, and whether this is the share's first segment.
    share: u32,
    u: u32,
    chunk: u32,
    chunks: u32,
    first_segment: bool,
    n0: u32,
}

/// Rows of one unit.
const UNIT_ROWS: u32 = GEMM_WARPS * TILE_ROWS as u32;

impl Output<'_> {
    /// `Y[n][m] = v` as BF16 or f32.
    #[inline(always)]
    unsafe fn put(&self, at: usize, v: f32) {
        // SAFETY: `at` < n × rows (callers check both bounds).
        unsafe {
            if self.args.store == STORE_BF16 {
                *self.args.y.add(at) = f32_to_bf16(v)
            } else {
                *self.args.y32.add(at) = v
            }
        }
    }

    /// A whole unit in one share: this warp's results straight to `Y`.
    #[inline(always)]
    unsafe fn store_direct<const NT: usize>(&self, acc: &[[f32; 4]; NT], rt: u32, lane: u32) {
        let (rows, n) = (self.view.rows, self.args.n);
        for_each_fragment::<NT>(acc, lane, |row, col, v| {
            let (m, col) = (rt * TILE_ROWS as u32 + row, self.n0 + col);
            if m < rows && col < n {
                // SAFETY: inside Y (checked just above).
                unsafe { self.put(col as usize * rows as usize + m as usize, v) }
            }
        });
    }

    /// Part of a unit: publish this share's sums in the block's slot, count
    /// arrivals; the last block to finish the unit adds every share's sums,
    /// in block order (so the result does not depend on arrival order), and
    /// writes `Y`.
    #[inline(always)]
    unsafe fn reduce_partial<const NT: usize>(
        &self,
        acc: &[[f32; 4]; NT],
        tiles: u32,
        warp: u32,
        lane: u32,
    ) {
        let (work, u) = (self.work, self.u);
        let slot_len = (UNIT_ROWS * 8 * NT as u32) as usize;
        // Share `sh`'s slot (0: the unit its share starts in, 1: the unit it
        // ends in) for this chunk.
        let slot = |sh: u32, second: bool| {
            (2 * (sh * self.chunks + self.chunk) + u32::from(second)) as usize
        };
        // SAFETY: slots lie in the partial buffer (2 × blocks slots of
        // slot_len, host-sized); counters hold one entry per unit and chunk.
        unsafe {
            let mine = self
                .args
                .partial
                .add(slot(self.share, !self.first_segment) * slot_len);
            for_each_fragment::<NT>(acc, lane, |row, col, v| {
                *mine.add((col * UNIT_ROWS + warp * TILE_ROWS as u32 + row) as usize) = v
            });
            sync_threads();
            if self.tid == 0 {
                // Arrivals count column tiles: whoever completes the unit's
                // `col_tiles` is last. Release publishes this block's sums;
                // acquire (for the last) sees every other block's.
                let counter = self
                    .args
                    .counters
                    .add((u * self.chunks + self.chunk) as usize);
                let done = atom_add_acq_rel_u32(counter, tiles) + tiles == work.col_tiles;
                if done {
                    *counter = 0; // ready for the next launch
                }
                st_shared_u32(self.s.flag, u32::from(done));
            }
            sync_threads();
            if ld_shared_u32(self.s.flag) == 0 {
                return;
            }
            let (first, last) = work.unit_blocks(u, self.share);
            // Only the first share may hold this unit in its second slot.
            let first_second = work.starts_before(first, u);
            let slot_of = |sh: u32| slot(sh, sh == first && first_second);
            // Each thread adds NT runs of four consecutive outputs, with one
            // 16-byte load per run and slot and 8–16 loads in flight. (One
            // f32 at a time, the last block's 16 rounds of L2 latency took 7
            // of the 23 µs of 4096×4096 at N = 32 on an H200; 16-byte loads
            // for one run at a time, still 3.)
            const { assert!(UNIT_ROWS as usize * 8 * NT == 4 * NT * GEMM_WARPS as usize * 32) };
            let group: u32 = if NT == 1 { 8 } else { 16 / NT as u32 };
            let run = |r: usize| 4 * (self.tid as usize + r * GEMM_WARPS as usize * 32);
            let mut sum = [[0f32; 4]; NT];
            let mut blk = first;
            while blk <= last {
                let mut v = [[[0f32; 4]; NT]; 8];
                seq_macro::seq!(J in 0..8 {
                    if J < group && blk + J < last + 1 {
                        let from = self.args.partial.add(slot_of(blk + J) * slot_len);
                        seq_macro::seq!(R in 0..4 {
                            if R < NT {
                                v[J][R] = ld_cg_v4_f32(from.add(run(R)));
                            }
                        });
                    }
                });
                seq_macro::seq!(R in 0..4 {
                    if R < NT {
                        seq_macro::seq!(E in 0..4 {
                            sum[R][E] += v.iter().map(|x| x[R][E]).sum::<f32>();
                        });
                    }
                });
                blk += group;
            }
            // Slots hold 64-row columns: a run's four rows share a column.
            let (rows, n) = (self.view.rows, self.args.n);
            seq_macro::seq!(R in 0..4 {
                if R < NT {
                    let i = run(R) as u32;
                    let (m, col) = (u * UNIT_ROWS + i % UNIT_ROWS, self.n0 + i / UNIT_ROWS);
                    if col < n {
                        seq_macro::seq!(E in 0..4 {
                            if m + E < rows {
                                self.put(col as usize * rows as usize + (m + E) as usize, sum[R][E]);
                            }
                        });
                    }
                }
            });
        }
    }
}

/// Byte offset, inside an activation buffer, of the row this lane gives
/// `ldmatrix` (see `mma_kstep`) for k-step 0 and n-tile 0.
#[inline(always)]
fn b_lane_offset<const NT: usize>(lane: u32) -> u32 {
    let q = lane / 8;
    let row = if NT == 1 {
        lane % 8
    } else {
        (q / 2) * 8 + lane % 8
    };
    (row * GEMM_X_STRIDE as u32 + (q % 2) * 8) * 2
}

/// The MMAs of one k-step: A fragment `a` against the NT n-tiles of the
/// staged activations, whose rows this lane addresses at `b` (buffer +
/// [`b_lane_offset`]). `ldmatrix.x4` fetches the B fragments of two n-tiles
/// at once: lanes 8q..8q+7 address the rows of matrix q = (n-tile pair
/// member q / 2, k half q % 2); the result registers come out as
/// (b0, b1) of the first n-tile, then of the second (PTX ISA §9.7.14.5.15).
/// (Per-lane `ld.shared.u32` pairs cost 8 instructions per k-step at NT = 4
/// instead of 2.) Every address is `b` plus a constant, which the loads
/// take as an immediate offset.
#[inline(always)]
unsafe fn mma_kstep<const NT: usize>(acc: &mut [[f32; 4]; NT], a: [u32; 4], b: u32, step: u32) {
    let k_bytes = step * 16 * 2;
    // SAFETY: rows n < 8·NT and columns k + 8 ≤ 128 lie in the buffer.
    unsafe {
        if NT == 1 {
            let b = ldmatrix_x2(b + k_bytes);
            acc[0] = mma_bf16_16816(a, b, acc[0]);
            return;
        }
        let mut nt = 0;
        while nt < NT {
            let rows = (nt * 8 * GEMM_X_STRIDE * 2) as u32;
            let b = ldmatrix_x4(b + rows + k_bytes);
            acc[nt] = mma_bf16_16816(a, [b[0], b[1]], acc[nt]);
            acc[nt + 1] = mma_bf16_16816(a, [b[2], b[3]], acc[nt + 1]);
            nt += 2;
        }
    }
}

/// Calls `f(row, column, value)` for each accumulator of the warp, row
/// inside its 16-row tile and column inside its 8·NT activation rows: C
/// fragment element `i` of n-tile `nt` is row `g + 8·(i / 2)`, column
/// `nt·8 + 2t + i % 2` (PTX ISA §9.7.14.5.8, m16n8k16 C/D).
#[inline(always)]
fn for_each_fragment<const NT: usize>(
    acc: &[[f32; 4]; NT],
    lane: u32,
    mut f: impl FnMut(u32, u32, f32),
) {
    let (g, t) = (lane / 4, lane % 4);
    let mut nt = 0;
    while nt < NT {
        let mut i = 0;
        while i < 4 {
            f(
                g + 8 * (i as u32 / 2),
                nt as u32 * 8 + 2 * t + i as u32 % 2,
                acc[nt][i],
            );
            i += 1;
        }
        nt += 1;
    }
}

macro_rules! zipgemm_entry {
    ($name:ident, $v:literal) => {
        /// ZipGEMM, variant
        #[doc = concat!(stringify!($v), " of `launch::GEMM_VARIANTS`.")]
        ///
        /// # Safety
        /// The matrix pointers describe a matrix validated by the host; `x`
        /// holds n × cols BF16, with n ≤ 8 · NT unless this is the widest
        /// variant; `y` (or `y32`) n × rows outputs; a
        /// one-dimensional grid of `shares · chunks` blocks (`chunks` =
        /// ⌈n / 8·NT⌉, shares at most units × col_tiles, see `WorkSplit`)
        /// of `32 * GEMM_WARPS` threads; unless every share is whole units,
        /// `partial` holds 2 × grid slots of `GEMM_WARPS · 16 · 8 · NT` f32
        /// and `counters` one zeroed u32 per unit and chunk; dynamic shared
        /// memory `gemm_smem_bytes(NT)`.
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
                partial,
                counters,
            };
            const V: MmaGemmVariant = GEMM_VARIANTS[$v];
            // SAFETY: forwarded from the caller.
            unsafe { zipgemm::<{ V.nt }, { V.fetch_early }>(view, args) }
        }
    };
}

zipgemm_entry!(zipserv_gemm_n8, 0);
zipgemm_entry!(zipserv_gemm_n8_early, 1);
zipgemm_entry!(zipserv_gemm_n16, 2);
zipgemm_entry!(zipserv_gemm_n32, 3);
const _: () = assert!(GEMM_VARIANTS.len() == 4, "one entry point per variant");
