//! Geometry of the Hopper ZipGEMM (`zipgemm_sm90`), shared by the kernel
//! and the host that sizes and launches it, so every constant exists once.
//!
//! The kernel computes `Yᵀ = W · Xᵀ` with `wgmma.mma_async.m64nNk16`: the
//! decoded weights are the A operand, taken from registers (each warp of a
//! warpgroup holds 16 of the 64 rows, in the same fragment layout as
//! `mma.m16n8k16`'s A, so one compressed 16×128 tile per warp decodes
//! straight into it); the activations are the B operand, read by the tensor
//! cores from shared memory through a matrix descriptor. A block is one
//! producer warpgroup, which moves compressed tiles (`cp.async.bulk`) and
//! activations (`cp.async.bulk.tensor`, TMA) into a ring of shared-memory
//! stages, and [`CONSUMER_WARPGROUPS`] consumer warpgroups, which decode and
//! multiply. Sizes below are in bytes unless a name says otherwise.

use crate::format::{LANE_PAIRS, LANES, TILE_BYTES, TILE_COLS, TILE_ROWS};
use crate::launch::WorkSplit;
use crate::tile::MatrixView;

/// Threads of a warpgroup: the four consecutive warps (starting at a warp
/// index divisible by 4) that issue one `wgmma` together.
pub const WARPGROUP_THREADS: u32 = 128;
/// Warpgroups that decode weights and issue `wgmma` (warpgroups 1..).
/// Two share every activation stage, halving the activation bytes read
/// from L2 per weight compared with one.
pub const CONSUMER_WARPGROUPS: u32 = 2;
/// Threads of a block: the producer warpgroup (warpgroup 0) and the
/// consumers.
pub const BLOCK_THREADS: u32 = WARPGROUP_THREADS * (1 + CONSUMER_WARPGROUPS);
/// Consumer threads (they alone arrive on a stage's "empty" barrier).
pub const CONSUMER_THREADS: u32 = WARPGROUP_THREADS * CONSUMER_WARPGROUPS;
/// Row tiles (16 rows of W) per consumer warpgroup: wgmma's M is 64.
pub const WG_ROW_TILES: u32 = 4;
/// Row tiles a block's accumulators cover: a *unit* of the work split.
pub const UNIT_ROW_TILES: u32 = CONSUMER_WARPGROUPS * WG_ROW_TILES;
/// Rows of W in one unit.
pub const UNIT_ROWS: u32 = UNIT_ROW_TILES * TILE_ROWS as u32;

/// Registers of one multiprocessor's file, shared out among its blocks.
pub const SM_REGISTERS: u32 = 65536;
/// Shared memory of one multiprocessor (228 KB on Hopper), of which the
/// system reserves [`BLOCK_RESERVED_SMEM`] per resident block.
pub const SM_SMEM_BYTES: usize = 228 * 1024;
pub const BLOCK_RESERVED_SMEM: usize = 1024;
// setmaxnreg: multiples of 8 in 24..=256 (PTX ISA, "setmaxnreg"). The
// consumers' `.inc` only draws on what the block owns from the start: the
// producer's release. Tried 32/240 with one block per SM (within the 64 K
// file, not within the 168 × 384 the block starts with): `setmaxnreg.inc`
// waited forever. `WgmmaGemmVariant::consumer_registers` derives the
// consumers' count from that bound.

/// Activation columns (BF16) per TMA box: 64 × 2 B = 128 B, the span of the
/// 128-byte swizzle, so each box row is one swizzle row.
pub const X_BOX_COLS: usize = 64;
/// Bytes of one activation row inside a box.
pub const X_BOX_ROW_BYTES: usize = X_BOX_COLS * 2;
/// Boxes per 128-column k-tile.
pub const X_BOXES: usize = TILE_COLS / X_BOX_COLS;
/// 128-byte swizzle atom: 8 rows × 128 B. Boxes start at multiples of it,
/// because the swizzle is a function of the shared-memory address bits.
pub const SWIZZLE_ATOM_BYTES: usize = 8 * X_BOX_ROW_BYTES;
/// Compressed tiles of one stage: the unit's row tiles at one k-tile.
pub const W_STAGE_BYTES: usize = UNIT_ROW_TILES as usize * TILE_BYTES;
/// One warp's decoded tile in fragment order, where exceptions are patched
/// (slot `s` at byte `2s`: `format::fragment_slot`).
pub const A_STAGE_BYTES: usize = LANES * LANE_PAIRS * 4;
/// Consumer warps, each with its own A stage.
pub const CONSUMER_WARPS: usize = (CONSUMER_THREADS / 32) as usize;
/// The exception table copied to shared memory (32 entries used).
pub const TABLE_BYTES: usize = 128;
/// Block-wide scratch words: the split-K arrival verdicts of the
/// consumers' own count (word 0) and of the finisher warp's (word 1).
pub const FLAG_BYTES: usize = 16;
/// One `mbarrier` object.
pub const MBARRIER_BYTES: usize = 8;

