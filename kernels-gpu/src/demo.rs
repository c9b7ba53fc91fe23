//! Smallest proof of the whole chain: one warp computes one 16×8 tile with
//! one `mma.sync`. The host checks it against a CPU product.

use crate::ptx::{lane_id, mma_bf16_16816};

/// `d[16×8] = a[16×16] · b[16×8]` with `a` row-major bf16, `b` given as its
/// transpose `bt[8×16]` row-major (the "col" operand of `mma`), `d` row-major f32.
///
/// # Safety
/// Launch with one block of 32 threads; `a` holds 256 bf16, `bt` 128 bf16,
/// `d` room for 128 f32.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn demo_mma_16x8x16(a: *const u16, bt: *const u16, d: *mut f32) {
    let lane = lane_id() as usize;
    let group = lane / 4; // row within an 8-row half of the A tile
    let pair = lane % 4; // which pair of columns
    // SAFETY: indices stay inside the sizes the caller guarantees.
    unsafe {
        let ld2 = |p: *const u16, row: usize, col: usize, stride: usize| -> u32 {
            let lo = *p.add(row * stride + col) as u32;
            let hi = *p.add(row * stride + col + 1) as u32;
            lo | (hi << 16)
        };
        let a_frag = [
            ld2(a, group, 2 * pair, 16),
            ld2(a, group + 8, 2 * pair, 16),
            ld2(a, group, 2 * pair + 8, 16),
            ld2(a, group + 8, 2 * pair + 8, 16),
        ];
        let b_frag = [
            ld2(bt, group, 2 * pair, 16),
            ld2(bt, group, 2 * pair + 8, 16),
        ];
        let c = mma_bf16_16816(a_frag, b_frag, [0.0; 4]);
        *d.add(group * 8 + 2 * pair) = c[0];
        *d.add(group * 8 + 2 * pair + 1) = c[1];
        *d.add((group + 8) * 8 + 2 * pair) = c[2];
        *d.add((group + 8) * 8 + 2 * pair + 1) = c[3];
    }
}
