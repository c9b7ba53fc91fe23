//! Kernels of the inference engine other than the matrix products: token
//! embedding, RMSNorm with the residual add, rotary embedding with the KV
//! cache write, attention, SwiGLU, and token selection (argmax, top-p).
//!
//! Each file holds one kernel and the per-element math it is made of. The
//! math is plain `#[inline]` Rust, compiled for the host too, so the CPU
//! tests check the very functions the GPU runs; only the entry points and
//! their thread bookkeeping are nvptx-only. Launch geometry (threads per
//! block, shared-memory sizes, limits) is defined here once, for kernels and
//! host launchers alike.
//!
//! Numerics: every sum and product is computed in f32. Where the Hugging
//! Face reference rounds an intermediate to BF16 (the residual stream, the
//! normalised activations before the norm weight, RoPE's two products), the
//! kernels round at the same place, so that BF16 runs of both agree as
//! closely as the different summation orders allow.

pub mod attention;
pub mod attention_mma;
pub mod embedding;
pub mod math;
#[cfg(target_arch = "nvptx64")]
mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
pub mod swiglu;

/// Threads per block of the row-wise kernels (RMSNorm, embedding, RoPE,
/// sampling): one block per row.
pub const ROW_THREADS: u32 = 256;
/// Warps of [`ROW_THREADS`].
pub const ROW_WARPS: usize = ROW_THREADS as usize / 32;
/// Blocks per token row of the RoPE kernel: at batch 1 one block looped
/// ~14 times over a Llama-3-8B token's 32 query and 8 key heads (8 µs per
/// launch, profiled, commit d443b02); four share it.
pub const ROPE_ROW_BLOCKS: u32 = 4;
/// Threads per block of the element-wise kernels (SwiGLU).
pub const ELEMENT_THREADS: u32 = 256;