/// Exception entries of a tile the producer stages in shared memory with
/// the tile (a 2048-weight tile averages ~33 at 1.6%); a tile's entries
/// past these are read from global memory by the patch's tail loop.
pub const STAGED_ENTRIES: u32 = 64;
/// Shared bytes per staged tile's entries: the 16-byte aligned window
/// around up to [`STAGED_ENTRIES`] u16 entries (a bulk copy moves whole
/// 16-byte units from a 16-byte aligned address) spans at most 144 bytes.
pub const ENTRY_SLOT_BYTES: usize = 144;
/// A staged tile's exception range as the producer writes it for the
/// consumer warp: start, count, far start, and where the tile's first
/// entry sits in its entry slot (u32 each).
pub const RANGE_RECORD_BYTES: usize = 16;
/// Zero entries the host appends to a matrix's device exception array, so
/// a staging window rounded up to 16 bytes past its last entry stays in
/// the allocation.
pub const EXCEPTION_TAIL_ENTRIES: usize = 8;

/// The bulk copy that stages a tile's first entries: for the tile whose
/// entries are `start .. start + count` of the exception array, returns
/// the byte offset in the array of the copy's first byte (16-byte
/// aligned), its length (a multiple of 16, 0 when the tile has none) and
/// the index, in the copied window, of the tile's first entry.
pub const fn entry_window(start: u32, count: u32) -> (u32, u32, u32) {
    let n = if count < STAGED_ENTRIES {
        count
    } else {
        STAGED_ENTRIES
    };
    if n == 0 {
        return (0, 0, 0);
    }
    let (first, end) = (2 * start, 2 * (start + n));
    let lo = first & !15;
    let hi = (end + 15) & !15;
    (lo, hi - lo, (first - lo) / 2)
}
/// Named barrier (besides barrier 0, the whole block) that the consumer
/// warpgroups use among themselves; the producer never joins it.
pub const CONSUMER_BARRIER: u32 = 1;

/// The producer warpgroup's warp that makes a share's split-K arrival for
/// its first segment when more segments follow, so the consumers go on
/// with the next one instead of waiting for the count (`zipgemm_sm90::
/// epilogue::count_first`).
pub const FINISHER_WARP: u32 = 2;
/// Named barriers between the consumers and the finisher warp: the first
/// segment's partial sums are stored (consumers arrive, the finisher
/// waits), and its verdict is in shared memory (the other way round).
pub const PARTIALS_STORED_BARRIER: u32 = 2;
pub const VERDICT_BARRIER: u32 = 3;
/// Threads of each of those barriers: the consumers and the finisher warp.
pub const FINISHER_BARRIER_THREADS: u32 = CONSUMER_THREADS + 32;

/// Threads per block of `zipserv_x_pitch` (the pitch copy for activations
/// TMA cannot address directly).
pub const X_PITCH_THREADS: u32 = 256;
/// Row pitch TMA needs: a multiple of 16 bytes (8 BF16).
pub const X_PITCH_ELEMENTS: usize = 8;

/// Activations bytes of one stage for a variant of `n_tile` rows of X.
pub const fn x_stage_bytes(n_tile: usize) -> usize {
    X_BOXES * n_tile * X_BOX_ROW_BYTES
}

/// One compiled Hopper ZipGEMM variant: its entry point, the activation rows
/// `n_tile` one launch chunk covers (wgmma's N), the stages of its
/// shared-memory ring, how many blocks share a multiprocessor (its
/// registers and shared memory are split for that many), the producer's
/// registers after `setmaxnreg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgmmaGemmVariant {
    pub name: &'static str,
    pub n_tile: usize,
    pub stages: usize,
    pub blocks_per_sm: u32,
    pub producer_registers: u32,
}

