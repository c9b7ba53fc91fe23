//! Launch geometry shared by the kernels and the host code that launches
//! them, so block sizes, shared-memory layouts and output modes are defined
//! once.

use crate::format::{LANES, LANE_PAIRS, TILE_BYTES, TILE_COLS};

/// Warps per block of `zipserv_decompress`; each warp takes whole tiles.
pub const DECOMPRESS_WARPS: u32 = 4;

/// Warps (row tiles of W) per block of `zipserv_gemm_*`; they share the
/// block's staged activations.
pub const GEMM_WARPS: u32 = 4;
/// Compressed tiles each ZipGEMM warp keeps in flight (`cp.async` into
/// shared memory, so the queue costs no registers).
pub const GEMM_PIPELINE: usize = 3;
/// Staged activation row in BF16: 8 extra elements make the B-fragment reads
/// of the eight lane groups hit distinct banks (row stride 68 words).
pub const GEMM_X_STRIDE: usize = TILE_COLS + 8;
/// Activation buffers: one being read, one being filled.
pub const GEMM_X_STAGES: usize = 2;
/// One warp's decoded tile in fragment order (see `zipgemm`).
pub const GEMM_A_STAGE_BYTES: usize = LANES * LANE_PAIRS * 4;
/// The exception table, padded to 32 entries (and to 128 bytes so what
/// follows stays 128-byte aligned).
pub const GEMM_TABLE_BYTES: usize = 128;

/// Bytes of one activation buffer for chunks of `8 * nt` rows.
pub const fn gemm_x_stage_bytes(nt: usize) -> usize {
    8 * nt * GEMM_X_STRIDE * 2
}

/// Bytes of one warp's private shared memory: its A stage and tile queue.
pub const GEMM_WARP_BYTES: usize = GEMM_A_STAGE_BYTES + GEMM_PIPELINE * TILE_BYTES;

/// Dynamic shared memory of a ZipGEMM block for chunks of `8 * nt` rows:
/// table, activation buffers, then each warp's A stage and tile queue.
pub const fn gemm_smem_bytes(nt: usize) -> usize {
    GEMM_TABLE_BYTES + GEMM_X_STAGES * gemm_x_stage_bytes(nt) + GEMM_WARPS as usize * GEMM_WARP_BYTES
}

/// The n-tiles (of 8 activation rows) a ZipGEMM kernel variant covers.
pub const GEMM_NT: [usize; 3] = [1, 2, 4];

// Every region starts 16-byte aligned (cp.async and vector accesses).
const _: () = assert!((GEMM_X_STRIDE * 2).is_multiple_of(16));
const _: () = assert!(GEMM_WARP_BYTES.is_multiple_of(16) && TILE_BYTES.is_multiple_of(16));
// Fits the 227 KB a Hopper or Ampere (A100) block can opt into.
const _: () = assert!(gemm_smem_bytes(4) <= 227 * 1024);

/// `zipserv_gemm_*` output types.
pub const STORE_BF16: u32 = 0;
pub const STORE_F32: u32 = 1;
