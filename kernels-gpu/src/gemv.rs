//! The BF16 matrix-vector product of decode batches, `Y[n×m] = X[n×k] · Wᵀ`
//! for n ≤ [`GEMV_MAX_N`] activation rows: the library's own BF16 path
//! beside cuBLAS, so that compressed weights are compared with the best
//! BF16 product there is, and so that the engine's BF16 run comes close to
//! its roofline.
//!
//! Why a kernel of our own: at n = 1 a product is a stream of the weights,
//! and cuBLAS's kernels reach 63% of the copy bandwidth on 4096×4096 and
//! 77% on 6144×4096 on an H200 (docs/PERFORMANCE.md); nor do they take part
//! in launch overlap, so in a decode step each waits for the kernel before
//! it to drain.
//!
//! How: each block takes [`GEMV_ROWS`] rows of W at a time (a row group;
//! as few blocks as one wave holds, each taking several groups, see
//! [`gemv_grid`]); its [`GEMV_WARPS`] warps split the rows' blocks of
//! [`GEMV_K_BLOCK`] columns into eight runs and add their sums in shared
//! memory at the end, so one block reads its rows once and no partial sums
//! leave it. A lane loads 16 bytes (8 columns) of
//! each of its two W rows per column block, and the tensor cores do the
//! arithmetic: `mma.m16n8k16` with W as A (16 rows) and the activation
//! rows as the 8 columns of B. A dot product does not care in which order
//! its terms come, so the 8 consecutive columns a lane loads stand for the
//! 4 columns the A fragment gives the lane in each of two 16-column k-steps
//! (PTX ISA §9.7.14.5.8), as long as the same lane gives B the same 8
//! columns of its activation row, which it does: in m16n8k16 the lane that
//! holds A row `g` also holds B column `g`. No shuffle and no shared-memory
//! staging of W is needed, and an n = 8 product costs the same instructions
//! as n = 1. [`a_fragment`], [`b_fragment`] and [`c_position`] are that
//! mapping, CPU-tested against a model of the instruction below.

use crate::launch::{GEMV_K_BLOCK, GEMV_MAX_N, GEMV_ROWS, GEMV_WARPS};

/// One lane's part of a column block: W rows `g` and `g + 8` of the
/// block's 16, activation row `g`, and columns `8t .. 8t + 8` of the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemvLane {
    pub g: u32,
    pub t: u32,
}

impl GemvLane {
    #[inline(always)]
    pub const fn new(lane: u32) -> Self {
        Self {
            g: lane / 4,
            t: lane % 4,
        }
    }

    /// The first of this lane's 8 columns in column block `kb`.
    #[inline(always)]
    pub const fn col(self, kb: u32) -> u32 {
        kb * GEMV_K_BLOCK as u32 + 8 * self.t
    }
}

/// The A fragment of k-step `s` (0 or 1) of a column block, from the
/// lane's 8 columns of its rows `g` (`wg`) and `g + 8` (`wh`), two BF16 per
/// register: registers `2s` and `2s + 1` stand for the fragment's columns
/// `2t, 2t + 1` and `2t + 8, 2t + 9` of rows `g` and `g + 8`.
#[inline(always)]
pub const fn a_fragment(wg: [u32; 4], wh: [u32; 4], s: usize) -> [u32; 4] {
    [wg[2 * s], wh[2 * s], wg[2 * s + 1], wh[2 * s + 1]]
}

/// The B fragment of k-step `s` from the lane's 8 columns of activation
/// row `g`: the same registers [`a_fragment`] takes of W.
#[inline(always)]
pub const fn b_fragment(x: [u32; 4], s: usize) -> [u32; 2] {
    [x[2 * s], x[2 * s + 1]]
}

/// (row in the block's 16, activation row) of the lane's accumulator `i`
/// (m16n8k16's C fragment).
#[inline(always)]
pub const fn c_position(lane: GemvLane, i: u32) -> (u32, u32) {
    (lane.g + 8 * (i / 2), 2 * lane.t + i % 2)
}