impl WgmmaGemmVariant {
    /// Registers per thread a block starts with: its share of the file,
    /// rounded down to a multiple of 8 (ptxas's cap under the launch
    /// bounds `.maxntid BLOCK_THREADS` / `.minnctapersm blocks_per_sm`).
    pub const fn entry_registers(&self) -> u32 {
        (SM_REGISTERS / (BLOCK_THREADS * self.blocks_per_sm)) & !7
    }

    /// Registers per consumer thread after `setmaxnreg`: what the block
    /// started with plus what the producer warpgroup gave back, capped at
    /// 232 (N = 256: 128 f32 accumulators and a tile's 32 fragment
    /// registers in the tensor cores while the next tile is decoded).
    pub const fn consumer_registers(&self) -> u32 {
        let pool =
            self.entry_registers() * BLOCK_THREADS - self.producer_registers * WARPGROUP_THREADS;
        let r = (pool / CONSUMER_THREADS) & !7;
        if r > 232 { 232 } else { r }
    }
}

/// Every Hopper ZipGEMM variant: the one list the entry points, the build
/// script (launch bounds), the host and the PTX tests use. Narrowest first
/// within each residency; [`wgmma_variant_for`] picks among them.
///
/// Two blocks per multiprocessor (`_x2`) give each scheduler four consumer
/// warps instead of two: the one-block kernel is latency-bound (Nsight
/// Compute on 28672×4096, N = 64: 0.47 eligible warps per scheduler, 63% of
/// cycles with none), at 104 registers per consumer and two stages each.
pub const WGMMA_GEMM_VARIANTS: [WgmmaGemmVariant; 6] = [
    WgmmaGemmVariant {
        name: "zipserv_gemm_sm90_n16_x2",
        n_tile: 16,
        stages: 2,
        blocks_per_sm: 2,
        producer_registers: 32,
    },
    WgmmaGemmVariant {
        name: "zipserv_gemm_sm90_n32_x2",
        n_tile: 32,
        stages: 2,
        blocks_per_sm: 2,
        producer_registers: 32,
    },
    WgmmaGemmVariant {
        name: "zipserv_gemm_sm90_n64_x2",
        n_tile: 64,
        stages: 2,
        blocks_per_sm: 2,
        producer_registers: 32,
    },
    WgmmaGemmVariant {
        name: "zipserv_gemm_sm90_n64",
        n_tile: 64,
        stages: 4,
        blocks_per_sm: 1,
        producer_registers: 40,
    },
    WgmmaGemmVariant {
        name: "zipserv_gemm_sm90_n128",
        n_tile: 128,
        stages: 3,
        blocks_per_sm: 1,
        producer_registers: 40,
    },
    WgmmaGemmVariant {
        name: "zipserv_gemm_sm90_n256",
        n_tile: 256,
        stages: 2,
        blocks_per_sm: 1,
        producer_registers: 40,
    },
];

/// Index into [`WGMMA_GEMM_VARIANTS`] of the variant for `n` activation
/// rows: the narrowest covering them among those with `blocks_per_sm`
/// blocks per multiprocessor when asked (any residency otherwise, the list
/// order breaking ties), else the widest, run once per chunk of 256 rows.
pub fn wgmma_variant_for(n: usize, blocks_per_sm: Option<u32>) -> usize {
    let covers = |v: &WgmmaGemmVariant| n <= v.n_tile;
    let wanted = |v: &WgmmaGemmVariant| blocks_per_sm.is_none_or(|b| v.blocks_per_sm == b);
    WGMMA_GEMM_VARIANTS
        .iter()
        .position(|v| covers(v) && wanted(v))
        .or_else(|| WGMMA_GEMM_VARIANTS.iter().position(covers))
        .unwrap_or(WGMMA_GEMM_VARIANTS.len() - 1)
}

