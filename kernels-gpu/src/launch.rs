//! Launch geometry shared by the kernels and the host code that launches
//! them, so block sizes, shared-memory layouts and output modes are defined
//! once.

use crate::format::{LANE_PAIRS, LANES, TILE_COLS};

/// Warps per block of `zipserv_decompress`; each warp takes whole tiles.
pub const DECOMPRESS_WARPS: u32 = 4;
/// Blocks of the decompression kernel per multiprocessor its registers are
/// fitted to in the `sm_90a` image (launch bounds: 64 registers for 8
/// blocks of 128 threads, 32 warps). The kernel loads the next tile while
/// it decodes and stores the current one, which needs 64 registers; under
/// the old bound of 12 blocks (40 registers) it spilled 288 bytes, under 10
/// blocks 176. Without the prefetch it fitted 12 blocks in 40 registers.
/// The portable image has no bound.
pub const DECOMPRESS_MIN_BLOCKS_PER_SM_90A: u32 = 8;

/// Warps (row tiles of W) per block of `zipserv_gemm_*`; they share the
/// block's staged activations.
pub const GEMM_WARPS: u32 = 4;
/// Staged activation row in BF16: 8 extra elements make the B-fragment reads
/// of the eight lane groups hit distinct banks (row stride 68 words).
pub const GEMM_X_STRIDE: usize = TILE_COLS + 8;
/// Activation buffers: one being read, two being filled. Three let a block
/// pass one barrier per tile instead of two (see `zipgemm`).
pub const GEMM_X_STAGES: usize = 3;
/// The exception table, padded to 32 entries (and to 128 bytes so what
/// follows stays aligned).
pub const GEMM_TABLE_BYTES: usize = 128;
/// One warp's decoded tile in fragment order (see `zipgemm`).
pub const GEMM_A_STAGE_BYTES: usize = LANES * LANE_PAIRS * 4;
/// Block-wide scratch words (the split-K arrival verdict).
pub const GEMM_FLAG_BYTES: usize = 16;

/// Bytes of one activation buffer for chunks of `8 * nt` rows.
pub const fn gemm_x_stage_bytes(nt: usize) -> usize {
    8 * nt * GEMM_X_STRIDE * 2
}

/// Dynamic shared memory of a ZipGEMM block for chunks of `8 * nt` rows:
/// table, flag, activation buffers, then each warp's A stage.
pub const fn gemm_smem_bytes(nt: usize) -> usize {
    GEMM_TABLE_BYTES
        + GEMM_FLAG_BYTES
        + GEMM_X_STAGES * gemm_x_stage_bytes(nt)
        + GEMM_WARPS as usize * GEMM_A_STAGE_BYTES
}

/// One compiled variant of the `mma.sync` ZipGEMM (`zipgemm.rs`): its entry
/// point, the n-tiles of 8 activation rows it covers, and the resident blocks
/// per multiprocessor it is compiled for (PTX `.minnctapersm`, added by the
/// host's build script): ptxas then keeps the registers within 65536 /
/// (blocks · threads). Left to itself it took 72–94 (n8), 96–128 (n16) and
/// 119–136 (n32) registers depending on small source changes; these bounds
/// are the most blocks each fits without spilling.
///
/// `fetch_early`: when a warp issues its next tile's loads. Early (before
/// the barrier and the decode) gives them the longest flight but keeps two
/// tiles in registers; late (after this tile is decoded) frees those
/// registers, so more blocks fit. Measured on an H200: late is 10–20%
/// faster for one n-tile on grids that fill every slot (72 instead of 96
/// registers then), early is 10–20% faster for two or four, whose longer
/// MMA phase needs the head start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmaGemmVariant {
    pub name: &'static str,
    pub nt: usize,
    pub min_blocks_per_sm: u32,
    pub fetch_early: bool,
}

/// Every `mma.sync` ZipGEMM variant, narrowest first (of two with the same
/// width, the one that fits more blocks first): the one list the kernels'
/// entry points, the build script (launch bounds), the host (variant
/// choice) and the PTX tests follow.
pub const GEMM_VARIANTS: [MmaGemmVariant; 4] = [
    MmaGemmVariant {
        name: "zipserv_gemm_n8",
        nt: 1,
        min_blocks_per_sm: 8,
        fetch_early: false,
    },
    // For products too small to fill the late variant's wave (few row
    // groups, short K; the host's rule is `GemmVariant::choose`): there
    // each warp's chain of tiles, one memory round trip per tile with the
    // late fetch, is what takes the time.
    MmaGemmVariant {
        name: "zipserv_gemm_n8_early",
        nt: 1,
        // At 5, ptxas's 96-register cap spilled 8 bytes.
        min_blocks_per_sm: 4,
        fetch_early: true,
    },
    MmaGemmVariant {
        name: "zipserv_gemm_n16",
        nt: 2,
        min_blocks_per_sm: 4,
        fetch_early: true,
    },
    MmaGemmVariant {
        name: "zipserv_gemm_n32",
        nt: 4,
        min_blocks_per_sm: 4,
        fetch_early: true,
    },
];
/// n-tiles of the widest variant, the only one that takes several
/// activation chunks per launch.
pub const GEMM_WIDEST_NT: usize = GEMM_VARIANTS[GEMM_VARIANTS.len() - 1].nt;

