//! Hopper ZipGEMM: `Yᵀ[M×N] = W[M×K] · Xᵀ[K×N]` with `W` compressed, FP32
//! accumulation, on `wgmma` (sm_90a). Geometry and the launch contract are
//! in `sm90`; the `mma.sync` kernel (`zipgemm`) stays the path for small N.
//!
//! Why another kernel: the `mma.sync` one re-decodes the weights for every
//! 32 activation rows and keeps one tile in flight per warp. Here a block
//! decodes each weight once for up to 256 activation rows (wgmma's N), the
//! accumulators of all of them in registers, and the copy engines, not the
//! threads, move the data.
//!
//! A block is three warpgroups. Work is dealt as in the other kernel
//! ([`WorkSplit`](crate::launch::WorkSplit), stream-K): a *unit* is 128
//! rows of W (8 row tiles), and each block walks a contiguous share of the
//! (unit, 128-column tile) pairs, once per chunk of `n_tile` activation
//! rows. Per pair, through a ring of shared-memory stages:
//!
//!   load (warpgroup 0, nine threads; `producer`) – eight threads, one per
//!          row tile, wait until the stage's tile slots are empty, then
//!          `cp.async.bulk` copies each its compressed tile (2816 B) and
//!          the tile's first exception entries, and writes the tile's
//!          exception range beside them; the ninth waits until the stage's activation slot
//!          is empty, then TMA copies the activations `X[n0 ..][k0 .. k0 +
//!          128]` as two boxes of 64 columns in the 128-byte swizzle
//!          `wgmma` reads. Each completes on its own "full" barrier. TMA
//!          zero-fills rows past N and columns past K, so ragged shapes
//!          need no padding.
//!   decode (warpgroups 1–2, each warp one row tile; `consumer`) – waits
//!          for the tiles, reads its lane's 64 sign+mantissa bytes and 6
//!          code words from the stage, decodes them with the shared decode
//!          functions straight into the warp's A stage in shared memory
//!          (the A fragments of the tile's 8 k-steps, in fragment order)
//!          and releases the tile slots;
//!   patch – each lane fixes about one exception's exponent in the A stage
//!          (as in the other kernel; see `consumer::patch_stage` for why
//!          not in registers);
//!   mma  – the fragments come from the A stage into 32 registers, then 8
//!          `wgmma.m64nNk16` per warpgroup, A from registers, B by
//!          descriptor from the stage's activations. The next tile is
//!          decoded and patched while they run; once they are complete the
//!          activation slot is released;
//!   store (`epilogue`) – a whole unit: BF16 through the warp's A stage
//!          and 16-byte stores, or f32 straight, to `Y` (`unit_store`); part
//!          of a unit: f32 partial sums to the block's slot, and the last
//!          block to finish the unit adds the slots in share order. For a
//!          share's first segment when more follow, warp 2 of warpgroup 0
//!          (the finisher) makes that count while the consumers go on
//!          (`epilogue::publish_first`).
//!
//! The producer runs ahead by up to `stages` pairs, across unit boundaries,
//! so the next unit's data arrives while the consumers store. `setmaxnreg`
//! moves the producer's registers to the consumers (one block per
//! multiprocessor: 40 and 232, for 128 accumulators at N = 256; two: 32 and
//! 104).

mod consumer;
mod epilogue;
mod producer;
mod smem;
mod unit_store;
mod x_pitch;

use crate::format::TILE_ROWS;
use crate::launch::nonzero;
use crate::ptx::{block_idx, sync_threads, thread_idx};
use crate::ptx_sm90::{fence_mbarrier_init, mbarrier_init, setmaxnreg_dec, setmaxnreg_inc};
use crate::sm90::{
    CONSUMER_THREADS, FINISHER_WARP, UNIT_ROW_TILES, WARPGROUP_THREADS, WGMMA_GEMM_VARIANTS,
    WgmmaGemmParams,
};
use smem::Smem;