/// Fewest (unit, column tile) pairs per two-block wave slot for which the
/// two-block n64 variant is taken over the one-block one. Measured on an
/// H200 at N = 64 (two-block / one-block µs), commit bd0dd69: 4096×4096,
/// 3.9 pairs per slot, 18.6 / 15.4; 6144×4096, 5.8, 22.2 / 20.6;
/// 4096×14336, 13.6, 36.1 / 35.3; 28672×4096, 27, 58.8 / 63.2 (the same
/// order at N = 48). With few pairs per block the two-stage ring's ramp and
/// the wider N's tensor work are not hidden. At commit 608723e the line
/// was at 5 (6144×4096 25.4 / 25.9 then); the one-block kernel gained more
/// since. At N ≤ 32 the two-block variant won on every shape, 4096×4096
/// included.
pub const X2_N64_MIN_PAIRS_PER_SLOT: usize = 20;

/// The variant [`wgmma_variant_for`] gives with no residency asked, except
/// that an `m × k` product with fewer than [`X2_N64_MIN_PAIRS_PER_SLOT`]
/// pairs per slot of a two-block wave on `multiprocessors` takes the
/// one-block n64 variant instead of the two-block one, and that a variant
/// whose blocks do not all fit side by side on the card (`resident[i]`:
/// blocks of variant `i` one multiprocessor holds) gives way to the
/// one-block variant, for which its registers were not split.
pub fn wgmma_variant_auto(
    n: usize,
    m: usize,
    k: usize,
    multiprocessors: usize,
    resident: &[u32; WGMMA_GEMM_VARIANTS.len()],
) -> usize {
    let v = wgmma_variant_for(n, None);
    let chosen = &WGMMA_GEMM_VARIANTS[v];
    if resident[v] < chosen.blocks_per_sm {
        return wgmma_variant_for(n, Some(1));
    }
    if chosen.n_tile == 64 && chosen.blocks_per_sm == 2 {
        let pairs = m.div_ceil(UNIT_ROWS as usize) * k.div_ceil(TILE_COLS);
        let slots = 2 * multiprocessors;
        if pairs < X2_N64_MIN_PAIRS_PER_SLOT * slots {
            return wgmma_variant_for(n, Some(1));
        }
    }
    v
}

/// Dynamic shared memory a block may have on Hopper (227 KB, after
/// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`).
pub const MAX_SMEM_BYTES: usize = 227 * 1024;

/// Byte offsets of a block's shared-memory regions from a base aligned to
/// [`SWIZZLE_ATOM_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmemLayout {
    /// Activation stages, `x_stage` bytes each (boxes 1024-aligned).
    pub x: usize,
    pub x_stage: usize,
    /// Compressed-tile stages, [`W_STAGE_BYTES`] each.
    pub w: usize,
    /// Consumer warps' A stages, [`A_STAGE_BYTES`] each.
    pub a: usize,
    pub table: usize,
    pub flag: usize,
    /// Per stage and row tile, the staged exception entries
    /// ([`ENTRY_SLOT_BYTES`]) and their range ([`RANGE_RECORD_BYTES`]).
    pub entries: usize,
    pub records: usize,
    /// Per stage, four barriers in four arrays: "full" for its compressed
    /// tiles and for its activations (the producer's copies landed), and
    /// "empty" for each (every consumer is done with them: the tiles once
    /// decoded, the activations once their `wgmma`s are complete).
    pub full_w: usize,
    pub full_x: usize,
    pub empty_w: usize,
    pub empty_x: usize,
    /// End of the layout.
    pub end: usize,
}

impl SmemLayout {
    pub const fn of(v: &WgmmaGemmVariant) -> Self {
        let x_stage = x_stage_bytes(v.n_tile);
        let w = v.stages * x_stage;
        let a = w + v.stages * W_STAGE_BYTES;
        let table = a + CONSUMER_WARPS * A_STAGE_BYTES;
        let flag = table + TABLE_BYTES;
        let entries = flag + FLAG_BYTES;
        let records = entries + v.stages * UNIT_ROW_TILES as usize * ENTRY_SLOT_BYTES;
        let barriers = v.stages * MBARRIER_BYTES;
        let full_w = records + v.stages * UNIT_ROW_TILES as usize * RANGE_RECORD_BYTES;
        let full_x = full_w + barriers;
        let empty_w = full_x + barriers;
        let empty_x = empty_w + barriers;
        let end = empty_x + barriers;
        Self {
            x: 0,
            x_stage,
            w,
            a,
            table,
            flag,
            entries,
            records,
            full_w,
            full_x,
            empty_w,
            empty_x,
            end,
        }
    }

