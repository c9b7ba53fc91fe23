//! Causal GQA attention on the tensor cores, one warp per block: the same
//! contract as [`super::attention`]'s `engine_attention` (every row attends
//! to positions `0..=pos` of its sequence; splits of the positions with a
//! workspace merged by the last block to arrive), for head dimensions 64
//! and 128 and up to [`MMA_ATTN_MAX_GROUP`] query heads per KV head.
//!
//! A block takes one (row, KV head, split) and all the query heads of the
//! group at once, as the 16 rows of `mma.m16n8k16` tiles (rows past the
//! group are zero), so each key and value is read once per row:
//!   scores  – `S = Q·Kᵀ` for 32 keys: Q is the A operand, loaded once into
//!             registers; each 8-key n-tile's B fragments come from the
//!             staged keys with `ldmatrix` (keys stored position by
//!             position are exactly `Kᵀ`'s column-major layout);
//!   softmax – the S accumulators of a row sit in the four lanes of a quad:
//!             two shuffle steps give the tile's maximum per head; an
//!             online softmax per head (`OnlineSoftmax::advance`), each lane
//!             summing its own weights;
//!   values  – `O += P·V`: two 8-key n-tiles of S accumulators are, packed
//!             to BF16, one k16 A fragment (the layouts coincide), and
//!             `ldmatrix.trans` turns the staged values into B fragments.
//! Keys and values arrive in a two-stage ring of [`MMA_ATTN_TILE_KEYS`]
//! positions filled by `cp.async` (zero past the row's last position, whose
//! scores are masked to −inf). Rows of the staged tiles are padded by 16
//! bytes so the eight rows an `ldmatrix` reads fall in distinct banks.
//!
//! Against the block-per-head-chunk kernel: no shuffle per key (its
//! per-key butterfly and softmax step made the loop latency-bound), each
//! key read once for the whole group, not once per chunk of heads.

/// Threads per block: one warp.
pub const MMA_ATTN_THREADS: u32 = 32;
/// Positions per tile of the ring: four 8-key n-tiles of scores, two k16
/// steps of the value product.
pub const MMA_ATTN_TILE_KEYS: u32 = 32;
/// Stages of the ring: one tile read while the next is in flight.
pub const MMA_ATTN_STAGES: u32 = 2;
/// Query heads per KV head at most: the rows of one `mma` tile.
pub const MMA_ATTN_MAX_GROUP: u32 = 16;
/// Entry points, by head dimension.
pub const MMA_ATTN_KERNELS: [(u32, &str); 2] = [
    (64, "engine_attention_mma_d64"),
    (128, "engine_attention_mma_d128"),
];
/// A shared-memory carveout the kernel runs with: the share of the unified
/// L1/shared memory it asks for (the host sets it before each launch) and
/// the shared memory a multiprocessor then has (the driver rounds the share
/// up to a configuration Hopper has; 1 KB of it is reserved per block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmaAttnCarveout {
    pub percent: u32,
    pub smem_per_sm: u32,
}

/// Half: 50% of 228 KB, rounded up to the 132 KB configuration. Measured on
/// an H200 (8-layer Llama-3-8B shape, compressed weights, overlapped
/// launches; ms per step at batch 1 / 8 / 32): the driver's own choice for
/// six blocks (233 KB) 1.227 / 1.317 / 1.889; 50% 1.165 / 1.268 / 1.852;
/// 25% and 0% 1.19 / 1.36 / 2.05 (too few blocks); the
/// block-per-head-chunk kernel 1.169 / 1.284 / 1.997. At the full carveout
/// the multiprocessors reconfigure between attention and the `mma.sync`
/// ZipGEMMs beside it (ncu: 233 KB against their 135–201 KB) and the
/// overlapped launch is lost; BF16 (cuBLAS, no overlap) saw no difference.
pub const MMA_ATTN_HALF_CARVEOUT: MmaAttnCarveout = MmaAttnCarveout {
    percent: 50,
    smem_per_sm: 132 * 1024,
};
/// Full: all 228 KB, six blocks of head dimension 128 per multiprocessor.
pub const MMA_ATTN_FULL_CARVEOUT: MmaAttnCarveout = MmaAttnCarveout {
    percent: 100,
    smem_per_sm: 228 * 1024,
};
/// Launches of at most this many rows take the half carveout: decode
/// steps of up to 32 sequences, where the ZipGEMMs beside attention are
/// the `mma.sync` variants (N ≤ 32). Larger launches take the full one:
/// at batch 64 the neighbours are the `wgmma` ZipGEMM or cuBLAS, both at
/// the full configuration, and the attention grid (512 blocks) outgrows the
/// half carveout's wave (396). Two calls apart on one H200 (not yet one
/// call): batch 64 with six blocks 8.20 ms compressed / 6.45 BF16 per step,
/// with the half carveout 8.35 / 6.55.
pub const MMA_ATTN_HALF_CARVEOUT_ROWS: usize = 32;