// Every region starts 16-byte aligned (cp.async and vector accesses).
const _: () = assert!((GEMM_X_STRIDE * 2).is_multiple_of(16));
const _: () = assert!((GEMM_TABLE_BYTES + GEMM_FLAG_BYTES).is_multiple_of(16));
const _: () = assert!(GEMM_A_STAGE_BYTES.is_multiple_of(16));
// Small enough for several blocks per multiprocessor on any sm_80+ part.
const _: () = assert!(gemm_smem_bytes(4) <= 48 * 1024);

/// Warps per block of `zipserv_gemv_bf16` (`gemv`): they share the block's
/// [`GEMV_ROWS`] rows of W, each taking every [`GEMV_WARPS`]-th block of
/// [`GEMV_K_BLOCK`] columns, and add their sums in shared memory at the end.
pub const GEMV_WARPS: u32 = 8;
/// Rows of W per block of the BF16 matrix-vector product: the 16 rows of
/// one `mma.m16n8k16` A fragment.
pub const GEMV_ROWS: usize = 16;
/// Columns of W one `mma` pair consumes: 4 lanes per row × 8 BF16 (one
/// 16-byte load each).
pub const GEMV_K_BLOCK: usize = 32;
/// Column blocks a warp loads per step; the next step's are loaded before
/// this one's are multiplied, so up to twice this many are in flight.
pub const GEMV_UNROLL: usize = 2;
/// Most activation rows (`n`) of one product: the 8 columns of the `mma`
/// B fragment.
pub const GEMV_MAX_N: usize = 8;
/// Blocks per multiprocessor the GEMV's registers are fitted to (PTX
/// `.minnctapersm`, added by the host's build script): 85 registers, 24
/// warps; it takes 72. Under 4 blocks (64 registers) the loop over row
/// groups spilled 48 bytes.
pub const GEMV_MIN_BLOCKS_PER_SM: u32 = 3;
/// Static shared memory of a block: each warp's accumulator fragment, in
/// two slots that alternate between the row groups a block takes.
pub const GEMV_SMEM_BYTES: usize = 2 * GEMV_WARPS as usize * 32 * 4 * 4;
/// Shared memory of one warp of the compressed GEMV (`zipgemv`) for `n`
/// activation rows: its A stage and two activation buffers of `n` rows.
pub const fn zipgemv_warp_bytes(n: usize) -> usize {
    GEMM_A_STAGE_BYTES + 2 * n * crate::zipgemv::X_ROW_BYTES
}
/// Dynamic shared memory of a block of the compressed GEMV for `n`
/// activation rows: the BF16 GEMV's sum slots, the exception table, a row
/// of zeros (what `ldmatrix` reads for the rows from `n` to 8), and every
/// warp's own. (With buffers of 8 rows whatever `n`, 73 KB a block, the
/// GEMV gained less from launch overlap in the engine than the `mma.sync`
/// kernel did: docs/PERFORMANCE.md, "A compressed GEMV".)
pub const fn zipgemv_smem_bytes(n: usize) -> usize {
    GEMV_SMEM_BYTES
        + GEMM_TABLE_BYTES
        + crate::zipgemv::X_ROW_BYTES
        + GEMV_WARPS as usize * zipgemv_warp_bytes(n)
}
/// One compiled variant of the compressed GEMV: `nt` groups of 8
/// activation rows (one `mma` per k-step each), so `n ≤ 8 · nt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZipgemvVariant {
    pub name: &'static str,
    pub nt: usize,
    /// Blocks per multiprocessor its registers are fitted to
    /// (`.minnctapersm`, added by the host's build script).
    pub min_blocks_per_sm: u32,
}

impl ZipgemvVariant {
    /// Most activation rows it takes.
    pub const fn max_n(&self) -> usize {
        8 * self.nt
    }

    /// The most [`zipgemv_smem_bytes`] it asks for.
    pub const fn max_smem_bytes(&self) -> usize {
        zipgemv_smem_bytes(self.max_n())
    }
}