    /// Dynamic shared memory to request: the layout plus the slack that
    /// lets the kernel align its base to [`SWIZZLE_ATOM_BYTES`] (dynamic
    /// shared memory is only guaranteed 16-byte alignment).
    pub const fn request_bytes(&self) -> usize {
        self.end + SWIZZLE_ATOM_BYTES
    }
}

const fn check_variants() {
    let mut i = 0;
    while i < WGMMA_GEMM_VARIANTS.len() {
        let v = &WGMMA_GEMM_VARIANTS[i];
        let l = SmemLayout::of(v);
        // wgmma N: multiples of 8 up to 256 (here: 16, the narrowest with
        // a wrapper); TMA boxes: at most 256 rows.
        assert!(v.n_tile.is_multiple_of(16) && v.n_tile <= 256);
        assert!(l.x_stage.is_multiple_of(SWIZZLE_ATOM_BYTES));
        assert!((v.n_tile * X_BOX_ROW_BYTES).is_multiple_of(SWIZZLE_ATOM_BYTES));
        // cp.async.bulk: 16-byte aligned destinations and sizes.
        assert!(l.w.is_multiple_of(16) && TILE_BYTES.is_multiple_of(16));
        assert!(l.a.is_multiple_of(16) && l.table.is_multiple_of(16));
        assert!(l.full_w.is_multiple_of(8));
        assert!(l.request_bytes() <= MAX_SMEM_BYTES);
        assert!(
            v.blocks_per_sm as usize * (l.request_bytes() + BLOCK_RESERVED_SMEM) <= SM_SMEM_BYTES
        );
        assert!(v.stages >= 2);
        // setmaxnreg bounds (see above): multiples of 8 in 24..=256, and
        // the roles' registers within what the block starts with.
        let (p, c) = (v.producer_registers, v.consumer_registers());
        assert!(p.is_multiple_of(8) && c.is_multiple_of(8) && p >= 24 && c <= 256);
        assert!(
            p * WARPGROUP_THREADS + c * CONSUMER_THREADS <= v.entry_registers() * BLOCK_THREADS
        );
        assert!(p <= v.entry_registers() && c >= v.entry_registers());
        // The n256 accumulators alone are 128 registers.
        assert!(c >= 4 * v.n_tile as u32 / 8 + 32);
        i += 1;
    }
}
const _: () = check_variants();

/// A CUDA tensor map (`CUtensorMap`, 128 opaque bytes made by the driver's
/// `cuTensorMapEncodeTiled` on the host) describing the activations for
/// `cp.async.bulk.tensor`. TMA wants it 64-byte aligned in param, const or
/// global memory; rustc's kernel ABI passes structs aligned to 16 at most,
/// so the kernel copies it from its parameters to a 128-byte slot of global
/// memory per block before use.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMap {
    pub opaque: [u64; 16],
}

/// Everything a Hopper ZipGEMM launch takes, as one `#[repr(C)]` block
/// passed by value: host and kernel build it from this one definition.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WgmmaGemmParams {
    /// Activations `X[n][k]`, BF16, row pitch a multiple of 16 bytes; boxes
    /// of [`X_BOX_COLS`] × `n_tile`, 128-byte swizzle, zero past N and K.
    pub x_map: TensorMap,
    pub matrix: MatrixView,
    /// `Y` (N × M, row-major) as BF16 or f32 (`store`, see `launch`).
    pub y: *mut u16,
    pub y32: *mut f32,
    /// Split-K partial sums: two slots of [`UNIT_ROWS`] × `n_tile` f32 per
    /// block; one zeroed arrival counter per unit and chunk.
    pub partial: *mut f32,
    pub counters: *mut u32,
    /// One 128-byte slot per block for its copy of `x_map`.
    pub map_slots: *mut u64,
    /// Shares of (unit, column tile) pairs; `work.blocks` shares, each run
    /// once per activation chunk (grid = `work.blocks × chunks`).
    pub work: WorkSplit,
    pub n: u32,
    pub chunks: u32,
    pub store: u32,
}

const _: () = assert!(core::mem::size_of::<WgmmaGemmParams>() == 256);
const _: () = assert!(core::mem::align_of::<WgmmaGemmParams>() == 16);

/// Swizzle modes of a `wgmma` shared-memory matrix descriptor (bits 62–63).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum DescriptorSwizzle {
    None = 0,
    B128 = 1,
    B64 = 2,
    B32 = 3,
}

