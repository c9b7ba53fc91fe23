//! Causal attention with grouped-query heads, for prefill and decode alike:
//! each query row (a token of sequence `s` at position `p`) attends to
//! positions `0..=p` of its sequence in the KV cache, which
//! [`super::rope`]'s kernel has filled up to `p` first. A prefill launches
//! one row per prompt token, a decode step one row per sequence; sequences
//! of different lengths share a launch.
//!
//! One block per (row, query head): its [`ATTN_WARPS`] warps take every
//! `ATTN_WARPS`-th key, each keeping an online softmax (running maximum,
//! running sum, weighted sum of values) with the head's dimensions spread
//! over the lanes; the warps' partial states are merged at the end. Scores,
//! probabilities and sums are f32. Simple, not fast: a decode step's
//! attention reads each key once per query head of its group.

use super::math::exp;

/// Warps per block, each taking every `ATTN_WARPS`-th key.
pub const ATTN_WARPS: u32 = 8;
/// Largest head dimension: 8 dimensions per lane.
pub const ATTN_MAX_HEAD_DIM: u32 = 256;
/// Dimensions per lane at most.
pub const ATTN_LANE_DIMS: usize = ATTN_MAX_HEAD_DIM as usize / 32;
/// Shared memory of a block: per warp its maximum, its sum and its
/// weighted values (`ATTN_MAX_HEAD_DIM` f32).
pub const ATTN_SMEM_BYTES: usize = ATTN_WARPS as usize * (2 + ATTN_MAX_HEAD_DIM as usize) * 4;

/// Running softmax over the scores seen so far: their maximum and
/// `Σ exp(score − max)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OnlineSoftmax {
    pub max: f32,
    pub sum: f32,
}

impl OnlineSoftmax {
    /// No score yet.
    pub const EMPTY: Self = Self {
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };

    /// Takes a (finite) score; returns the factor by which the weighted sum
    /// so far must be scaled (the maximum moved) and the weight of the new
    /// score's value.
    #[inline(always)]
    pub fn push(&mut self, score: f32) -> (f32, f32) {
        let max = self.max.max(score);
        // exp(−inf − max) = 0: the first score clears the empty state.
        let rescale = exp(self.max - max);
        let weight = exp(score - max);
        self.sum = self.sum * rescale + weight;
        self.max = max;
        (rescale, weight)
    }

    /// Weight of a partial state whose maximum is `part_max` in a merge
    /// whose overall maximum is `max` (0 for a part that saw no score).
    #[inline(always)]
    pub fn merge_weight(part_max: f32, max: f32) -> f32 {
        if part_max == f32::NEG_INFINITY {
            0.0
        } else {
            exp(part_max - max)
        }
    }
}