/// The carveout of a launch of `rows` rows ([`MMA_ATTN_HALF_CARVEOUT_ROWS`]).
pub const fn mma_attn_carveout(rows: usize) -> MmaAttnCarveout {
    if rows <= MMA_ATTN_HALF_CARVEOUT_ROWS {
        MMA_ATTN_HALF_CARVEOUT
    } else {
        MMA_ATTN_FULL_CARVEOUT
    }
}
/// Resident blocks per multiprocessor at most (sm_90's limit).
pub const MMA_ATTN_MAX_BLOCKS_PER_SM: u32 = 32;

/// Bytes of one staged row (a position's keys, or its values): the head's
/// BF16 values and 16 bytes of padding (see the module docs).
pub const fn mma_attn_row_bytes(head_dim: u32) -> u32 {
    2 * head_dim + 16
}

/// Bytes of one stage: a tile of keys, then the same positions' values.
pub const fn mma_attn_stage_bytes(head_dim: u32) -> u32 {
    2 * MMA_ATTN_TILE_KEYS * mma_attn_row_bytes(head_dim)
}

/// Dynamic shared memory of a block.
pub const fn mma_attn_smem_bytes(head_dim: u32) -> u32 {
    MMA_ATTN_STAGES * mma_attn_stage_bytes(head_dim)
}

/// Blocks of one multiprocessor at once, as shared memory under
/// `carveout` allows.
pub const fn mma_attn_blocks_per_sm(head_dim: u32, carveout: MmaAttnCarveout) -> u32 {
    let b = carveout.smem_per_sm / (mma_attn_smem_bytes(head_dim) + 1024);
    if b > MMA_ATTN_MAX_BLOCKS_PER_SM {
        MMA_ATTN_MAX_BLOCKS_PER_SM
    } else {
        b
    }
}