/// Blocks of a launch for `rows` rows of W.
pub const fn gemv_blocks(rows: usize) -> usize {
    rows.div_ceil(GEMV_ROWS)
}

/// Why a product of this shape cannot run on the kernel, or `None`. The
/// kernel loads 16 bytes at a time, so rows of W and X must be whole
/// 16-byte vectors (`k` a multiple of 8; the host checks the pointers).
pub fn gemv_unsupported(m: usize, k: usize, n: usize) -> Option<&'static str> {
    if m == 0 || k == 0 || n == 0 {
        Some("an empty product")
    } else if n > GEMV_MAX_N {
        Some("more activation rows than the BF16 GEMV's 8")
    } else if !k.is_multiple_of(8) {
        Some("a row length (k) that is not a multiple of 8")
    } else if m > u32::MAX as usize || k > u32::MAX as usize / 2 {
        Some("a matrix beyond 32-bit row and column counts")
    } else {
        None
    }
}

/// The column blocks warp `warp` takes in every row group, for `blocks_k`
/// blocks per row: the run `first..end`, a step taking `GEMV_UNROLL`
/// consecutive ones. Measured on an H200 against dealing every eighth
/// block to each warp (commits `84db9c0`, `4b5fdad`): a contiguous run per warp was
/// 4–10% faster on 4096×4096, 6144×4096 and 28672×4096 (28672×4096 at
/// N = 1: 62.8 → 59.4 µs) and 1–4% slower on 4096×14336.
#[inline(always)]
pub const fn warp_blocks(warp: u32, blocks_k: u32) -> (u32, u32) {
    let per = blocks_k.div_ceil(GEMV_WARPS);
    let first = warp * per;
    let end = if first + per < blocks_k {
        first + per
    } else {
        blocks_k
    };
    (first, if end > first { end } else { first })
}

/// Blocks of a launch over `groups` row groups when `blocks_per_wave` fit
/// on the GPU at once: as few waves as that allows, the groups dealt
/// evenly (block `b` takes groups `b`, `b + grid`, …), so every block has
/// the same number of groups but for at most one and no block waits for a
/// last, part-empty wave.
pub const fn gemv_grid(groups: usize, blocks_per_wave: usize) -> usize {
    let wave = if blocks_per_wave == 0 {
        1
    } else {
        blocks_per_wave
    };
    let waves = groups.div_ceil(wave);
    if waves == 0 {
        0
    } else {
        groups.div_ceil(waves)
    }
}

#[cfg(target_arch = "nvptx64")]
pub(crate) mod gpu {
    use super::*;
    use crate::launch::{GEMV_SMEM_BYTES, GEMV_UNROLL, STORE_BF16};
    use crate::ptx::{
        block_idx, f32_to_bf16, grid_dim_x, lane_id, ld_nc_v4, ld_shared_u32, ld_stream_v4,
        mma_bf16_16816, shared_memory, st_shared_v4, start_after_prior_grids, sync_threads,
        thread_idx, warp_index,
    };

    /// One step's weights: [`GEMV_UNROLL`] column blocks of rows `g`, `g + 8`.
    type WeightStep = [[[u32; 4]; 2]; GEMV_UNROLL];

    /// The operands of one launch, as the entry point received them, and
    /// this warp's column blocks.
    struct Product {
        w: *const u16,
        x: *const u16,
        out: GroupOutput,
        rows: u32,
        k: u32,
        n: u32,
        /// This warp's blocks of every group (see [`warp_blocks`]).
        first: u32,
        end: u32,
    }

    /// Where a block's sums of a row group go: `Y` (n × rows, row-major)
    /// as BF16 (`store` = `STORE_BF16`) or f32. Shared with the compressed
    /// GEMV (`zipgemv`), whose blocks end a row group the same way.
    #[derive(Clone, Copy)]
    pub(crate) struct GroupOutput {
        pub(crate) y: *mut u16,
        pub(crate) y32: *mut f32,
        pub(crate) rows: u32,
        pub(crate) n: u32,
        pub(crate) store: u32,
    }