/// The compressed GEMV's variants, narrowest first: n ≤ 8 at three blocks
/// per multiprocessor; n ≤ 16 at two (its activation buffers of 16 rows
/// make a block 107 KB).
pub const ZIPGEMV_VARIANTS: [ZipgemvVariant; 2] = [
    ZipgemvVariant {
        name: "zipserv_zipgemv",
        nt: 1,
        min_blocks_per_sm: 3,
    },
    ZipgemvVariant {
        name: "zipserv_zipgemv_n16",
        nt: 2,
        min_blocks_per_sm: 2,
    },
];
/// Most activation rows of a compressed GEMV product.
pub const ZIPGEMV_MAX_N: usize = ZIPGEMV_VARIANTS[ZIPGEMV_VARIANTS.len() - 1].max_n();
// Each variant's blocks fit in the 228 KB of a Hopper multiprocessor (1 KB
// of it reserved per block) as often as its registers are fitted for.
const _: () = {
    let mut i = 0;
    while i < ZIPGEMV_VARIANTS.len() {
        let v = ZIPGEMV_VARIANTS[i];
        assert!(v.min_blocks_per_sm as usize * (v.max_smem_bytes() + 1024) <= 228 * 1024);
        i += 1;
    }
};

// Tried (commit `4b5fdad`, H200): W staged through a per-warp
// shared-memory ring of 4 steps by `cp.async` (3 in flight, 6 KB per warp
// against the 4 KB the registers hold): no faster anywhere (28672×4096 at
// N = 1 60.9 against 57.5 µs, 4096×14336 33.3 against 33.7), so more bytes
// in flight is not what the GEMV lacks; removed.

/// How a ZipGEMM launch deals out its work. A *unit* is one row group
/// ([`GEMM_WARPS`] row tiles of W), reduced over `col_tiles` column tiles.
/// The `units × col_tiles` (unit, column tile) pairs, unit-major, are cut
/// into `blocks` contiguous shares that differ by at most one tile
/// ("stream-K"); every chunk of activation rows runs the same shares, in
/// neighbouring blocks, so they read the same weights at the same time (the
/// later ones from L2). Any share count from 1 to the number of pairs is
/// valid: with one wave of resident blocks every multiprocessor gets the
/// same work, whatever the shape; a share that covers part of a unit leaves
/// partial sums, which the last block to finish that unit adds. (Measured
/// on an H200 with whole-unit blocks: 448 units on 528 block slots ran at
/// 10% less throughput than 528 units.)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkSplit {
    pub units: u32,
    pub col_tiles: u32,
    pub blocks: u32,
}

impl WorkSplit {
    /// Most blocks a launch may have: keeps [`WorkSplit::share_start`] in
    /// 32-bit arithmetic.
    pub const MAX_BLOCKS: u32 = u16::MAX as u32;

    /// Number of (unit, column tile) pairs (the host keeps it below 2^32).
    #[inline(always)]
    pub const fn pairs(&self) -> u32 {
        self.units * self.col_tiles
    }

    /// First pair of block `b`'s share, `⌊b · pairs / blocks⌋`; `b = blocks`
    /// gives the end. With `blocks = units · s` every unit is cut into
    /// exactly `s` shares. (Computed as `b·q + ⌊b·r / blocks⌋` with
    /// `pairs = q·blocks + r`, which stays below 2^32 for blocks ≤
    /// [`WorkSplit::MAX_BLOCKS`], so the kernels need no 64-bit division.)
    #[inline(always)]
    pub fn share_start(&self, b: u32) -> u32 {
        let blocks = nonzero(self.blocks);
        let (q, r) = (self.pairs() / blocks, self.pairs() % blocks);
        b * q + b * r / blocks
    }

    /// The blocks whose shares cover part of unit `u`, `first..=last`;
    /// `b` is one of them.
    #[inline(always)]
    pub fn unit_blocks(&self, u: u32, b: u32) -> (u32, u32) {
        // Whole slices per unit (the common case): no walk needed.
        let units = nonzero(self.units);
        if self.blocks % units == 0 && self.blocks / units <= self.col_tiles {
            let s = self.blocks / units;
            return (u * s, u * s + s - 1);
        }
        let (mut first, mut last) = (b, b);
        while first > 0 && self.share_start(first) > u * self.col_tiles {
            first -= 1;
        }
        while self.share_start(last + 1) < (u + 1) * self.col_tiles {
            last += 1;
        }
        (first, last)
    }

    /// Whether block `b`'s share starts inside a unit and goes on past
    /// that unit's end: its first segment is then a unit's tail with more
    /// segments to follow, and the Hopper kernel has that segment's arrival
    /// counted by a warp of its own while the consumers go on
    /// (`zipgemm_sm90::epilogue::publish_first`).
    #[inline(always)]
    pub fn defers_first_arrival(&self, b: u32) -> bool {
        let (start, end) = (self.share_start(b), self.share_start(b + 1));
        let kt0 = start % nonzero(self.col_tiles);
        kt0 != 0 && end - start > self.col_tiles - kt0
    }