/// The entry point for `head_dim` and `group` query heads per KV head, if
/// this kernel covers them.
pub fn mma_attn_kernel(head_dim: u32, group: u32) -> Option<&'static str> {
    if group == 0 || group > MMA_ATTN_MAX_GROUP {
        return None;
    }
    MMA_ATTN_KERNELS
        .iter()
        .find(|(d, _)| *d == head_dim)
        .map(|(_, name)| *name)
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::*;
    use crate::engine::attention::ATTN_MAX_SPLITS;
    use crate::engine::attention::gpu::{AttnArgs, attention_entry};
    use crate::engine::attention::{OnlineSoftmax, split_keys};
    use crate::engine::math::f32_to_bf16;
    use crate::engine::rope::cache_offset;
    use crate::launch::nonzero;
    use crate::ptx::{
        FragC, atom_add_acq_rel_u32, block_idx, cp_async_16, cp_async_commit, cp_async_wait,
        dynamic_shared_memory, grid_dim_y, grid_dim_z, lane_id, ld_cg_f32, ldmatrix_x4,
        ldmatrix_x4_trans, mma_bf16_16816, pack_bf16x2, shfl_idx, shfl_xor, sync_warp, trap,
    };

    /// Largest of `v` over the lane's quad (the four lanes holding one row
    /// of an `mma` accumulator).
    #[inline(always)]
    fn quad_max(v: f32) -> f32 {
        let v = v.max(f32::from_bits(shfl_xor(v.to_bits(), 1)));
        v.max(f32::from_bits(shfl_xor(v.to_bits(), 2)))
    }

    /// Sum of `v` over the lane's quad.
    #[inline(always)]
    fn quad_sum(v: f32) -> f32 {
        let v = v + f32::from_bits(shfl_xor(v.to_bits(), 1));
        v + f32::from_bits(shfl_xor(v.to_bits(), 2))
    }

    /// Largest of `v` over the warp.
    #[inline(always)]
    fn warp_max(v: f32) -> f32 {
        let mut v = v;
        seq_macro::seq!(I in 0..5 {
            v = v.max(f32::from_bits(shfl_xor(v.to_bits(), 16 >> I)));
        });
        v
    }

    /// Sum of `v` over the warp.
    #[inline(always)]
    fn warp_sum(v: f32) -> f32 {
        let mut v = v;
        seq_macro::seq!(I in 0..5 {
            v += f32::from_bits(shfl_xor(v.to_bits(), 16 >> I));
        });
        v
    }

    /// The last split of a (row, KV head) to arrive merges the `n` splits'
    /// states of the group's heads (`first` is the first head's row-head
    /// index) into `out`, the whole warp at once: per head, lane `s` and
    /// `s + 32` load split `s`'s maximum and sum, two warp reductions give
    /// the overall maximum and sum, and each lane then adds up its `HD / 32`
    /// consecutive dimensions over the splits, the split weights broadcast
    /// by shuffle and eight splits' loads issued before their sums.
    ///
    /// Tried first (H200, Llama-3-8B shape, context ~640, attention per
    /// step timed launch by launch): each lane calling `merged_value` for
    /// its 16 values, walking the splits twice per value, load after
    /// dependent load — 1.42 ms at batch 1 (20 splits; the
    /// block-per-head-chunk kernel 0.41); this warp-wide merge with a
    /// branch around each split's loads — 0.86 ms (ncu: the multiprocessors
    /// idle for 78% of the launch while the merging warps ran); with the
    /// loads unconditional, as here — 0.44 ms, and 10.8 µs per launch
    /// against the other kernel's 10.4.
    ///
    /// # Safety
    /// The workspace holds every split's state (made visible by the arrival
    /// counter's acquire); heads `first..first + group` are in `out`.
    #[inline(always)]
    unsafe fn merge_splits<const HD: u32>(
        workspace: *const f32,
        out: *mut u16,
        first: usize,
        group: u32,
        n: usize,
        lane: u32,
    ) {
        const { assert!(ATTN_MAX_SPLITS <= 64 && HD.is_multiple_of(32) && HD / 32 <= 4) };
        let d = HD as usize;
        let per_lane = (HD / 32) as usize;
        let lane = lane as usize;
        // SAFETY: the caller's promise; splits below `n`, dimensions
        // below `d`.
        unsafe {
            // Every load below is unconditional, at an index clamped into
            // range, and what lies past `n` is weighed 0 by selects: a
            // branch around a load kept the next load from issuing before
            // it, and the loop ran one dependent L2 trip per split.
            let group = group as usize;
            let last = n - 1;
            // Split `s`'s maximum and sum for head `h` (−inf and 0 past `n`).
            let parts = |h: usize| {
                let ws = workspace.add((first + h) * n * (d + 2));
                let part = |s: usize| {
                    let at = s.min(last);
                    let (m, l) = (ld_cg_f32(ws.add(2 * at)), ld_cg_f32(ws.add(2 * at + 1)));
                    if s < n {
                        (m, l)
                    } else {
                        (f32::NEG_INFINITY, 0.0)
                    }
                };
                (part(lane), part(lane + 32))
            };
            let mut next = parts(0);
            let mut h = 0;
            while h < group {
                let ((m0, l0), (m1, l1)) = next;
                // The next head's states travel while this one is merged
                // (the last head loads itself again, unused).
                next = parts((h + 1).min(group - 1));
                let values = workspace.add((first + h) * n * (d + 2) + 2 * n + lane * per_lane);
                let max = warp_max(m0.max(m1));
                let (w0, w1) = (
                    OnlineSoftmax::merge_weight(m0, max),
                    OnlineSoftmax::merge_weight(m1, max),
                );
                let sum = warp_sum(w0 * l0 + w1 * l1);
                let mut v = [0f32; 4];
                let mut s = 0;
                while s < n {
                    // Eight splits' values in flight, then their sums; the
                    // shuffles run in every lane (`s` is warp-uniform).
                    let mut x = [[0f32; 4]; 8];
                    seq_macro::seq!(U in 0..8 {
                        let at = (s + U).min(last);
                        seq_macro::seq!(J in 0..4 {
                            if J < per_lane {
                                x[U][J] = ld_cg_f32(values.add(at * d + J));
                            }
                        });
                    });
                    seq_macro::seq!(U in 0..8 {
                        let from = if s + U < 32 { w0 } else { w1 };
                        let w = f32::from_bits(shfl_idx(from.to_bits(), ((s + U) % 32) as u32));
                        let w = if s + U < n { w } else { 0.0 };
                        seq_macro::seq!(J in 0..4 {
                            if J < per_lane {
                                v[J] += w * x[U][J];
                            }
                        });
                    });
                    s += 8;
                }
                let o = out.add((first + h) * d + lane * per_lane);
                seq_macro::seq!(J in 0..4 {
                    if J < per_lane {
                        *o.add(J) = f32_to_bf16(v[J] / sum);
                    }
                });
                h += 1;
            }
        }
    }

    /// The kernel for head dimension `HD` (`KS = HD / 16` k-steps of the
    /// scores, `NT = HD / 8` n-tiles of the output; separate parameters
    /// because array lengths cannot be computed from `HD` here).
    ///
    /// # Safety
    /// As `engine_attention`, with grid (rows, kv_heads, splits), a block of
    /// [`MMA_ATTN_THREADS`], dynamic shared memory
    /// [`mma_attn_smem_bytes`]`(HD)`, `q_heads / kv_heads` ≤
    /// [`MMA_ATTN_MAX_GROUP`] and `head_dim == HD`; counters as
    /// `attention_counters(rows, kv_heads, 1, splits)`.
    #[inline(always)]
    unsafe fn attention_mma<const HD: u32, const KS: usize, const NT: usize>(a: AttnArgs) {
        // (`a.` fields: the one destructuring of the list is the other
        // kernel's.)
        let (q, q_heads, kv_heads, capacity) = (a.q, a.q_heads, a.kv_heads, a.capacity);
        const { assert!(KS as u32 * 16 == HD && NT as u32 * 8 == HD && NT.is_multiple_of(2)) };
        // Inputs may come from the kernel before (launch overlap).
        crate::ptx::start_after_prior_grids();
        let (r, kvh, split) = block_idx();
        let splits = grid_dim_z();
        let lane = lane_id();
        let (g, t) = (lane / 4, lane % 4);
        let group = q_heads / nonzero(kv_heads);
        if a.head_dim != HD || group == 0 || group > MMA_ATTN_MAX_GROUP {
            trap();
        }
        let row_bytes = mma_attn_row_bytes(HD);
        let s_ring = dynamic_shared_memory();
        // SAFETY: sequence and position are checked against the cache; rows
        // and dimensions stay below the group and HD; shared addresses stay
        // in the ring (STAGES × stage bytes).
        unsafe {
            // Q as the A operand: row h of the tile is query head
            // kvh·group + h (zero past the group), two BF16 per register;
            // loaded from a clamped head and zeroed by a select, so that
            // every load issues at once (no branch between them).
            let q_pair = |h: u32, dim: u32| -> u32 {
                let head = kvh * group + h.min(group - 1);
                let at = r as usize * a.q_stride as usize + (head * HD + dim) as usize;
                let pair = *(q.add(at) as *const u32);
                if h < group { pair } else { 0 }
            };
            // Every loop over fragments is unrolled (`seq!`): an array indexed
            // by a loop counter went to local memory.
            let mut q_frag = [[0u32; 4]; KS];
            seq_macro::seq!(K in 0..8 {
                if K < KS {
                    let d = 16 * K + 2 * t;
                    q_frag[K] = [q_pair(g, d), q_pair(g + 8, d), q_pair(g, d + 8), q_pair(g + 8, d + 8)];
                }
            });
            // (Q's loads above do not wait for these: one trip, not two.)
            let (seq, pos) = (*a.row_seq.add(r as usize), *a.row_pos.add(r as usize));
            if seq >= a.sequences || pos >= capacity {
                trap();
            }
            // Scores in log2 units for the base-2 softmax (scaled in f32,
            // after the product, so Q keeps its BF16 bits).
            let scale = a.scale * core::f32::consts::LOG2_E;

            let keys = split_keys(capacity, splits);
            let start = split * keys;
            let end = (start + keys).min(pos + 1);
            let (kv, cap, d) = (kv_heads as usize, capacity as usize, HD as usize);
            let first = cache_offset(seq as usize, kvh as usize, 0, kv, cap, d);
            let (g_k, g_v) = (
                a.cache_k.add(first) as *const u8,
                a.cache_v.add(first) as *const u8,
            );
            let tiles = end.saturating_sub(start).div_ceil(MMA_ATTN_TILE_KEYS);
            let stage_bytes = mma_attn_stage_bytes(HD);
            let half = MMA_ATTN_TILE_KEYS * row_bytes; // keys, then values
            // Copies tile `i` into its stage: 16-byte pieces, lane-strided;
            // positions past `end` zero-filled without reading.
            let issue = |i: u32| {
                let stage = s_ring + (i % MMA_ATTN_STAGES) * stage_bytes;
                let k0 = start + i * MMA_ATTN_TILE_KEYS;
                let pieces_per_row = HD / 8;
                let mut c = lane;
                while c < MMA_ATTN_TILE_KEYS * pieces_per_row {
                    let (row, piece) = (c / pieces_per_row, c % pieces_per_row);
                    let live = k0 + row < end;
                    let src = if live {
                        ((k0 + row) * 2 * HD + 16 * piece) as usize
                    } else {
                        0
                    };
                    let dst = stage + row * row_bytes + 16 * piece;
                    let bytes = if live { 16 } else { 0 };
                    cp_async_16(dst, g_k.add(src), bytes);
                    cp_async_16(dst + half, g_v.add(src), bytes);
                    c += 32;
                }
            };

            let (mut lo, mut hi) = (OnlineSoftmax::EMPTY, OnlineSoftmax::EMPTY);
            let mut acc: [FragC; NT] = [[0f32; 4]; NT];
            // ldmatrix row addresses of this lane (relative to a tile):
            // for the scores, matrix q = lane / 8 is (n-tile q / 2, k half
            // q % 2) of a pair of n-tiles; for the values, (key half q % 2,
            // dimension half q / 2) of a 16-key, 16-dimension block.
            let qm = lane / 8;
            let k_lane = ((qm / 2) * 8 + lane % 8) * row_bytes + (qm % 2) * 16;
            let v_lane = half + ((qm % 2) * 8 + lane % 8) * row_bytes + (qm / 2) * 16;

            if tiles > 0 {
                issue(0);
            }
            cp_async_commit();
            let mut i = 0;
            while i < tiles {
                if i + 1 < tiles {
                    issue(i + 1);
                }
                cp_async_commit();
                cp_async_wait::<1>();
                sync_warp();
                let stage = s_ring + (i % MMA_ATTN_STAGES) * stage_bytes;
                let k0 = start + i * MMA_ATTN_TILE_KEYS;

                // scores: four n-tiles of 8 keys
                let mut s: [FragC; 4] = [[0f32; 4]; 4];
                seq_macro::seq!(K in 0..8 {
                    if K < KS {
                        seq_macro::seq!(P in 0..2 {
                            let b = ldmatrix_x4(stage + k_lane + P * 16 * row_bytes + K * 32);
                            s[2 * P] = mma_bf16_16816(q_frag[K], [b[0], b[1]], s[2 * P]);
                            s[2 * P + 1] = mma_bf16_16816(q_frag[K], [b[2], b[3]], s[2 * P + 1]);
                        });
                    }
                });
                // scale and mask: element e of n-tile nt is key 8nt + 2t + e % 2
                let (mut max_lo, mut max_hi) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                seq_macro::seq!(N in 0..4 {
                    let key = k0 + 8 * N + 2 * t;
                    seq_macro::seq!(E in 0..4 {
                        let live = key + E % 2 < end;
                        s[N][E] = if live { s[N][E] * scale } else { f32::NEG_INFINITY };
                    });
                    max_lo = max_lo.max(s[N][0]).max(s[N][1]);
                    max_hi = max_hi.max(s[N][2]).max(s[N][3]);
                });
                let (rescale_lo, rescale_hi) =
                    (lo.advance(quad_max(max_lo)), hi.advance(quad_max(max_hi)));
                seq_macro::seq!(N in 0..16 {
                    if N < NT {
                        acc[N] = [
                            acc[N][0] * rescale_lo,
                            acc[N][1] * rescale_lo,
                            acc[N][2] * rescale_hi,
                            acc[N][3] * rescale_hi,
                        ];
                    }
                });
                // weights, as BF16 A fragments of the value product
                let mut p = [[0u32; 4]; 2];
                seq_macro::seq!(KK in 0..2 {
                    let (a, b) = (2 * KK, 2 * KK + 1);
                    let wl = [lo.weight(s[a][0]), lo.weight(s[a][1]), lo.weight(s[b][0]), lo.weight(s[b][1])];
                    let wh = [hi.weight(s[a][2]), hi.weight(s[a][3]), hi.weight(s[b][2]), hi.weight(s[b][3])];
                    lo.sum += wl[0] + wl[1] + wl[2] + wl[3];
                    hi.sum += wh[0] + wh[1] + wh[2] + wh[3];
                    p[KK] = [
                        pack_bf16x2(wl[0], wl[1]),
                        pack_bf16x2(wh[0], wh[1]),
                        pack_bf16x2(wl[2], wl[3]),
                        pack_bf16x2(wh[2], wh[3]),
                    ];
                });
                // values: O += P·V, two n-tiles of 8 dimensions per ldmatrix
                seq_macro::seq!(KK in 0..2 {
                    seq_macro::seq!(J in 0..8 {
                        if J < NT / 2 {
                            let b = ldmatrix_x4_trans(stage + v_lane + KK * 16 * row_bytes + J * 32);
                            acc[2 * J] = mma_bf16_16816(p[KK], [b[0], b[1]], acc[2 * J]);
                            acc[2 * J + 1] = mma_bf16_16816(p[KK], [b[2], b[3]], acc[2 * J + 1]);
                        }
                    });
                });
                // Every lane is done with this stage before tile i + 2 is
                // copied into it (next iteration).
                sync_warp();
                i += 1;
            }
            cp_async_wait::<0>();

            // This lane's rows (heads g and g + 8) and dimensions
            // 8nt + 2t, 8nt + 2t + 1 of each n-tile.
            // Row R of the lane (0: head g, elements 0 and 1 of each
            // accumulator; 1: head g + 8, elements 2 and 3).
            let (sum_lo, sum_hi) = (quad_sum(lo.sum), quad_sum(hi.sum));
            let n = splits as usize;
            seq_macro::seq!(R in 0..2 {
                let (h, max, sum) = [(g, lo.max, sum_lo), (g + 8, hi.max, sum_hi)][R];
                if h < group {
                    let row_head = r as usize * q_heads as usize + (kvh * group + h) as usize;
                    if n == 1 {
                        let o = a.out.add(row_head * d);
                        seq_macro::seq!(N in 0..16 {
                            if N < NT {
                                let dim = 8 * N + 2 * t as usize;
                                *o.add(dim) = f32_to_bf16(acc[N][2 * R] / sum);
                                *o.add(dim + 1) = f32_to_bf16(acc[N][2 * R + 1] / sum);
                            }
                        });
                    } else {
                        // This split's unnormalised state, in
                        // `engine_attention`'s a.workspace layout.
                        let ws = a.workspace.add(row_head * n * (d + 2));
                        if t == 0 {
                            *ws.add(2 * split as usize) = max;
                            *ws.add(2 * split as usize + 1) = sum;
                        }
                        let values = ws.add(2 * n + split as usize * d);
                        seq_macro::seq!(N in 0..16 {
                            if N < NT {
                                let dim = 8 * N + 2 * t as usize;
                                *values.add(dim) = acc[N][2 * R];
                                *values.add(dim + 1) = acc[N][2 * R + 1];
                            }
                        });
                    }
                }
            });
            if n == 1 {
                return;
            }
            // The last split of this (row, KV head) to arrive merges. The
            // warp barrier orders every lane's writes before lane 0's
            // release; its acquire (in the last block), followed by the
            // second warp barrier, makes the other blocks' writes visible
            // to every lane (`atom_add_acq_rel_u32`, with the warp in place
            // of the block).
            sync_warp();
            let mut last = 0u32;
            if lane == 0 {
                let counter = a
                    .counters
                    .add(r as usize * grid_dim_y() as usize + kvh as usize);
                let done = atom_add_acq_rel_u32(counter, 1) == splits - 1;
                if done {
                    *counter = 0; // ready for the next launch
                }
                last = u32::from(done);
            }
            sync_warp();
            if shfl_idx(last, 0) == 0 {
                return;
            }
            let first = r as usize * q_heads as usize + (kvh * group) as usize;
            merge_splits::<HD>(a.workspace, a.out, first, group, n, lane);
        }
    }

    attention_entry!(
        /// [`attention_mma`] for head dimension 64 (the names of
        /// [`MMA_ATTN_KERNELS`]).
        ///
        /// # Safety
        /// As [`attention_mma`].
        engine_attention_mma_d64 => attention_mma::<64, 4, 8>
    );
    attention_entry!(
        /// [`attention_mma`] for head dimension 128.
        ///
        /// # Safety
        /// As [`attention_mma`].
        engine_attention_mma_d128 => attention_mma::<128, 8, 16>
    );
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn geometry_fits_the_hardware() {
        for (d, name) in MMA_ATTN_KERNELS {
            assert_eq!(mma_attn_kernel(d, 4), Some(name));
            // Padded rows: 16-byte aligned, and 8 consecutive rows start in
            // distinct groups of four banks (conflict-free ldmatrix).
            let row = mma_attn_row_bytes(d);
            assert!(row.is_multiple_of(16));
            let banks: std::collections::BTreeSet<u32> =
                (0..8).map(|i| (i * row / 16) % 8).collect();
            assert_eq!(banks.len(), 8, "head_dim {d}");
            // Under the 48 KB a launch gets without opting in.
            assert!(mma_attn_smem_bytes(d) <= 48 * 1024);
        }
        let (half, full) = (MMA_ATTN_HALF_CARVEOUT, MMA_ATTN_FULL_CARVEOUT);
        assert_eq!(mma_attn_blocks_per_sm(128, half), 3);
        assert_eq!(mma_attn_blocks_per_sm(64, half), 6);
        assert_eq!(mma_attn_blocks_per_sm(128, full), 6);
        assert_eq!(mma_attn_blocks_per_sm(64, full), 12);
        // decode up to batch 32 at half, batch 64 and prefills at full
        assert_eq!(mma_attn_carveout(1), half);
        assert_eq!(mma_attn_carveout(32), half);
        assert_eq!(mma_attn_carveout(33), full);
        assert_eq!(mma_attn_carveout(4096), full);
        assert_eq!(mma_attn_kernel(128, 0), None);
        assert_eq!(mma_attn_kernel(128, 17), None);
        assert_eq!(mma_attn_kernel(96, 4), None);
        assert_eq!(mma_attn_kernel(64, 16), Some("engine_attention_mma_d64"));
    }
}