    /// Where a warp's stream of steps stands: a row group and the first
    /// column block of a step in it.
    #[derive(Clone, Copy)]
    struct Cursor {
        group: u32,
        kb: u32,
    }

    impl Product {
        /// Index into W of the lane's 16 bytes of row `h` (0: `g`, 1:
        /// `g + 8`) in column block `u` of the step at `at`, or `None`
        /// outside W (ragged rows, a group past the last, columns past `k`
        /// or this warp's blocks).
        #[inline(always)]
        fn w_index(&self, lane: GemvLane, at: Cursor, u: usize, h: usize) -> Option<usize> {
            let b = at.kb + u as u32;
            let col = lane.col(b);
            let row = at.group * GEMV_ROWS as u32 + lane.g + 8 * h as u32;
            (b < self.end && col < self.k && row < self.rows)
                .then(|| row as usize * self.k as usize + col as usize)
        }

        /// The lane's weights of the step at `at`, zeros outside W.
        #[inline(always)]
        unsafe fn load_w(&self, lane: GemvLane, at: Cursor) -> WeightStep {
            let mut v = [[[0u32; 4]; 2]; GEMV_UNROLL];
            let mut u = 0;
            while u < GEMV_UNROLL {
                let mut h = 0;
                while h < 2 {
                    if let Some(i) = self.w_index(lane, at, u, h) {
                        // SAFETY: row < rows and col + 8 ≤ k (k is a
                        // multiple of 8), so the 16 bytes are inside W,
                        // 16-byte aligned (the host checks the base).
                        v[u][h] = unsafe { ld_stream_v4(self.w.add(i).cast()) };
                    }
                    h += 1;
                }
                u += 1;
            }
            v
        }

        /// The next step of the warp's stream after `at`: on in the group,
        /// else the first step of the block's next group.
        #[inline(always)]
        fn advance(&self, at: Cursor, grid: u32) -> Cursor {
            let step = GEMV_UNROLL as u32;
            match at.kb + step < self.end {
                true => Cursor {
                    group: at.group,
                    kb: at.kb + step,
                },
                false => Cursor {
                    group: at.group + grid,
                    kb: self.first,
                },
            }
        }

        /// The lane's activations of a step at column block `kb` (row `g`,
        /// zeros past `n`).
        #[inline(always)]
        unsafe fn load_x(&self, lane: GemvLane, kb: u32) -> [[u32; 4]; GEMV_UNROLL] {
            let mut v = [[0u32; 4]; GEMV_UNROLL];
            let mut u = 0;
            while u < GEMV_UNROLL {
                let b = kb + u as u32;
                let col = lane.col(b);
                if b < self.end && col < self.k && lane.g < self.n {
                    let at = lane.g as usize * self.k as usize + col as usize;
                    // SAFETY: as in `load_w`, inside X's n × k.
                    v[u] = unsafe { ld_nc_v4(self.x.add(at).cast()) };
                }
                u += 1;
            }
            v
        }
    }

    impl GroupOutput {
        /// Adds every warp's accumulator `i` of `group` (in `slots`, one
        /// 16-byte accumulator fragment per lane and warp) in a fixed
        /// order, so the result does not depend on timing, and writes it
        /// to Y. Warp `i` (0..4) does this for accumulator `i`: one warp
        /// reading all four held 32 loaded values at once, which spilled
        /// the compressed GEMV (80 registers).
        #[inline(always)]
        unsafe fn write_group(&self, lane: GemvLane, group: u32, slots: u32, i: u32) {
            let mut sum = 0f32;
            let mut from = 0;
            while from < GEMV_WARPS {
                // SAFETY: written by warp `from` before the barrier.
                let v = unsafe { ld_shared_u32(slots + (from * 32 + lane_id()) * 16 + 4 * i) };
                sum += f32::from_bits(v);
                from += 1;
            }
            let (r, col) = c_position(lane, i);
            let row = group * GEMV_ROWS as u32 + r;
            if row < self.rows && col < self.n {
                let at = col as usize * self.rows as usize + row as usize;
                // SAFETY: col < n and row < rows: inside Y.
                unsafe {
                    if self.store == STORE_BF16 {
                        *self.y.add(at) = f32_to_bf16(sum);
                    } else {
                        *self.y32.add(at) = sum;
                    }
                }
            }
        }
    }

