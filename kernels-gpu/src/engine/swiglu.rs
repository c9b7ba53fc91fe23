//! The SwiGLU gate of the MLP: `silu(gate) ⊙ up`, rounded as the reference
//! rounds it (SiLU's output is BF16 before the product).

use super::math::{bf16_to_f32, f32_to_bf16, round_bf16, silu};

/// One element: `bf16(bf16(silu(gate)) · up)`.
#[inline(always)]
pub fn swiglu(gate: u16, up: u16) -> u16 {
    f32_to_bf16(round_bf16(silu(bf16_to_f32(gate))) * bf16_to_f32(up))
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::*;
    use crate::engine::ELEMENT_THREADS;
    use crate::ptx::{block_idx, grid_dim_x, thread_idx};

    /// `out[t, c] = swiglu(gate[t * in_stride + c], up[t * in_stride + c])`
    /// for the `len / cols` rows `t` of `cols` outputs (grid-stride):
    /// `in_stride` is `cols` for separate gate and up products, `2 * cols`
    /// for one stacked product (gate and up side by side in each row).
    ///
    /// # Safety
    /// `gate` and `up` hold `len / cols` rows of `in_stride` BF16, `out`
    /// `len`; `cols` divides `len`. Block [`ELEMENT_THREADS`].
    #[unsafe(no_mangle)]
    pub unsafe extern "ptx-kernel" fn engine_swiglu(
        gate: *const u16,
        up: *const u16,
        out: *mut u16,
        len: u32,
        cols: u32,
        in_stride: u32,
    ) {
        // Inputs may come from the kernel before (launch overlap).
        crate::ptx::start_after_prior_grids();
        let cols_nz = crate::launch::nonzero(cols);
        let mut i = block_idx().0 * ELEMENT_THREADS + thread_idx();
        let stride = grid_dim_x() * ELEMENT_THREADS;
        while i < len {
            let k = (i / cols_nz * in_stride + i % cols_nz) as usize;
            // SAFETY: k is inside row i / cols of the inputs; i < len.
            unsafe { *out.add(i as usize) = swiglu(*gate.add(k), *up.add(k)) };
            i += stride;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_of_simple_values() {
        let one = f32_to_bf16(1.0);
        assert_eq!(swiglu(f32_to_bf16(0.0), one), f32_to_bf16(0.0));
        // silu(1) = 0.7311 → BF16 0.73046875.
        assert_eq!(
            bf16_to_f32(swiglu(one, f32_to_bf16(2.0))),
            2.0 * 0.730_468_75
        );
        assert_eq!(bf16_to_f32(swiglu(f32_to_bf16(-100.0), one)), -0.0);
    }
}
