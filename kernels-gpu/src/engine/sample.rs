//! Choosing each sequence's next token from its logits, on the GPU so the
//! whole decode step (and its CUDA graph) stays on the device: greedy
//! (argmax, lowest index on ties) when the temperature is 0, otherwise
//! temperature and top-p (nucleus) sampling with a counter-based random
//! number per (seed, sequence, step), so a seed reproduces a run.
//!
//! Top-p without a sort: with `e_i = exp((x_i − max) / T)` (so the most
//! likely token has `e = 1`), the kept set is `{i : e_i ≥ τ}` for the largest
//! `τ` whose kept mass is at least `top_p · Σe`, found by bisecting `τ` in
//! `[0, 1]` for [`TOP_P_STEPS`] steps (each one pass over the vocabulary).
//! That is the reference's "smallest set of most likely tokens whose
//! probability reaches top_p", except that tokens tied at the threshold are
//! all kept and the threshold is known to 2^-32 of the top probability. The
//! token is then drawn from the kept set in vocabulary order.

use super::math::exp;

/// Bisection steps of the top-p threshold.
pub const TOP_P_STEPS: u32 = 32;

/// A uniform number in `[0, 1)` (24 random bits) for `(seed, seq, step)`:
/// SplitMix64's output function over the three inputs, so nearby counters
/// give unrelated numbers.
#[inline(always)]
pub fn uniform(seed: u64, seq: u32, step: u32) -> f32 {
    let counter = (u64::from(seq) << 32 | u64::from(step)).wrapping_add(1);
    let mut z = seed.wrapping_add(counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// Whether `(value, index)` beats `(best, best_index)` for argmax: larger,
/// or equal with a lower index. NaN never wins.
#[inline(always)]
pub fn beats(value: f32, index: u32, best: f32, best_index: u32) -> bool {
    value > best || (value == best && index < best_index)
}

/// The unnormalised probability of a logit: `exp((x − max) · 1/T)` ∈ (0, 1].
#[inline(always)]
pub fn weight(logit: f32, max: f32, inv_temperature: f32) -> f32 {
    exp((logit - max) * inv_temperature)
}

/// The CPU version of the GPU's choice for one sequence, for tests: the same
/// per-element functions and the same bisection, summed in plain order (the
/// GPU sums in a tree, so a weight within rounding of the threshold may
/// fall on the other side; tests allow for that).
pub fn select_reference(logits: &[f32], temperature: f32, top_p: f32, u: f32) -> u32 {
    let (mut best, mut arg) = (f32::NEG_INFINITY, 0u32);
    for (i, &x) in logits.iter().enumerate() {
        if beats(x, i as u32, best, arg) {
            (best, arg) = (x, i as u32);
        }
    }
    if temperature <= 0.0 {
        return arg;
    }
    let inv_t = 1.0 / temperature;
    let w = |i: usize| weight(logits[i], best, inv_t);
    let mass = |tau: f32| -> f32 { (0..logits.len()).map(w).filter(|&e| e >= tau).sum() };
    let total = mass(0.0);
    let tau = if top_p < 1.0 {
        let target = top_p * total;
        let (mut lo, mut hi) = (0.0f32, 1.0f32);
        if mass(1.0) >= target {
            lo = 1.0;
        } else {
            for _ in 0..TOP_P_STEPS {
                let mid = 0.5 * (lo + hi);
                if mass(mid) >= target {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        }
        lo
    } else {
        0.0
    };
    let kept = mass(tau);
    let r = u * kept;
    let mut acc = 0.0f32;
    let mut last = arg;
    for i in 0..logits.len() {
        let e = w(i);
        if e >= tau {
            acc += e;
            last = i as u32;
            if acc > r {
                return i as u32;
            }
        }
    }
    last
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::*;
    use crate::engine::reduce::block_sum;
    use crate::engine::{ROW_THREADS, ROW_WARPS};
    use crate::ptx::{
        block_idx, grid_dim_x, ld_shared_u32, shared_memory, shfl_idx, st_shared_u32, sync_threads,
        thread_idx,
    };

    /// Shared memory: per warp a (value, index) pair for the argmax, then
    /// one f32 per thread for the chunk sums, then the chosen token.
    const SMEM_BYTES: usize = ROW_WARPS * 8 + ROW_THREADS as usize * 4 + 16;

    /// Picks the next token of each of the `batch` sequences (one block
    /// each) from `logits` (batch × vocab f32): writes it to `tokens[b]`
    /// (the next step's input) and to `history[step · batch + b]` while
    /// `step = state[0] < max_steps`. `probs` (batch × vocab f32) is scratch
    /// for the weights when sampling.
    ///
    /// # Safety
    /// Buffers as described; grid `batch`, block [`ROW_THREADS`]; vocab ≥ 1.
    #[unsafe(no_mangle)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe extern "ptx-kernel" fn engine_select(
        logits: *const f32,
        vocab: u32,
        probs: *mut f32,
        temperature: f32,
        top_p: f32,
        seed: u64,
        state: *const u32,
        tokens: *mut u32,
        history: *mut u32,
        max_steps: u32,
    ) {
        // Inputs may come from the kernel before (launch overlap).
        crate::ptx::start_after_prior_grids();
        let s_all = shared_memory::<SMEM_BYTES>();
        let s_pairs = s_all; // (ROW_WARPS) × (value, index)
        let s_chunks = s_all + 8 * ROW_WARPS as u32; // (ROW_THREADS) f32
        let s_choice = s_chunks + 4 * ROW_THREADS;
        let b = block_idx().0;
        let batch = grid_dim_x();
        let (tid, warp, lane) = (thread_idx(), thread_idx() / 32, thread_idx() % 32);
        // SAFETY: every index is below vocab in row b; shared addresses
        // inside s_all.
        unsafe {
            let g_x = logits.add(b as usize * vocab as usize);
            // argmax
            let (mut best, mut arg) = (f32::NEG_INFINITY, u32::MAX);
            let mut i = tid;
            while i < vocab {
                let x = *g_x.add(i as usize);
                if beats(x, i, best, arg) {
                    (best, arg) = (x, i);
                }
                i += ROW_THREADS;
            }
            let mut m = 16;
            while m > 0 {
                let other = f32::from_bits(shfl_idx(best.to_bits(), lane ^ m));
                let other_arg = shfl_idx(arg, lane ^ m);
                if beats(other, other_arg, best, arg) {
                    (best, arg) = (other, other_arg);
                }
                m >>= 1;
            }
            if lane == 0 {
                st_shared_u32(s_pairs + 8 * warp, best.to_bits());
                st_shared_u32(s_pairs + 8 * warp + 4, arg);
            }
            sync_threads();
            let mut w = 0;
            while w < ROW_WARPS as u32 {
                let other = f32::from_bits(ld_shared_u32(s_pairs + 8 * w));
                let other_arg = ld_shared_u32(s_pairs + 8 * w + 4);
                if beats(other, other_arg, best, arg) {
                    (best, arg) = (other, other_arg);
                }
                w += 1;
            }
            // All logits NaN: token 0 rather than an out-of-range id.
            if arg >= vocab {
                arg = 0;
            }
            let mut token = arg;
            if temperature > 0.0 {
                token = sample(
                    g_x,
                    vocab,
                    probs,
                    b,
                    best,
                    arg,
                    temperature,
                    top_p,
                    seed,
                    state,
                    s_chunks,
                    s_choice,
                );
            }
            if tid == 0 {
                *tokens.add(b as usize) = token;
                let step = *state;
                if step < max_steps {
                    *history.add(step as usize * batch as usize + b as usize) = token;
                }
            }
        }
    }

    /// The sampling half of [`engine_select`]; every thread of the block
    /// calls it and gets the token.
    ///
    /// # Safety
    /// As [`engine_select`]; `s_chunks` holds ROW_THREADS f32 and
    /// `s_choice` one u32 of shared memory.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn sample(
        g_x: *const f32,
        vocab: u32,
        probs: *mut f32,
        b: u32,
        max: f32,
        arg: u32,
        temperature: f32,
        top_p: f32,
        seed: u64,
        state: *const u32,
        s_chunks: u32,
        s_choice: u32,
    ) -> u32 {
        let tid = thread_idx();
        // SAFETY: as the caller's.
        unsafe {
            let g_e = probs.add(b as usize * vocab as usize);
            let inv_t = 1.0 / temperature;
            let mut local = 0.0f32;
            let mut i = tid;
            while i < vocab {
                let e = weight(*g_x.add(i as usize), max, inv_t);
                *g_e.add(i as usize) = e;
                local += e;
                i += ROW_THREADS;
            }
            let total = block_sum(local, s_chunks, ROW_WARPS);
            // Each thread's mass of weights ≥ tau (it re-reads only the
            // weights it wrote itself).
            let mass = |tau: f32| -> f32 {
                let mut m = 0.0f32;
                let mut i = tid;
                while i < vocab {
                    let e = *g_e.add(i as usize);
                    if e >= tau {
                        m += e;
                    }
                    i += ROW_THREADS;
                }
                block_sum(m, s_chunks, ROW_WARPS)
            };
            let mut tau = 0.0f32;
            if top_p < 1.0 {
                let target = top_p * total;
                if mass(1.0) >= target {
                    tau = 1.0;
                } else {
                    let mut hi = 1.0f32;
                    let mut step = 0;
                    while step < TOP_P_STEPS {
                        let mid = 0.5 * (tau + hi);
                        if mass(mid) >= target {
                            tau = mid;
                        } else {
                            hi = mid;
                        }
                        step += 1;
                    }
                }
            }
            // The block's weights are visible to every thread from here.
            sync_threads();
            // draw: thread t owns the contiguous chunk t of the vocabulary
            let chunk = vocab.div_ceil(ROW_THREADS);
            let start = (tid * chunk).min(vocab);
            let end = (start + chunk).min(vocab);
            let mut sum = 0.0f32;
            let mut i = start;
            while i < end {
                let e = *g_e.add(i as usize);
                if e >= tau {
                    sum += e;
                }
                i += 1;
            }
            st_shared_u32(s_chunks + 4 * tid, sum.to_bits());
            if tid == 0 {
                st_shared_u32(s_choice, arg);
            }
            sync_threads();
            // Every thread adds the chunk sums in the same order, so the
            // chunks' ranges [prefix, prefix + sum) tile [0, kept) exactly.
            let (mut prefix, mut kept) = (0.0f32, 0.0f32);
            let mut t = 0;
            while t < ROW_THREADS {
                let s = f32::from_bits(ld_shared_u32(s_chunks + 4 * t));
                if t < tid {
                    prefix += s;
                }
                kept += s;
                t += 1;
            }
            // The same order as the loop above gives the same prefix.
            let next = prefix + sum;
            let r = uniform(seed, b, *state) * kept;
            if sum > 0.0 && prefix <= r && r < next {
                let (mut acc, mut pick) = (prefix, u32::MAX);
                let mut i = start;
                while i < end {
                    let e = *g_e.add(i as usize);
                    if e >= tau {
                        acc += e;
                        pick = i;
                        if acc > r {
                            break;
                        }
                    }
                    i += 1;
                }
                if pick < vocab {
                    st_shared_u32(s_choice, pick);
                }
            }
            sync_threads();
            ld_shared_u32(s_choice)
        }
    }

    /// After a decode step: every sequence's position moves on by one, and
    /// so does the step counter `state[0]`.
    ///
    /// # Safety
    /// `positions` holds `batch` u32, `state` one; one thread per sequence
    /// (grid-stride), any block size.
    #[unsafe(no_mangle)]
    pub unsafe extern "ptx-kernel" fn engine_advance(
        positions: *mut u32,
        batch: u32,
        state: *mut u32,
    ) {
        // Inputs may come from the kernel before (launch overlap).
        crate::ptx::start_after_prior_grids();
        let i = block_idx().0 * ROW_THREADS + thread_idx();
        // SAFETY: i < batch; the counter has one writer.
        unsafe {
            if i < batch {
                *positions.add(i as usize) += 1;
            }
            if i == 0 {
                *state += 1;
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
    fn uniform_is_in_range_and_varies() {
        let mut sum = 0f64;
        let n = 20000;
        for step in 0..n {
            let u = uniform(7, 3, step);
            assert!((0.0..1.0).contains(&u));
            sum += u as f64;
        }
        assert!((sum / n as f64 - 0.5).abs() < 0.01);
        assert_ne!(uniform(7, 3, 0), uniform(7, 4, 0));
        assert_ne!(uniform(7, 3, 0), uniform(8, 3, 0));
        assert_eq!(uniform(7, 3, 0), uniform(7, 3, 0));
    }

    #[test]
    fn greedy_takes_the_lowest_index_of_the_maximum() {
        let logits = [0.5, 2.0, -1.0, 2.0, f32::NAN];
        assert_eq!(select_reference(&logits, 0.0, 1.0, 0.3), 1);
    }

    /// Sampling frequencies follow the softmax restricted to the top-p set.
    #[test]
    fn top_p_sampling_follows_the_truncated_distribution() {
        let logits: Vec<f32> = [3.0f32, 2.0, 1.0, 0.0, -1.0].to_vec();
        let t = 0.8;
        let p: Vec<f64> = logits
            .iter()
            .map(|&x| ((x - 3.0) as f64 / t as f64).exp())
            .collect();
        let total: f64 = p.iter().sum();
        // top_p = 0.9: the top three carry 0.72 + 0.21 + 0.06 = 0.99 ≥ 0.9,
        // the top two only 0.93 ≥ 0.9 → keep two.
        let keep = 2;
        let kept: f64 = p[..keep].iter().sum();
        assert!(kept / total >= 0.9 && p[0] / total < 0.9);
        let n = 40000;
        let mut counts = [0usize; 5];
        for k in 0..n {
            counts[select_reference(&logits, t, 0.9, uniform(1, 0, k)) as usize] += 1;
        }
        for i in 0..5 {
            let want = if i < keep { p[i] / kept } else { 0.0 };
            let got = counts[i] as f64 / n as f64;
            assert!((got - want).abs() < 0.01, "token {i}: {got} vs {want}");
        }
        // top_p = 1: every token, in proportion.
        let mut counts = [0usize; 5];
        for k in 0..n {
            counts[select_reference(&logits, t, 1.0, uniform(2, 0, k)) as usize] += 1;
        }
        for i in 0..5 {
            let got = counts[i] as f64 / n as f64;
            assert!((got - p[i] / total).abs() < 0.01, "token {i}");
        }
        // A top token above top_p alone is the only one kept.
        assert_eq!(select_reference(&logits, 0.1, 0.5, 0.99), 0);
    }
}