/// A `wgmma` shared-memory matrix descriptor (PTX ISA, "Asynchronous
/// Warpgroup Level Matrix Instructions: Matrix Descriptor Format"): the
/// start address, the leading- and stride-dimension byte offsets (each
/// stored as bits 4..18 of the byte value, in 14-bit fields at bits 0, 16
/// and 32), base offset 0 (the matrix starts on a swizzle-atom boundary)
/// and the swizzle mode at bits 62–63.
#[inline]
pub const fn matrix_descriptor(
    s_addr: u32,
    leading_bytes: u32,
    stride_bytes: u32,
    swizzle: DescriptorSwizzle,
) -> u64 {
    const fn field(bytes: u32) -> u64 {
        ((bytes >> 4) & 0x3FFF) as u64
    }
    field(s_addr) | field(leading_bytes) << 16 | field(stride_bytes) << 32 | (swizzle as u64) << 62
}

/// Descriptor of k-step `step` (16 columns, 0..8) of a k-tile of
/// activations staged at `s_x` as [`X_BOXES`] boxes of `n_tile` rows, each
/// K-major with the 128-byte swizzle. In that canonical layout (CUTLASS's
/// `Layout_K_SW128_Atom`, PTX ISA "Shared Memory Matrix Layout") a row of
/// the box is 128 contiguous bytes whose 16-byte chunks are permuted by
/// the row's index mod 8, rows are 128 B apart and groups of 8 rows 1024 B
/// apart (the stride-dimension offset); the leading-dimension offset is
/// unused and conventionally 1 (16 B). A k-step inside a swizzle row starts
/// 32 B further: the hardware applies the swizzle to the summed address.
#[inline]
pub const fn x_descriptor(s_x: u32, n_tile: usize, step: usize) -> u64 {
    let box_start = s_x + ((step / 4) * n_tile * X_BOX_ROW_BYTES) as u32;
    matrix_descriptor(
        box_start + ((step % 4) * 32) as u32,
        16,
        SWIZZLE_ATOM_BYTES as u32,
        DescriptorSwizzle::B128,
    )
}

/// What k-step `step` adds to the descriptor of k-step 0
/// ([`x_descriptor`]`(s_x, n_tile, 0)`): its start address's offset, in the
/// 16-byte units of the address field. The field holds the whole shared
/// address (under 2¹⁸ bytes, so 14 bits of 16-byte units), so the sum never
/// carries out of it; the kernel adds this constant to one descriptor per
/// stage instead of rebuilding each of the 8 descriptors from the address.
#[inline]
pub const fn x_descriptor_step(n_tile: usize, step: usize) -> u64 {
    (((step / 4) * n_tile * X_BOX_ROW_BYTES + (step % 4) * 32) >> 4) as u64
}

/// Byte offset of element (row, col) of a box of [`X_BOX_COLS`]-element
/// rows stored with the 128-byte swizzle, as TMA writes it
/// (`CU_TENSOR_MAP_SWIZZLE_128B`) and as [`x_descriptor`] describes it:
/// 16-byte chunk `c` of row `r` lands at chunk `c ^ (r % 8)`.
#[inline]
pub const fn sw128_offset(row: usize, col: usize) -> usize {
    row * X_BOX_ROW_BYTES + (((col / 8) ^ (row % 8)) * 16) + (col % 8) * 2
}

/// Where accumulator element `i` of 8-column block `j` sits in the
/// warpgroup's 64 × N result: (row inside the warp's 16 rows, column).
/// The wgmma m64nNk16 f32 accumulator layout (PTX ISA, "Register Fragments:
/// Matrix Fragments for wgmma.mma_async.m64nNk16", accumulator D) repeats
/// `mma.m16n8k16`'s C layout for every 8 columns: `d[4j + i]` is row
/// `g + 8·(i / 2)`, column `8j + 2t + i % 2`, with `g = lane / 4`,
/// `t = lane % 4`; warp `w` of the warpgroup holds rows `16w ..`.
#[inline(always)]
pub const fn accumulator_position(lane: u32, j: u32, i: u32) -> (u32, u32) {
    let (g, t) = (lane / 4, lane % 4);
    (g + 8 * (i / 2), 8 * j + 2 * t + i % 2)
}

