//! Rotary position embedding (the "rotate half" convention of the Hugging
//! Face Llama), applied to Q in place and to K on its way into the KV cache,
//! with V copied beside it: one launch per layer and step.
//!
//! Dimension `i < d/2` of a head pairs with `i + d/2`; both turn by the angle
//! `pos · inv_freq[i]`. The host computes cos and sin of every angle once,
//! in f32 as the reference does (with the config's `rope_theta` and
//! scaling), into a table of `(cos, sin)` per position and `i`; the kernel
//! rounds them to BF16 and rounds each product, as the reference computes
//! `q·cos + rotate_half(q)·sin` in BF16.

use super::math::{bf16_to_f32, f32_to_bf16, round_bf16};

/// The pair `(x[i], x[i + d/2])` turned by the angle whose cosine and sine
/// are `cos`, `sin` (BF16 bits in and out).
#[inline(always)]
pub fn rotate(lo: u16, hi: u16, cos: f32, sin: f32) -> (u16, u16) {
    let (c, s) = (round_bf16(cos), round_bf16(sin));
    let (a, b) = (bf16_to_f32(lo), bf16_to_f32(hi));
    (
        f32_to_bf16(round_bf16(a * c) - round_bf16(b * s)),
        f32_to_bf16(round_bf16(b * c) + round_bf16(a * s)),
    )
}

/// Offset (in f32) of `(cos, sin)` for position `pos` and pair `i` in the
/// host's table of `half = head_dim / 2` pairs per position.
#[inline(always)]
pub const fn table_offset(pos: usize, i: usize, half: usize) -> usize {
    (pos * half + i) * 2
}

/// Offset (in elements) of head `kv_head`'s vector at position `pos` of
/// sequence `seq` in a layer's K (or V) cache: `[seq][kv_head][pos][d]`, so
/// attention reads one sequence's keys of one head contiguously.
#[inline(always)]
pub const fn cache_offset(
    seq: usize,
    kv_head: usize,
    pos: usize,
    kv_heads: usize,
    capacity: usize,
    head_dim: usize,
) -> usize {
    ((seq * kv_heads + kv_head) * capacity + pos) * head_dim
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::*;
    use crate::engine::ROW_THREADS;
    use crate::launch::nonzero;
    use crate::ptx::{block_idx, grid_dim_y, thread_idx, trap};

    /// For token row `r` (of sequence `row_seq[r]` at position
    /// `row_pos[r]`): rotates its Q heads in place, and writes its rotated K
    /// heads and its V heads into the caches at that position.
    ///
    /// # Safety
    /// Row `r`'s query heads start at `q + r * q_stride`, its key and value
    /// heads at `k + r * kv_stride`, `v + r * kv_stride` (one stacked Q/K/V
    /// product, or three separate ones). `q` holds rows × `q_stride` BF16,
    /// `k`, `v` rows × `kv_stride`, the strides at least q_heads × head_dim
    /// and kv_heads × head_dim; `row_seq`, `row_pos` `rows` u32; `table` capacity ×
    /// head_dim f32; the caches sequences × kv_heads × capacity × head_dim
    /// BF16; head_dim even. Grid (`rows`, any number of blocks sharing a
    /// row's work: [`super::super::ROPE_ROW_BLOCKS`]), block
    /// [`ROW_THREADS`]. A position or sequence out of range traps.
    #[unsafe(no_mangle)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe extern "ptx-kernel" fn engine_rope_kv(
        q: *mut u16,
        k: *const u16,
        v: *const u16,
        q_stride: u32,
        kv_stride: u32,
        row_seq: *const u32,
        row_pos: *const u32,
        table: *const f32,
        cache_k: *mut u16,
        cache_v: *mut u16,
        q_heads: u32,
        kv_heads: u32,
        head_dim: u32,
        capacity: u32,
        sequences: u32,
    ) {
        // Inputs may come from the kernel before (launch overlap).
        crate::ptx::start_after_prior_grids();
        let (r, part, _) = block_idx();
        let r = r as usize;
        // This block's share of the row: every `parts`-th stretch of
        // ROW_THREADS elements of each loop below.
        let (first, stride) = (
            part * ROW_THREADS + thread_idx(),
            grid_dim_y() * ROW_THREADS,
        );
        let d = head_dim as usize;
        let half = d / 2;
        let half_nz = nonzero(half as u32);
        let d_nz = nonzero(head_dim);
        // SAFETY: sequence and position are checked against the cache; every
        // other index stays inside the row's heads.
        unsafe {
            let (seq, pos) = (*row_seq.add(r), *row_pos.add(r));
            if seq >= sequences || pos >= capacity {
                trap();
            }
            let (seq, pos) = (seq as usize, pos as usize);
            let turn = |x: *mut u16, dst: *mut u16, i: usize| {
                let t = table.add(table_offset(pos, i, half));
                let (lo, hi) = rotate(*x, *x.add(half), *t, *t.add(1));
                *dst = lo;
                *dst.add(half) = hi;
            };
            let g_q = q.add(r * q_stride as usize);
            let mut j = first;
            while j < q_heads * half as u32 {
                let (head, i) = ((j / half_nz) as usize, (j % half_nz) as usize);
                let x = g_q.add(head * d + i);
                turn(x, x, i);
                j += stride;
            }
            let kv = kv_heads as usize;
            let cap = capacity as usize;
            let kv_row = r * kv_stride as usize;
            let (g_k, g_v) = (k.add(kv_row), v.add(kv_row));
            let mut j = first;
            while j < kv_heads * half as u32 {
                let (head, i) = ((j / half_nz) as usize, (j % half_nz) as usize);
                let dst = cache_k.add(cache_offset(seq, head, pos, kv, cap, d) + i);
                turn(g_k.add(head * d + i) as *mut u16, dst, i);
                j += stride;
            }
            let mut j = first;
            while j < kv_heads * head_dim {
                let (head, e) = ((j / d_nz) as usize, (j % d_nz) as usize);
                *cache_v.add(cache_offset(seq, head, pos, kv, cap, d) + e) = *g_v.add(head * d + e);
                j += stride;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn rotation_by_zero_is_identity_and_quarter_turn_swaps() {
        let (a, b) = (f32_to_bf16(0.75), f32_to_bf16(-1.5));
        assert_eq!(rotate(a, b, 1.0, 0.0), (a, b));
        // A quarter turn: (a, b) → (-b, a).
        assert_eq!(rotate(a, b, 0.0, 1.0), (f32_to_bf16(1.5), a));
    }

    #[test]
    fn rotation_keeps_the_norm() {
        let (a, b) = (f32_to_bf16(0.3), f32_to_bf16(0.9));
        let angle = 0.7f32;
        let (x, y) = rotate(a, b, angle.cos(), angle.sin());
        let n0 = bf16_to_f32(a).hypot(bf16_to_f32(b));
        let n1 = bf16_to_f32(x).hypot(bf16_to_f32(y));
        assert!((n0 - n1).abs() < 1e-2, "{n0} {n1}");
    }

    #[test]
    fn cache_rows_do_not_overlap() {
        let (kv, cap, d) = (3, 5, 8);
        let mut seen = std::collections::BTreeSet::new();
        for s in 0..2 {
            for h in 0..kv {
                for p in 0..cap {
                    let o = cache_offset(s, h, p, kv, cap, d);
                    assert_eq!(o % d, 0);
                    assert!(seen.insert(o));
                }
            }
        }
        assert_eq!(*seen.iter().last().unwrap(), (2 * kv * cap - 1) * d);
    }
}