    /// `acc += ` one step's products. The step's `mma`s accumulate from
    /// zero and the step's sum is added to `acc` with an ordinary f32 add,
    /// in case the tensor cores' accumulation of a long chain rounds less
    /// well than an f32 add: with one chain per warp, SmolLM2's worst logit
    /// step lay 1.18e-1 from FP32 (8.6e-2 with cuBLAS), with this 1.14e-1
    /// (docs/PERFORMANCE.md, "A BF16 GEMV of our own"); what the
    /// difference from cuBLAS comes from is not settled. It costs no
    /// measurable time.
    #[inline(always)]
    fn multiply_step(acc: &mut [f32; 4], wv: &WeightStep, xv: &[[u32; 4]; GEMV_UNROLL]) {
        let mut part = [0f32; 4];
        let mut u = 0;
        while u < GEMV_UNROLL {
            let mut s = 0;
            while s < 2 {
                let a = a_fragment(wv[u][0], wv[u][1], s);
                part = mma_bf16_16816(a, b_fragment(xv[u], s), part);
                s += 1;
            }
            u += 1;
        }
        let mut i = 0;
        while i < 4 {
            acc[i] += part[i];
            i += 1;
        }
    }

    /// Publishes this warp's sums of `group`, waits for the block's, and
    /// has warps 0..4 write them; `parity` alternates the slots between
    /// groups, so one barrier per group suffices (those warps read a
    /// group's slots before they reach the next group's barrier, and
    /// nobody writes them again until after that one).
    #[inline(always)]
    pub(crate) unsafe fn finish_group(
        out: &GroupOutput,
        lane: GemvLane,
        warp: u32,
        group: u32,
        acc: [f32; 4],
        slots: u32,
        parity: u32,
    ) {
        let slots = slots + parity * GEMV_WARPS * 32 * 16;
        // SAFETY: each slot lies inside the block's GEMV_SMEM_BYTES.
        unsafe { st_shared_v4(slots + (warp * 32 + lane_id()) * 16, acc.map(f32::to_bits)) };
        sync_threads();
        if warp < 4 {
            // SAFETY: every warp's slot was written before the barrier.
            unsafe { out.write_group(lane, group, slots, warp) };
        }
    }