/// (row, column) of a lane's accumulator element `i` of block `j` from its
/// element 0 of block 0: `accumulator_position(lane, j, i) −
/// accumulator_position(lane, 0, 0)`, the same for every lane, so a
/// thread's stores are one base and constants.
#[inline(always)]
pub const fn element_offset(j: usize, i: usize) -> (usize, usize) {
    (8 * (i / 2), 8 * j + i % 2)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn descriptor_fields_land_where_the_isa_puts_them() {
        // start 0x400 → 0x40 at bit 0; LBO 16 → 1 at bit 16; SBO 1024 → 64
        // at bit 32; 128-byte swizzle → 1 at bit 62.
        let d = matrix_descriptor(0x400, 16, 1024, DescriptorSwizzle::B128);
        assert_eq!(d, 0x4000_0040_0001_0040);
        // Addresses keep bits 4..18 only.
        let d = matrix_descriptor(0x3FFF0, 0, 0, DescriptorSwizzle::None);
        assert_eq!(d, 0x3FFF);
        assert_eq!(matrix_descriptor(0, 0, 0, DescriptorSwizzle::B32), 3 << 62);
    }

    #[test]
    fn x_descriptor_walks_k_steps_and_boxes() {
        let base = 0x2000;
        for n_tile in [64usize, 128, 256] {
            for step in 0..8 {
                let d = x_descriptor(base, n_tile, step);
                let start = ((d & 0x3FFF) << 4) as usize;
                let want = base as usize + (step / 4) * n_tile * 128 + (step % 4) * 32;
                assert_eq!(start, want, "n_tile {n_tile} step {step}");
                assert_eq!((d >> 32) & 0x3FFF, 64);
                assert_eq!(d >> 62, 1);
            }
        }
    }

    #[test]
    fn x_descriptor_steps_add_to_the_first() {
        // Every stage address a layout can give (1024-aligned, below the
        // 227 KB a block may have), every variant's N, every k-step.
        for v in &WGMMA_GEMM_VARIANTS {
            for s_x in (0..MAX_SMEM_BYTES as u32).step_by(SWIZZLE_ATOM_BYTES) {
                let d0 = x_descriptor(s_x, v.n_tile, 0);
                for step in 0..8 {
                    let end = s_x as usize + (step / 4 + 1) * v.n_tile * X_BOX_ROW_BYTES;
                    if end > MAX_SMEM_BYTES {
                        continue;
                    }
                    assert_eq!(
                        d0 + x_descriptor_step(v.n_tile, step),
                        x_descriptor(s_x, v.n_tile, step),
                        "{} at {s_x:#x}, step {step}",
                        v.name
                    );
                }
            }
        }
    }

    /// The swizzled box is a permutation of the plain row-major box: every
    /// element has its own 2-byte slot, inside its own 128-byte row.
    #[test]
    fn sw128_is_a_permutation_within_rows() {
        let rows = 16;
        let mut seen = vec![false; rows * X_BOX_COLS];
        for r in 0..rows {
            for c in 0..X_BOX_COLS {
                let o = sw128_offset(r, c);
                assert_eq!(o / X_BOX_ROW_BYTES, r);
                assert!(!seen[o / 2]);
                seen[o / 2] = true;
            }
        }
        // Row 0 is unpermuted; row 1 swaps neighbouring chunks.
        assert_eq!(sw128_offset(0, 8), 16);
        assert_eq!(sw128_offset(1, 0), 128 + 16);
        assert_eq!(sw128_offset(1, 8), 128);
    }

    #[test]
    fn element_offsets_are_accumulator_positions_less_the_first() {
        for lane in 0..32 {
            let (r0, c0) = accumulator_position(lane, 0, 0);
            for j in 0..32u32 {
                for i in 0..4u32 {
                    let (r, c) = accumulator_position(lane, j, i);
                    let (dr, dc) = element_offset(j as usize, i as usize);
                    assert_eq!(((r - r0) as usize, (c - c0) as usize), (dr, dc));
                }
            }
        }
    }

    #[test]
    fn accumulator_positions_cover_each_warp_tile_once() {
        for nj in [8u32, 16, 32] {
            let mut seen = vec![false; 16 * 8 * nj as usize];
            for lane in 0..32 {
                for j in 0..nj {
                    for i in 0..4 {
                        let (r, c) = accumulator_position(lane, j, i);
                        let at = (r * 8 * nj + c) as usize;
                        assert!(!seen[at]);
                        seen[at] = true;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn variants_are_chosen_by_width_then_residency() {
        let name = |n, b| WGMMA_GEMM_VARIANTS[wgmma_variant_for(n, b)].name;
        assert_eq!(name(1, None), "zipserv_gemm_sm90_n16_x2");
        assert_eq!(name(17, None), "zipserv_gemm_sm90_n32_x2");
        assert_eq!(name(64, None), "zipserv_gemm_sm90_n64_x2");
        assert_eq!(name(64, Some(1)), "zipserv_gemm_sm90_n64");
        assert_eq!(name(1, Some(1)), "zipserv_gemm_sm90_n64");
        assert_eq!(name(65, None), "zipserv_gemm_sm90_n128");
        assert_eq!(name(65, Some(2)), "zipserv_gemm_sm90_n128");
        assert_eq!(name(300, None), "zipserv_gemm_sm90_n256");
        // The measured shapes of X2_N64_MIN_PAIRS_PER_SLOT on 132 SMs.
        let h200 = WGMMA_GEMM_VARIANTS.map(|v| v.blocks_per_sm);
        let auto = |n, m, k| WGMMA_GEMM_VARIANTS[wgmma_variant_auto(n, m, k, 132, &h200)].name;
        assert_eq!(auto(64, 4096, 4096), "zipserv_gemm_sm90_n64");
        assert_eq!(auto(64, 6144, 4096), "zipserv_gemm_sm90_n64");
        assert_eq!(auto(64, 4096, 14336), "zipserv_gemm_sm90_n64");
        assert_eq!(auto(64, 28672, 4096), "zipserv_gemm_sm90_n64_x2");
        assert_eq!(auto(32, 4096, 4096), "zipserv_gemm_sm90_n32_x2");
        assert_eq!(auto(128, 28672, 4096), "zipserv_gemm_sm90_n128");
        // A card that holds one block of each: the one-block variants.
        let one = [1; WGMMA_GEMM_VARIANTS.len()];
        let name_one = |n| WGMMA_GEMM_VARIANTS[wgmma_variant_auto(n, 28672, 4096, 132, &one)].name;
        assert_eq!(name_one(32), "zipserv_gemm_sm90_n64");
        assert_eq!(name_one(64), "zipserv_gemm_sm90_n64");
        assert_eq!(name_one(256), "zipserv_gemm_sm90_n256");
        // Registers: one block 40 / 232, two blocks 32 / 104.
        let v = &WGMMA_GEMM_VARIANTS;
        assert_eq!(
            (v[3].entry_registers(), v[3].consumer_registers()),
            (168, 232)
        );
        assert_eq!(
            (v[0].entry_registers(), v[0].consumer_registers()),
            (80, 104)
        );
    }

    #[test]
    fn entry_windows_cover_the_staged_entries_and_fit_their_slot() {
        for start in 0..100u32 {
            for count in [0u32, 1, 7, 8, 9, 33, 63, 64, 65, 500] {
                let (lo, len, first) = entry_window(start, count);
                let n = count.min(STAGED_ENTRIES);
                if n == 0 {
                    assert_eq!(len, 0);
                    continue;
                }
                assert!(
                    lo.is_multiple_of(16)
                        && len.is_multiple_of(16)
                        && len as usize <= ENTRY_SLOT_BYTES
                );
                assert_eq!(lo / 2 + first, start, "start {start} count {count}");
                assert!(lo + len >= 2 * (start + n));
                // Past the last entry by less than the host's tail padding.
                assert!(lo + len < 2 * (start + n) + 2 * EXCEPTION_TAIL_ENTRIES as u32);
            }
        }
    }

    #[test]
    fn layouts_fit_and_do_not_overlap() {
        for v in &WGMMA_GEMM_VARIANTS {
            let l = SmemLayout::of(v);
            assert!(l.x + v.stages * l.x_stage <= l.w);
            assert!(l.w + v.stages * W_STAGE_BYTES <= l.a);
            assert!(l.a + CONSUMER_WARPS * A_STAGE_BYTES <= l.table);
            assert!(l.entries.is_multiple_of(16) && l.records.is_multiple_of(16));
            assert!(l.full_w.is_multiple_of(8));
            assert!(l.request_bytes() <= MAX_SMEM_BYTES, "{v:?}: {l:?}");
        }
    }
}