/// What every role of a block knows about its work.
#[derive(Clone, Copy)]
struct Block<'a> {
    p: &'a WgmmaGemmParams,
    /// This block's share of the (unit, column tile) pairs, `start..end`.
    share: u32,
    start: u32,
    end: u32,
    /// The activation chunk and its first row.
    chunk: u32,
    n0: u32,
    row_tiles: u32,
}

impl<'a> Block<'a> {
    #[inline(always)]
    fn new(p: &'a WgmmaGemmParams, n_tile: u32) -> Self {
        // chunks ≥ 1 (host-checked); `nonzero` keeps panic paths out.
        let chunks = nonzero(p.chunks);
        let (share, chunk) = (block_idx().0 / chunks, block_idx().0 % chunks);
        Self {
            p,
            share,
            start: p.work.share_start(share),
            end: p.work.share_start(share + 1),
            chunk,
            n0: chunk * n_tile,
            row_tiles: p.matrix.rows.div_ceil(TILE_ROWS as u32),
        }
    }

    /// Whether the finisher warp counts this share's first arrival
    /// ([`WorkSplit::defers_first_arrival`](crate::launch::WorkSplit)).
    #[inline(always)]
    fn defers_first_arrival(&self) -> bool {
        self.p.work.defers_first_arrival(self.share)
    }

    /// The unit of pair `q` and its column tile.
    #[inline(always)]
    fn unit_and_tile(&self, q: u32) -> (u32, u32) {
        let u = q / nonzero(self.p.matrix.col_tiles);
        (u, q - u * self.p.matrix.col_tiles)
    }
}

/// Position of a block's walk in its ring of stages: the stage and the
/// parity of the phase it is in (flips each time the ring wraps).
#[derive(Clone, Copy)]
struct Ring<const STAGES: usize> {
    stage: u32,
    phase: u32,
}

impl<const STAGES: usize> Ring<STAGES> {
    const START: Self = Self { stage: 0, phase: 0 };

    #[inline(always)]
    fn advance(&mut self) {
        self.stage += 1;
        if self.stage == STAGES as u32 {
            self.stage = 0;
            self.phase ^= 1;
        }
    }
}

/// The producer thread that copies the activations (thread 0 copies the
/// compressed tiles): lane 0 of the producer warpgroup's second warp, so
/// the two loaders never share a warp's issue slot or diverge within one.
const ACTIVATION_LOADER: u32 = 32;

/// The kernel body of variant `V` of [`WGMMA_GEMM_VARIANTS`]; the other
/// parameters repeat its fields as constants (the entry macro derives
/// them), since a const generic cannot be computed from `V` here.
#[inline(always)]
unsafe fn zipgemm_sm90<
    const V: usize,
    const NJ: usize,
    const STAGES: usize,
    const PRODUCER_REGS: u32,
    const CONSUMER_REGS: u32,
