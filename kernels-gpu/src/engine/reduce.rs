//! Warp and block reductions of the engine kernels (GPU only). Every thread
//! of a block gets the same result, summed in the same order, so threads
//! that branch on it agree.

use crate::ptx::{ld_shared_u32, shfl_idx, st_shared_u32, sync_threads, thread_idx};

/// Bytes of block scratch a reduction needs: one word per warp.
pub const fn scratch_bytes(warps: usize) -> usize {
    4 * warps
}

/// Sum of `v` over the warp (butterfly: every lane ends with the total).
/// All 32 lanes must call it together.
#[inline(always)]
pub fn warp_sum(v: f32) -> f32 {
    let lane = thread_idx() % 32;
    let mut v = v;
    let mut m = 16;
    while m > 0 {
        v += f32::from_bits(shfl_idx(v.to_bits(), lane ^ m));
        m >>= 1;
    }
    v
}

/// Sum over a block of `warps` warps. `s_scratch` is [`scratch_bytes`] of
/// shared memory; every thread must call it (it holds two barriers).
///
/// # Safety
/// `s_scratch` addresses `4 * warps` bytes of this block's shared memory.
#[inline(always)]
pub unsafe fn block_sum(v: f32, s_scratch: u32, warps: usize) -> f32 {
    let w = warp_sum(v);
    let (warp, lane) = (thread_idx() / 32, thread_idx() % 32);
    // SAFETY: warp < warps, inside the caller's scratch.
    unsafe {
        if lane == 0 {
            st_shared_u32(s_scratch + 4 * warp, w.to_bits());
        }
        sync_threads();
        let mut total = 0.0;
        let mut i = 0;
        while i < warps as u32 {
            total += f32::from_bits(ld_shared_u32(s_scratch + 4 * i));
            i += 1;
        }
        // The scratch may be reused right after.
        sync_threads();
        total
    }
}