    /// Whether block `b`'s share, which covers part of unit `u`, starts in
    /// an earlier unit: each block has two partial-sum slots, for the unit
    /// its share starts in (0) and the unit it ends in (1).
    #[inline(always)]
    pub fn starts_before(&self, b: u32, u: u32) -> bool {
        self.share_start(b) < u * self.col_tiles
    }
}

/// A divisor that cannot be zero (callers guarantee it; a zero divisor
/// becomes 1 instead of a panic path in the kernels).
#[inline(always)]
pub fn nonzero(d: u32) -> core::num::NonZeroU32 {
    core::num::NonZeroU32::new(d).unwrap_or(core::num::NonZeroU32::MIN)
}

/// `zipserv_gemm_*` output types.
pub const STORE_BF16: u32 = 0;
pub const STORE_F32: u32 = 1;
/// The bits of a `store` argument that pick the output type; the Hopper
/// ZipGEMM reads the bits above as flags.
pub const STORE_KIND_MASK: u32 = 0xFF;
/// Testing only (Hopper ZipGEMM): the finisher warp counts a deferred
/// first segment's arrival ~20 µs late, so its share nearly always
/// completes that unit and the reduction after the share's last segment
/// runs (`zipgemm_sm90::epilogue::finish_first`), a path that is otherwise
/// rare; `tests/gpu_zipgemm_sm90.rs` sets it through
/// `GemmOptions::late_first_count`.
pub const STORE_LATE_FIRST_COUNT: u32 = 1 << 8;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::{vec, vec::Vec};

    /// A share defers its first arrival exactly when its first segment is a
    /// unit's tail (partial) and another segment follows it in the share.
    #[test]
    fn deferred_first_arrivals_are_partial_first_segments_with_more_to_follow() {
        let mut deferred = 0;
        for units in [1u32, 3, 48, 224] {
            for col_tiles in [1u32, 4, 32, 112] {
                for blocks in [1u32, 7, 128, 132, 264, 500] {
                    let w = WorkSplit {
                        units,
                        col_tiles,
                        blocks,
                    };
                    if blocks > w.pairs() {
                        continue;
                    }
                    for b in 0..blocks {
                        let (start, end) = (w.share_start(b), w.share_start(b + 1));
                        let kt0 = start % col_tiles;
                        let first_end = ((start / col_tiles + 1) * col_tiles).min(end);
                        let partial = kt0 != 0 || first_end - start < col_tiles;
                        let more = first_end < end;
                        assert_eq!(
                            w.defers_first_arrival(b),
                            partial && more,
                            "{w:?} block {b}"
                        );
                        deferred += u32::from(partial && more);
                    }
                }
            }
        }
        assert!(deferred > 0);
    }

    /// Shares partition the pairs, and `unit_blocks` / `starts_before` agree with a
    /// direct walk over every block's share.
    #[test]
    fn work_split_shares_match_a_direct_walk() {
        for units in 1..40u32 {
            for col_tiles in 1..12u32 {
                let pairs = units * col_tiles;
                for blocks in 1..=pairs {
                    let w = WorkSplit {
                        units,
                        col_tiles,
                        blocks,
                    };
                    assert_eq!(w.share_start(0), 0);
                    assert_eq!(w.share_start(blocks), pairs);
                    let mut seen = vec![Vec::new(); units as usize];
                    for b in 0..blocks {
                        let (s, e) = (w.share_start(b), w.share_start(b + 1));
                        let exact = u64::from(b) * u64::from(pairs) / u64::from(blocks);
                        assert_eq!(u64::from(s), exact);
                        assert!(e > s, "empty share {w:?} b={b}");
                        for q in s..e {
                            let u = (q / col_tiles) as usize;
                            if seen[u].last() != Some(&b) {
                                seen[u].push(b);
                            }
                        }
                        let first_unit = s / col_tiles;
                        let last_unit = (e - 1) / col_tiles;
                        assert!(!w.starts_before(b, first_unit));
                        if last_unit != first_unit {
                            assert!(w.starts_before(b, last_unit));
                        }
                    }
                    for (u, blocks_of_u) in seen.iter().enumerate() {
                        let any = blocks_of_u[blocks_of_u.len() / 2];
                        let (first, last) = w.unit_blocks(u as u32, any);
                        let want: Vec<u32> = (first..=last).collect();
                        assert_eq!(blocks_of_u, &want, "{w:?} unit {u}");
                        if blocks % units == 0 && blocks / units <= col_tiles {
                            assert_eq!(want.len() as u32, blocks / units, "{w:?} unit {u}");
                        }
                    }
                }
            }
        }
    }
}
