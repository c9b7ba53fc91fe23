//! The residual add and RMSNorm of a transformer block, fused: for each row,
//! `h ← h + δ` (in BF16, as the reference's residual stream), then
//! `out = w ⊙ (h / √(mean(h²) + ε))`.
//!
//! Rounding as the Hugging Face Llama reference does it: the sum is rounded
//! to BF16 (its residual stream is BF16), the normalised value is rounded to
//! BF16 before the weight multiplies it, and the product is rounded again.

use super::math::{bf16_to_f32, f32_to_bf16, round_bf16, rsqrt};

/// The residual stream after adding `delta` (BF16 bits in, BF16 bits out).
#[inline(always)]
pub fn residual_add(h: u16, delta: u16) -> u16 {
    f32_to_bf16(bf16_to_f32(h) + bf16_to_f32(delta))
}

/// `1/√(mean + ε)` from the row's sum of squares over `cols` values.
#[inline(always)]
pub fn inverse_rms(sum_squares: f32, cols: u32, eps: f32) -> f32 {
    rsqrt(sum_squares / cols as f32 + eps)
}

/// One output element: weight × (h · inverse RMS), with the reference's two
/// BF16 roundings.
#[inline(always)]
pub fn normalize(h: u16, weight: u16, inv_rms: f32) -> u16 {
    f32_to_bf16(bf16_to_f32(weight) * round_bf16(bf16_to_f32(h) * inv_rms))
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::*;
    use crate::engine::reduce::{block_sum, scratch_bytes};
    use crate::engine::{ROW_THREADS, ROW_WARPS};
    use crate::ptx::{block_idx, shared_memory, thread_idx};

    /// For each of the `rows` rows of `h` (`cols` BF16 each): when `delta`
    /// is not null, `h += delta` in place; then `out = rmsnorm(h) ⊙ weight`.
    ///
    /// # Safety
    /// `h`, `out` (and `delta` unless null) hold `rows × cols` BF16, `weight`
    /// `cols`; `out` does not overlap `h`. Grid `rows`, block [`ROW_THREADS`].
    #[unsafe(no_mangle)]
    pub unsafe extern "ptx-kernel" fn engine_add_rmsnorm(
        h: *mut u16,
        delta: *const u16,
        weight: *const u16,
        out: *mut u16,
        cols: u32,
        eps: f32,
    ) {
        let s_scratch = shared_memory::<{ scratch_bytes(ROW_WARPS) }>();
        let row = block_idx().0 as usize * cols as usize;
        // SAFETY: every index is below cols within row `row` (grid = rows).
        unsafe {
            let (g_h, g_out) = (h.add(row), out.add(row));
            let mut sum = 0.0f32;
            let mut c = thread_idx();
            while c < cols {
                let p = g_h.add(c as usize);
                let mut v = *p;
                if !delta.is_null() {
                    v = residual_add(v, *delta.add(row + c as usize));
                    *p = v;
                }
                let x = bf16_to_f32(v);
                sum += x * x;
                c += ROW_THREADS;
            }
            let inv = inverse_rms(block_sum(sum, s_scratch, ROW_WARPS), cols, eps);
            // Each thread reads back only the elements it wrote itself.
            let mut c = thread_idx();
            while c < cols {
                let i = c as usize;
                *g_out.add(i) = normalize(*g_h.add(i), *weight.add(i), inv);
                c += ROW_THREADS;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn normalized_row_has_unit_rms() {
        let h: Vec<u16> = (0..64)
            .map(|i| f32_to_bf16((i as f32 - 30.0) * 0.37))
            .collect();
        let ss: f32 = h.iter().map(|&v| bf16_to_f32(v).powi(2)).sum();
        let inv = inverse_rms(ss, 64, 1e-6);
        let ones = f32_to_bf16(1.0);
        let y: Vec<f32> = h
            .iter()
            .map(|&v| bf16_to_f32(normalize(v, ones, inv)))
            .collect();
        let rms = (y.iter().map(|v| (v * v) as f64).sum::<f64>() / 64.0).sqrt();
        assert!((rms - 1.0).abs() < 4e-3, "{rms}");
        // The weight scales the output.
        let two = f32_to_bf16(2.0);
        assert_eq!(bf16_to_f32(normalize(h[3], two, inv)), 2.0 * y[3]);
    }

    #[test]
    fn residual_add_rounds_to_bf16() {
        let a = f32_to_bf16(1.0);
        let b = f32_to_bf16(1.0 / 512.0); // half an ulp of 1.0 in BF16
        assert_eq!(residual_add(a, b), a); // tie to even
        assert_eq!(residual_add(b, b), f32_to_bf16(2.0 / 512.0));
    }
}