>(
    p: &WgmmaGemmParams,
) {
    const {
        let v = &WGMMA_GEMM_VARIANTS[V];
        assert!(v.n_tile == 8 * NJ && v.stages == STAGES);
        assert!(v.producer_registers == PRODUCER_REGS);
        assert!(v.consumer_registers() == CONSUMER_REGS);
    };
    let tid = thread_idx();
    let s = Smem::new(&WGMMA_GEMM_VARIANTS[V]);
    let block = Block::new(p, 8 * NJ as u32);
    // SAFETY: shared addresses stay in this block's allocation (the host
    // requests `SmemLayout::request_bytes`); global accesses are bounded by
    // the shapes the host checked; the roles below are whole warpgroups.
    unsafe {
        // Before anything global: the tensor-map slot written below may
        // still be in use by the kernel before (with launch overlap).
        crate::ptx::start_after_prior_grids();
        let mut map = core::ptr::null();
        if tid == 0 {
            let mut i = 0;
            while i < STAGES as u32 {
                mbarrier_init(s.full_w(i), UNIT_ROW_TILES);
                mbarrier_init(s.full_x(i), 1);
                mbarrier_init(s.empty_w(i), CONSUMER_THREADS);
                mbarrier_init(s.empty_x(i), CONSUMER_THREADS);
                i += 1;
            }
            fence_mbarrier_init();
        }
        if tid == ACTIVATION_LOADER {
            map = producer::publish_tensor_map(p);
        }
        sync_threads();
        // The roles' thread index through `opaque`: tested again with the
        // value that chose the tensor-map publisher above, LLVM threaded
        // that branch through the barrier, so the loader's lane ran its own
        // copy of `bar.sync` and `setmaxnreg` (both `.aligned`: its warp
        // hung; seen with v25's consumer, `exp-pair-groups`). tests/ptx.rs
        // checks each kernel has one of each.
        let tid = crate::ptx::opaque(tid);
        // One if/else, one role per branch, as setmaxnreg wants.
        if tid < WARPGROUP_THREADS {
            setmaxnreg_dec::<PRODUCER_REGS>();
            if tid < UNIT_ROW_TILES {
                producer::run_tiles::<STAGES>(&block, &s, tid);
            } else if tid == ACTIVATION_LOADER {
                producer::run_activations::<NJ, STAGES>(&block, &s, map);
            } else if tid / 32 == FINISHER_WARP {
                // A whole warp (the branches above take lanes of warps 0
                // and 1 only).
                epilogue::count_first(&block, &s, tid % 32);
            }
        } else {
            setmaxnreg_inc::<CONSUMER_REGS>();
            consumer::run::<NJ, STAGES>(&block, &s, tid - WARPGROUP_THREADS);
        }
    }
}

macro_rules! zipgemm_sm90_entry {
    ($name:ident, $v:literal) => {
        /// Hopper ZipGEMM, variant
        #[doc = concat!(stringify!($v), " of `sm90::WGMMA_GEMM_VARIANTS`.")]
        ///
        /// # Safety
        /// `p` follows [`WgmmaGemmParams`]' contract: a matrix validated by
        /// the host, a tensor map of `X` (n × cols BF16) with this
        /// variant's box, `y`/`y32` n × rows outputs, a one-dimensional grid
        /// of `work.blocks × chunks` blocks (`chunks = ⌈n / n_tile⌉`) of
        /// `sm90::BLOCK_THREADS` threads, `map_slots` 128 bytes per block,
        /// and unless every share is whole units, `partial` two slots of
        /// `UNIT_ROWS × n_tile` f32 per block and `counters` one zeroed u32
        /// per unit and chunk; dynamic shared memory
        /// `SmemLayout::of(variant).request_bytes()`.
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: WgmmaGemmParams) {
            const V: usize = $v;
            const VARIANT: crate::sm90::WgmmaGemmVariant = WGMMA_GEMM_VARIANTS[V];
            const NJ: usize = VARIANT.n_tile / 8;
            const STAGES: usize = VARIANT.stages;
            const PRODUCER: u32 = VARIANT.producer_registers;
            const CONSUMER: u32 = VARIANT.consumer_registers();
            // SAFETY: forwarded from the caller.
            unsafe { zipgemm_sm90::<V, NJ, STAGES, PRODUCER, CONSUMER>(&p) }
        }
    };
}

zipgemm_sm90_entry!(zipserv_gemm_sm90_n16_x2, 0);
zipgemm_sm90_entry!(zipserv_gemm_sm90_n32_x2, 1);
zipgemm_sm90_entry!(zipserv_gemm_sm90_n64_x2, 2);
zipgemm_sm90_entry!(zipserv_gemm_sm90_n64, 3);
zipgemm_sm90_entry!(zipserv_gemm_sm90_n128, 4);
zipgemm_sm90_entry!(zipserv_gemm_sm90_n256, 5);