    /// BF16 `Y[n×rows] = X[n×k] · Wᵀ` (see the module documentation): each
    /// warp loads the next step's weights (in its group, or the first of
    /// its block's next group) before it multiplies this one's.
    ///
    /// # Safety
    /// `w` holds rows × k BF16 and `x` n × k, both 16-byte aligned, with
    /// `gemv_unsupported(rows, k, n)` `None`; `y` (BF16, `store` =
    /// `STORE_BF16`) or `y32` (f32, otherwise) holds n × rows; a grid of at
    /// most `gemv_blocks(rows)` blocks of `32 · GEMV_WARPS` threads.
    #[unsafe(no_mangle)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe extern "ptx-kernel" fn zipserv_gemv_bf16(
        w: *const u16,
        x: *const u16,
        y: *mut u16,
        y32: *mut f32,
        rows: u32,
        k: u32,
        n: u32,
        store: u32,
    ) {
        let slots = shared_memory::<GEMV_SMEM_BYTES>();
        let (warp, lane) = (warp_index(thread_idx()), GemvLane::new(lane_id()));
        let (first, end) = warp_blocks(warp, k.div_ceil(GEMV_K_BLOCK as u32));
        let out = GroupOutput {
            y,
            y32,
            rows,
            n,
            store,
        };
        let p = Product {
            w,
            x,
            out,
            rows,
            k,
            n,
            first,
            end,
        };
        let (groups, grid) = (gemv_blocks(rows as usize) as u32, grid_dim_x());
        let mut at = Cursor {
            group: block_idx().0,
            kb: p.first,
        };
        // The weights depend on no earlier kernel: the first step's are on
        // their way before this waits for the kernel that writes X.
        // SAFETY (every load below): the launch contract above.
        let mut wv = unsafe { p.load_w(lane, at) };
        start_after_prior_grids();
        let mut parity = 0;
        while at.group < groups {
            let group = at.group;
            let mut acc = [0f32; 4];
            // `at` is warp-uniform, so every lane takes the same turns and
            // the `mma`s run with the whole warp.
            while at.group == group && at.kb < p.end {
                let xv = unsafe { p.load_x(lane, at.kb) };
                let next_at = p.advance(at, grid);
                let next = unsafe { p.load_w(lane, next_at) };
                multiply_step(&mut acc, &wv, &xv);
                wv = next;
                at = next_at;
            }
            // SAFETY: the block's slots; every warp reaches this barrier.
            unsafe { finish_group(&p.out, lane, warp, group, acc, slots, parity) };
            parity ^= 1;
            at = Cursor {
                group: group + grid,
                kb: p.first,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn bf16_bits(v: f32) -> u16 {
        (v.to_bits() >> 16) as u16
    }
    fn bf16_value(bits: u16) -> f64 {
        f32::from_bits(u32::from(bits) << 16) as f64
    }
    fn pack(lo: u16, hi: u16) -> u32 {
        u32::from(lo) | u32::from(hi) << 16
    }
    fn halves(r: u32) -> [f64; 2] {
        [bf16_value(r as u16), bf16_value((r >> 16) as u16)]
    }

    /// `D = A·B + C` of `mma.m16n8k16` from the 32 lanes' fragments, as PTX
    /// ISA §9.7.14.5.8 lays them out (A row-major 16×16, B 16×8, C 16×8;
    /// lane `4g + t`): a0 = A[g][2t..], a1 = A[g+8][2t..], a2 = A[g][2t+8..],
    /// a3 = A[g+8][2t+8..]; b0 = B[2t..][g], b1 = B[2t+8..][g]; c0, c1 =
    /// C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1].
    fn mma_model(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &mut [[f64; 4]; 32]) {
        let mut am = [[0f64; 16]; 16];
        let mut bm = [[0f64; 8]; 16];
        for lane in 0..32 {
            let (g, t) = (lane / 4, lane % 4);
            for j in 0..2 {
                am[g][2 * t + j] = halves(a[lane][0])[j];
                am[g + 8][2 * t + j] = halves(a[lane][1])[j];
                am[g][2 * t + 8 + j] = halves(a[lane][2])[j];
                am[g + 8][2 * t + 8 + j] = halves(a[lane][3])[j];
                bm[2 * t + j][g] = halves(b[lane][0])[j];
                bm[2 * t + 8 + j][g] = halves(b[lane][1])[j];
            }
        }
        for (lane, c) in c.iter_mut().enumerate() {
            for (i, c) in c.iter_mut().enumerate() {
                let (r, col) = c_position(GemvLane::new(lane as u32), i as u32);
                let (r, col) = (r as usize, col as usize);
                *c += (0..16).map(|kk| am[r][kk] * bm[kk][col]).sum::<f64>();
            }
        }
    }

    /// The lanes' loads and fragments, put through the model of the
    /// instruction, give every (row, activation row) its whole dot product
    /// over a column block: each of the 32 columns is counted exactly once.
    #[test]
    fn fragments_of_consecutive_columns_give_the_dot_products() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Small integers times powers of two: exact in BF16 and in f64.
            ((seed % 17) as f32 - 8.0) * [0.25, 1.0, 4.0][(seed >> 40) as usize % 3]
        };
        let k = GEMV_K_BLOCK;
        let w: Vec<Vec<u16>> = (0..GEMV_ROWS)
            .map(|_| (0..k).map(|_| bf16_bits(next())).collect())
            .collect();
        let x: Vec<Vec<u16>> = (0..GEMV_MAX_N)
            .map(|_| (0..k).map(|_| bf16_bits(next())).collect())
            .collect();
        let vector = |row: &[u16], col: usize| -> [u32; 4] {
            core::array::from_fn(|j| pack(row[col + 2 * j], row[col + 2 * j + 1]))
        };
        let mut c = [[0f64; 4]; 32];
        for s in 0..2 {
            let mut a = [[0u32; 4]; 32];
            let mut b = [[0u32; 2]; 32];
            for lane in 0..32u32 {
                let l = GemvLane::new(lane);
                let col = l.col(0) as usize;
                let (wg, wh) = (
                    vector(&w[l.g as usize], col),
                    vector(&w[l.g as usize + 8], col),
                );
                a[lane as usize] = a_fragment(wg, wh, s);
                b[lane as usize] = b_fragment(vector(&x[l.g as usize], col), s);
            }
            mma_model(&a, &b, &mut c);
        }
        for (lane, c) in c.iter().enumerate() {
            for (i, &got) in c.iter().enumerate() {
                let (r, col) = c_position(GemvLane::new(lane as u32), i as u32);
                let want: f64 = (0..k)
                    .map(|j| bf16_value(w[r as usize][j]) * bf16_value(x[col as usize][j]))
                    .sum();
                assert_eq!(got, want, "lane {lane} accumulator {i}");
            }
        }
    }

    /// Every (row, activation row) of the block is some lane's accumulator,
    /// exactly once.
    #[test]
    fn accumulators_cover_the_block_once() {
        let mut seen = [[0u32; GEMV_MAX_N]; GEMV_ROWS];
        for lane in 0..32 {
            for i in 0..4 {
                let (r, col) = c_position(GemvLane::new(lane), i);
                seen[r as usize][col as usize] += 1;
            }
        }
        assert!(seen.iter().flatten().all(|&s| s == 1));
    }

    /// The warps' runs cover every column block exactly once.
    #[test]
    fn warps_deal_out_every_column_block_once() {
        for blocks_k in [1u32, 7, 16, 17, 18, 128, 448, 449] {
            let mut seen = std::vec![0u32; blocks_k as usize];
            for warp in 0..GEMV_WARPS {
                let (first, end) = warp_blocks(warp, blocks_k);
                for b in first..end {
                    seen[b as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{blocks_k} blocks");
        }
    }

    /// The grid deals the groups evenly over the fewest waves.
    #[test]
    fn grids_deal_groups_evenly() {
        for wave in [1usize, 132, 528] {
            for groups in [1usize, 255, 256, 384, 527, 528, 529, 1792, 8016] {
                let grid = gemv_grid(groups, wave);
                assert!(
                    grid >= 1 && grid <= wave.min(groups),
                    "{groups} on {wave}: {grid}"
                );
                let waves = groups.div_ceil(wave);
                // Every block takes `waves` groups or one fewer.
                for b in 0..grid {
                    let taken = (b..groups).step_by(grid).count();
                    assert!(taken == waves || taken + 1 == waves, "{groups} on {wave}");
                }
            }
        }
        assert_eq!(gemv_grid(1792, 528), 448);
        assert_eq!(gemv_grid(256, 528), 256);
        assert_eq!(gemv_grid(8016, 528), 501);
    }

    #[test]
    fn unsupported_shapes_say_why() {
        assert_eq!(gemv_unsupported(4096, 4096, 1), None);
        assert_eq!(gemv_unsupported(5, 8, 8), None);
        assert!(
            gemv_unsupported(4096, 4100, 1)
                .unwrap()
                .contains("multiple of 8")
        );
        assert!(gemv_unsupported(4096, 4096, 9).unwrap().contains("8"));
        assert!(gemv_unsupported(0, 4096, 1).is_some());
        assert_eq!(gemv_blocks(4096), 256);
        assert_eq!(gemv_blocks(4097), 257);
    }
}
