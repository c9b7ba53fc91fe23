//! Launch geometry shared by the kernels and the host code that launches
//! them, so block sizes, shared-memory layouts and output modes are defined
//! once.

use crate::format::{LANE_PAIRS, LANES, TILE_COLS};

/// Warps per block of `zipserv_decompress`; each warp takes whole tiles.
pub const DECOMPRESS_WARPS: u32 = 4;

/// Warps (row tiles of W) per block of `zipserv_gemm_*`; they share the
/// block's staged activations.
pub const GEMM_WARPS: u32 = 4;
/// Staged activation row in BF16: 8 extra elements make the B-fragment reads
/// of the eight lane groups hit distinct banks (row stride 68 words).
pub const GEMM_X_STRIDE: usize = TILE_COLS + 8;
/// Activation buffers: one being read, one being filled.
pub const GEMM_X_STAGES: usize = 2;
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

/// The n-tiles (of 8 activation rows) a ZipGEMM kernel variant covers.
pub const GEMM_NT: [usize; 3] = [1, 2, 4];

// Every region starts 16-byte aligned (cp.async and vector accesses).
const _: () = assert!((GEMM_X_STRIDE * 2).is_multiple_of(16));
const _: () = assert!((GEMM_TABLE_BYTES + GEMM_FLAG_BYTES).is_multiple_of(16));
const _: () = assert!(GEMM_A_STAGE_BYTES.is_multiple_of(16));
// Small enough for several blocks per multiprocessor on any sm_80+ part.
const _: () = assert!(gemm_smem_bytes(4) <= 48 * 1024);

/// `zipserv_gemm_*` output types.
pub const STORE_BF16: u32 = 0;
pub const STORE_F32: u32 = 1;