/// The KV head query head `head` reads: query heads are grouped, `group =
/// q_heads / kv_heads` consecutive ones per KV head (as the reference's
/// `repeat_kv` lays them out).
#[inline(always)]
pub fn kv_head_of(head: u32, group: core::num::NonZeroU32) -> u32 {
    head / group
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::*;
    use crate::engine::math::{bf16_to_f32, f32_to_bf16};
    use crate::engine::reduce::warp_sum;
    use crate::engine::rope::cache_offset;
    use crate::launch::nonzero;
    use crate::ptx::{
        block_idx, ld_shared_u32, shared_memory, st_shared_u32, sync_threads, thread_idx, trap,
    };

    /// `out[r, head, :] = softmax(scale · q·Kᵀ) V` over positions
    /// `0..=row_pos[r]` of sequence `row_seq[r]`.
    ///
    /// # Safety
    /// `q` and `out` hold rows × q_heads × head_dim BF16; `row_seq`,
    /// `row_pos` `rows` u32; the caches sequences × kv_heads × capacity ×
    /// head_dim BF16, filled up to each row's position. head_dim is a
    /// multiple of 32 and at most [`ATTN_MAX_HEAD_DIM`]; kv_heads divides
    /// q_heads. Grid (rows, q_heads), block `32 * ATTN_WARPS`. A position
    /// or sequence out of range traps.
    #[unsafe(no_mangle)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe extern "ptx-kernel" fn engine_attention(
        q: *const u16,
        out: *mut u16,
        row_seq: *const u32,
        row_pos: *const u32,
        cache_k: *const u16,
        cache_v: *const u16,
        q_heads: u32,
        kv_heads: u32,
        head_dim: u32,
        capacity: u32,
        sequences: u32,
        scale: f32,
    ) {
        let s_all = shared_memory::<ATTN_SMEM_BYTES>();
        let s_max = s_all; // (ATTN_WARPS) f32
        let s_sum = s_all + 4 * ATTN_WARPS; // (ATTN_WARPS) f32
        let s_acc = s_all + 8 * ATTN_WARPS; // (ATTN_WARPS, ATTN_MAX_HEAD_DIM) f32
        let (r, head, _) = block_idx();
        let (warp, lane) = (thread_idx() / 32, thread_idx() % 32);
        let d = head_dim as usize;
        let per_lane = head_dim / 32;
        // SAFETY: sequence and position are checked against the cache; lane
        // dimensions stay below head_dim; shared addresses inside s_all.
        unsafe {
            let (seq, pos) = (*row_seq.add(r as usize), *row_pos.add(r as usize));
            if seq >= sequences || pos >= capacity {
                trap();
            }
            let kvh = kv_head_of(head, nonzero(q_heads / nonzero(kv_heads))) as usize;
            let g_q = q.add((r as usize * q_heads as usize + head as usize) * d);
            let first_dim = (lane * per_lane) as usize;
            let mut r_q = [0f32; ATTN_LANE_DIMS];
            seq_macro::seq!(E in 0..8 {
                if E < per_lane {
                    r_q[E] = bf16_to_f32(*g_q.add(first_dim + E)) * scale;
                }
            });
            // fetch + score + accumulate, two keys per warp at a time: both
            // keys' loads and shuffle reductions are independent, so their
            // latencies overlap (one key at a time left each warp waiting on
            // one load and one reduction chain per key).
            let mut state = OnlineSoftmax::EMPTY;
            let mut r_acc = [0f32; ATTN_LANE_DIMS];
            let (kv, cap) = (kv_heads as usize, capacity as usize);
            let row_of =
                |j: u32| cache_offset(seq as usize, kvh, j as usize, kv, cap, d) + first_dim;
            let mut j = warp;
            while j <= pos {
                let j2 = j + ATTN_WARPS;
                let two = j2 <= pos; // warp-uniform
                let (a1, a2) = (row_of(j), row_of(if two { j2 } else { j }));
                let mut r_v1 = [0f32; ATTN_LANE_DIMS];
                let mut r_v2 = [0f32; ATTN_LANE_DIMS];
                let (mut dot1, mut dot2) = (0.0f32, 0.0f32);
                seq_macro::seq!(E in 0..8 {
                    if E < per_lane {
                        dot1 += r_q[E] * bf16_to_f32(*cache_k.add(a1 + E));
                        dot2 += r_q[E] * bf16_to_f32(*cache_k.add(a2 + E));
                        r_v1[E] = bf16_to_f32(*cache_v.add(a1 + E));
                        r_v2[E] = bf16_to_f32(*cache_v.add(a2 + E));
                    }
                });
                let (s1, s2) = (warp_sum(dot1), warp_sum(dot2));
                let (rescale, weight) = state.push(s1);
                seq_macro::seq!(E in 0..8 {
                    if E < per_lane {
                        r_acc[E] = r_acc[E] * rescale + weight * r_v1[E];
                    }
                });
                if two {
                    let (rescale, weight) = state.push(s2);
                    seq_macro::seq!(E in 0..8 {
                        if E < per_lane {
                            r_acc[E] = r_acc[E] * rescale + weight * r_v2[E];
                        }
                    });
                }
                j += 2 * ATTN_WARPS;
            }
            // merge the warps' partial states
            if lane == 0 {
                st_shared_u32(s_max + 4 * warp, state.max.to_bits());
                st_shared_u32(s_sum + 4 * warp, state.sum.to_bits());
            }
            let s_warp = s_acc + warp * ATTN_MAX_HEAD_DIM * 4;
            seq_macro::seq!(E in 0..8 {
                if E < per_lane {
                    st_shared_u32(s_warp + 4 * (first_dim as u32 + E), r_acc[E].to_bits());
                }
            });
            sync_threads();
            let mut max = f32::NEG_INFINITY;
            let mut w = 0;
            while w < ATTN_WARPS {
                max = max.max(f32::from_bits(ld_shared_u32(s_max + 4 * w)));
                w += 1;
            }
            let g_out = out.add((r as usize * q_heads as usize + head as usize) * d);
            let mut e = thread_idx();
            while e < head_dim {
                let (mut sum, mut value) = (0.0f32, 0.0f32);
                let mut w = 0;
                while w < ATTN_WARPS {
                    let part = f32::from_bits(ld_shared_u32(s_max + 4 * w));
                    let weight = OnlineSoftmax::merge_weight(part, max);
                    sum += weight * f32::from_bits(ld_shared_u32(s_sum + 4 * w));
                    let a = s_acc + (w * ATTN_MAX_HEAD_DIM + e) * 4;
                    value += weight * f32::from_bits(ld_shared_u32(a));
                    w += 1;
                }
                *g_out.add(e as usize) = f32_to_bf16(value / sum);
                e += 32 * ATTN_WARPS;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Online softmax, split over parts and merged, equals the direct one.
    #[test]
    fn online_softmax_split_and_merged_matches_direct() {
        let scores: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 * 0.41 - 4.0)
            .collect();
        let values: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).sin()).collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let den: f64 = scores.iter().map(|&s| (s as f64 - max).exp()).sum();
        let num: f64 = scores
            .iter()
            .zip(&values)
            .map(|(&s, &v)| (s as f64 - max).exp() * v as f64)
            .sum();
        let want = num / den;
        for parts in [1usize, 4, 5, 40] {
            let mut states = std::vec![OnlineSoftmax::EMPTY; parts];
            let mut acc = std::vec![0f32; parts];
            for (j, (&s, &v)) in scores.iter().zip(&values).enumerate() {
                let (rescale, weight) = states[j % parts].push(s);
                acc[j % parts] = acc[j % parts] * rescale + weight * v;
            }
            let m = states
                .iter()
                .map(|s| s.max)
                .fold(f32::NEG_INFINITY, f32::max);
            let (mut sum, mut value) = (0f32, 0f32);
            for (s, a) in states.iter().zip(&acc) {
                let w = OnlineSoftmax::merge_weight(s.max, m);
                sum += w * s.sum;
                value += w * a;
            }
            let got = (value / sum) as f64;
            assert!((got - want).abs() < 1e-6, "parts {parts}: {got} vs {want}");
        }
    }

    #[test]
    fn query_heads_map_to_their_group() {
        let g = core::num::NonZeroU32::new(3).unwrap();
        let heads: Vec<u32> = (0..9).map(|h| kv_head_of(h, g)).collect();
        assert_eq!(heads, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }
}
