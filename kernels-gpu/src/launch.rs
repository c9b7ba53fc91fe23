//! Launch geometry shared by the kernels and the host code that launches
//! them, so block sizes and output modes are defined once.

/// Warps per block of `zipserv_decompress`; each warp takes whole tiles.
pub const DECOMPRESS_WARPS: u32 = 4;

/// Warps (row tiles of W) per block of `zipserv_gemm_*`; they share the
/// block's staged activations.
pub const GEMM_WARPS: u32 = 4;

/// `zipserv_gemm_*` output modes.
pub const STORE_BF16: u32 = 0;
pub const STORE_F32: u32 = 1;
/// Split K: add f32 partial sums atomically into a zeroed f32 buffer.
pub const STORE_F32_ATOMIC: u32 = 2;

/// Threads per block of `zipserv_f32_to_bf16`.
pub const CONVERT_THREADS: u32 = 256;
