//! Causal attention with grouped-query heads, for prefill and decode alike:
//! each query row (a token of sequence `s` at position `p`) attends to
//! positions `0..=p` of its sequence in the KV cache, which
//! [`super::rope`]'s kernel has filled up to `p` first. A prefill launches
//! one row per prompt token, a decode step one row per sequence; sequences
//! of different lengths share a launch.
//!
//! One block per (row, KV head, chunk of its query heads, split of the
//! positions). The query heads of a group read the same keys and values, so
//! a block serves several of them at once ([`AttnShape`]): its warps take
//! every [`ATTN_WARPS`]-th key of the split, each warp's lanes split into
//! one group of `lanes_per_head` lanes per query head, each lane holding
//! `dims_per_lane` dimensions. A key's row is loaded once per warp for all
//! heads, and one shuffle butterfly (log₂ lanes_per_head steps) reduces
//! every head's score at once. Each lane keeps an online softmax (running
//! maximum, sum, weighted values); the warps merge in shared memory.
//!
//! Keys and values reach the block through a shared-memory ring filled by
//! `cp.async` ([`ATTN_STAGES`] stages of [`tile_keys`] positions): the next
//! tiles are in flight while the warps read the current one, so the bytes
//! in flight no longer depend on the registers a warp can spare.
//! (Loading each lane's dimensions straight from global memory, two keys
//! per warp at a time, kept ~24 KB in flight per SM and ran at ~0.5 TB/s:
//! 10.4 of a 16.3 ms profiled step at batch 64, commit 7f63f8e.)
//!
//! At decode the rows are few (one per sequence), so the positions are
//! split ([`attention_splits`], flash-decoding style) to fill the card:
//! each split writes its unnormalised partial state to a workspace, and the
//! last block of a (row, heads) to finish, told by an arrival counter,
//! merges the splits and writes the output (one launch; a separate combine
//! kernel cost a graph node and a launch per layer, commits bfde437–d443b02). The split count follows
//! the cache capacity, not the current position, so one CUDA graph serves
//! every step; splits past the position write an empty state.
//!
//! Tried first (commit 78c4816): one block per (row, query head), one key
//! per warp at a time, no splits: at batch 1 of a Llama-3-8B shape 32
//! blocks for 132 SMs, 1.8 ms of a 7.2 ms step (21%); at batch 64 each key
//! was read once per query head of its group, 11.6 ms (62%). Scores,
//! probabilities and sums are f32 throughout.

/// Warps per block, each taking every `ATTN_WARPS`-th key of its split.
pub const ATTN_WARPS: u32 = 8;
/// Threads per block of `engine_attention`.
pub const ATTN_THREADS: u32 = 32 * ATTN_WARPS;
/// Largest head dimension.
pub const ATTN_MAX_HEAD_DIM: u32 = 256;
/// Dimensions one block holds (query heads per block × head dimension),
/// and so per warp: 8 per lane. 16 per lane (512) held a Llama-3-8B group
/// of four heads in one block but took 147 registers, one block per SM:
/// at batch 64 decode attention ran slower than the one-head-per-block
/// kernel before it (13.7 vs 11.6 ms of a profiled step, commit bfde437).
pub const ATTN_BLOCK_DIMS: u32 = 256;
/// Blocks per multiprocessor `engine_attention` is compiled for (PTX
/// `.minnctapersm`, added by the host's build script): the loop is
/// latency-bound, so residency is what keeps loads in flight (4 blocks of 8
/// warps, 64 registers, each block a 16 KB tile in flight). At 3 (71
/// registers) a batch-8 decode launch of 512 blocks ran as one full wave
/// of 396 and a second of 116, and batch 32's 512 unsplit blocks too.
pub const ATTN_MIN_BLOCKS_PER_SM: u32 = 4;
/// Dimensions per lane at most.
pub const ATTN_LANE_DIMS: usize = (ATTN_BLOCK_DIMS / 32) as usize;
/// Query heads per block at most (head dimension 32).
pub const ATTN_MAX_SLOTS: u32 = ATTN_BLOCK_DIMS / 32;
/// Bytes of one stage of the key/value ring: a tile of keys and the same
/// positions' values, 8 KB each ([`tile_keys`] positions).
pub const ATTN_STAGE_BYTES: u32 = 16384;
/// Stages of the ring: one tile is read while the next `ATTN_STAGES - 1`
/// are in flight. Two stages of 16 KB ran batch-64 decode attention in
/// 6.06 ms of a profiled step (commit 04d31d4); four stages of 8 KB (three
/// tiles in flight, 72 KB per SM) in 6.71 ms (5b9d14c): the smaller tiles
/// cost more barriers per byte than the deeper look-ahead saved, so bytes
/// in flight are not what holds it back.
pub const ATTN_STAGES: u32 = 2;
/// Bytes of the merge area: per warp its weighted values
/// ([`ATTN_BLOCK_DIMS`] f32), then per warp and head slot its maximum and
/// sum.
pub const ATTN_MERGE_BYTES: u32 =
    (ATTN_WARPS * ATTN_BLOCK_DIMS + 2 * ATTN_WARPS * ATTN_MAX_SLOTS) * 4;
/// Shared memory of a block: the merge area, then the ring.
pub const ATTN_SMEM_BYTES: usize = (ATTN_MERGE_BYTES + ATTN_STAGES * ATTN_STAGE_BYTES) as usize;

/// Positions per tile of the ring for `head_dim`: the whole rows half a
/// stage holds (32 at head_dim 128).
#[inline(always)]
pub const fn tile_keys(head_dim: u32) -> u32 {
    ATTN_STAGE_BYTES / 2 / (2 * if head_dim == 0 { 1 } else { head_dim })
}

/// 16-byte copies per tile and per thread, for the keys (and as many for
/// the values): a tile is always [`ATTN_STAGE_BYTES`] / 2 bytes.
pub const ATTN_COPIES_PER_THREAD: u32 = ATTN_STAGE_BYTES / 2 / 16 / ATTN_THREADS;
/// Fewest cache positions per split: below this a split's fixed cost (the
/// merge, the workspace round trip) outweighs its keys.
pub const ATTN_MIN_SPLIT_KEYS: usize = 32;
/// Most splits of one row (bounds the workspace).
pub const ATTN_MAX_SPLITS: usize = 64;
/// How a block lays out the query heads it serves (see the module docs).
/// Kernel and host both derive it from the head dimension and group size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Query heads per block (a power of two; slots past the group idle).
    pub slots: u32,
    /// Lanes per query head: `32 / slots`.
    pub lanes_per_head: u32,
    /// Dimensions per lane: `head_dim / lanes_per_head` (≤ [`ATTN_LANE_DIMS`]).
    pub dims_per_lane: u32,
    /// Blocks per KV head: `⌈group / slots⌉`.
    pub head_chunks: u32,
}

impl AttnShape {
    /// The shape for `group` query heads per KV head of `head_dim`
    /// dimensions; `None` unless head_dim is a multiple of 32 no larger
    /// than [`ATTN_MAX_HEAD_DIM`] and the group is not empty.
    pub const fn new(head_dim: u32, group: u32) -> Option<Self> {
        if head_dim == 0
            || !head_dim.is_multiple_of(32)
            || head_dim > ATTN_MAX_HEAD_DIM
            || group == 0
            || group > 1 << 16
        {
            return None;
        }
        // The most heads that fit the block's dimensions, as a power of two
        // (so that lane groups tile the warp), no more than the group needs.
        // In shifts, so the kernel has no division (and no panic path).
        let mut log = 0;
        while (1 << log) < group && (2 << log) * head_dim <= ATTN_BLOCK_DIMS {
            log += 1;
        }
        let slots = 1 << log;
        Some(Self {
            slots,
            lanes_per_head: 32 >> log,
            dims_per_lane: (head_dim << log) >> 5,
            head_chunks: (group + slots - 1) >> log,
        })
    }
}

/// Splits of the positions per row for a launch of `rows` rows over
/// `kv_heads` KV heads (blocks without splits: rows × kv_heads ×
/// head_chunks) and a cache of `capacity` positions, on a card that runs
/// `wave` blocks at once (multiprocessors × [`ATTN_MIN_BLOCKS_PER_SM`]): as
/// many as one wave holds (rounded down: a few blocks past the wave would
/// run as a second wave as long as the first), at least
/// [`ATTN_MIN_SPLIT_KEYS`] positions each, at most [`ATTN_MAX_SPLITS`].
pub const fn attention_splits(blocks: usize, capacity: usize, wave: usize) -> usize {
    if blocks == 0 || blocks >= wave {
        return 1;
    }
    let want = wave / blocks;
    let most = capacity / ATTN_MIN_SPLIT_KEYS;
    let s = if want < most { want } else { most };
    if s > ATTN_MAX_SPLITS {
        ATTN_MAX_SPLITS
    } else if s == 0 {
        1
    } else {
        s
    }
}

/// Positions of the cache each split covers: `⌈capacity / splits⌉`.
#[inline(always)]
pub const fn split_keys(capacity: u32, splits: u32) -> u32 {
    capacity.div_ceil(if splits == 0 { 1 } else { splits })
}

/// f32 words of split workspace a launch needs: per (row, query head,
/// split) its maximum and sum, then its weighted values. None without
/// splits. Beside it the launch needs one arrival counter (u32, zero) per
/// block of a split: [`attention_counters`].
pub const fn attention_workspace_words(
    rows: usize,
    q_heads: usize,
    head_dim: usize,
    splits: usize,
) -> usize {
    if splits <= 1 {
        0
    } else {
        rows * q_heads * splits * (head_dim + 2)
    }
}

use super::math::exp2_fast;

/// Running softmax over the scores seen so far, in base 2: scores come in
/// log2 units (the natural score × log2 e, folded into the query's scale),
/// so each weight is one `exp2` ([`exp2_fast`]). Holds their maximum and
/// `Σ 2^(score − max)`.
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
        // 2^(−inf − max) = 0: the first score clears the empty state.
        let rescale = exp2_fast(self.max - max);
        let weight = exp2_fast(score - max);
        self.sum = self.sum * rescale + weight;
        self.max = max;
        (rescale, weight)
    }

    /// Moves the maximum to cover a tile of scores whose largest is
    /// `tile_max` (−inf: every score masked, nothing changes) and returns
    /// the factor that scales what was summed before: the tile-wise form
    /// of [`OnlineSoftmax::push`], where each weight is then
    /// [`OnlineSoftmax::weight`] and the caller adds the weights to `sum`.
    #[inline(always)]
    pub fn advance(&mut self, tile_max: f32) -> f32 {
        let max = self.max.max(tile_max);
        if max == f32::NEG_INFINITY {
            return 1.0;
        }
        // 2^(−inf − max) = 0: the first tile clears the empty state.
        let rescale = exp2_fast(self.max - max);
        self.sum *= rescale;
        self.max = max;
        rescale
    }

    /// Weight of `score` under the current maximum (0 for a masked score,
    /// −inf, and while no score has been seen).
    #[inline(always)]
    pub fn weight(&self, score: f32) -> f32 {
        if self.max == f32::NEG_INFINITY {
            0.0
        } else {
            exp2_fast(score - self.max)
        }
    }

    /// Weight of a partial state whose maximum is `part_max` in a merge
    /// whose overall maximum is `max` (0 for a part that saw no score).
    #[inline(always)]
    pub fn merge_weight(part_max: f32, max: f32) -> f32 {
        if part_max == f32::NEG_INFINITY {
            0.0
        } else {
            exp2_fast(part_max - max)
        }
    }
}

/// Arrival counters a split launch of `rows` rows needs: one per (row, KV
/// head, head chunk), zero before the first launch; the kernel leaves them
/// zero.
pub const fn attention_counters(
    rows: usize,
    kv_heads: usize,
    head_chunks: usize,
    splits: usize,
) -> usize {
    if splits <= 1 {
        0
    } else {
        rows * kv_heads * head_chunks
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
pub(crate) mod gpu {
    use super::*;
    use crate::engine::math::{bf16_to_f32, f32_to_bf16};
    use crate::engine::rope::cache_offset;
    use crate::launch::nonzero;
    use crate::ptx::{
        atom_add_acq_rel_u32, block_idx, cp_async_16, cp_async_commit, cp_async_wait, ld_cg_f32,
        ld_shared_u16, ld_shared_u32, ld_shared_v2, ld_shared_v4, shared_memory, shfl_idx,
        st_shared_u32, sync_threads, thread_idx, trap,
    };

    /// `dims` (1, 2, 4 or 8) consecutive BF16 values at shared address
    /// `addr` as f32, the rest of the array zero: one load.
    ///
    /// # Safety
    /// `addr` is a shared address of `2 * dims` readable bytes, aligned to
    /// them.
    #[inline(always)]
    unsafe fn load_dims(addr: u32, dims: u32) -> [f32; ATTN_LANE_DIMS] {
        let mut r = [0f32; ATTN_LANE_DIMS];
        let pair = |w: u32| (bf16_to_f32(w as u16), bf16_to_f32((w >> 16) as u16));
        // SAFETY: as the caller promised.
        unsafe {
            match dims {
                8 => {
                    let w = ld_shared_v4(addr);
                    seq_macro::seq!(E in 0..4 {
                        (r[2 * E], r[2 * E + 1]) = pair(w[E]);
                    });
                }
                4 => {
                    let w = ld_shared_v2(addr);
                    (r[0], r[1]) = pair(w[0]);
                    (r[2], r[3]) = pair(w[1]);
                }
                2 => (r[0], r[1]) = pair(ld_shared_u32(addr)),
                _ => r[0] = bf16_to_f32(ld_shared_u16(addr)),
            }
        }
        r
    }

    /// Sum of `v` over each aligned group of `lanes` lanes (a power of two).
    #[inline(always)]
    fn group_sum(v: f32, lanes: u32) -> f32 {
        let lane = thread_idx() % 32;
        let mut v = v;
        let mut m = lanes / 2;
        while m > 0 {
            v += f32::from_bits(shfl_idx(v.to_bits(), lane ^ m));
            m /= 2;
        }
        v
    }

    /// Dimension `dim` of one (row, query head)'s attention output from the
    /// `n` split states at `ws` (maxima and sums, then each split's
    /// unnormalised values: [`attention_workspace_words`]'s layout), read
    /// from L2 (other blocks wrote them).
    ///
    /// # Safety
    /// `ws` holds the (row, head)'s `n · (d + 2)` words, written by every
    /// split and made visible (the arrival counter's acquire); `dim < d`.
    #[inline(always)]
    pub(crate) unsafe fn merged_value(ws: *const f32, n: usize, d: usize, dim: usize) -> f32 {
        // SAFETY: the caller's promise.
        unsafe {
            let mut max = f32::NEG_INFINITY;
            let mut s = 0;
            while s < n {
                max = max.max(ld_cg_f32(ws.add(2 * s)));
                s += 1;
            }
            let (mut sum, mut value) = (0.0f32, 0.0f32);
            let mut s = 0;
            while s < n {
                let weight = OnlineSoftmax::merge_weight(ld_cg_f32(ws.add(2 * s)), max);
                sum += weight * ld_cg_f32(ws.add(2 * s + 1));
                value += weight * ld_cg_f32(ws.add(2 * n + s * d + dim));
                s += 1;
            }
            value / sum
        }
    }

    /// Arguments of both attention kernels (`engine_attention` and the
    /// tensor-core `engine_attention_mma_d*`), in the order their entry
    /// points take them ([`attention_entry`]); see `engine_attention` for
    /// what each holds.
    #[derive(Clone, Copy)]
    pub(crate) struct AttnArgs {
        pub q: *const u16,
        pub q_stride: u32,
        pub out: *mut u16,
        pub workspace: *mut f32,
        pub counters: *mut u32,
        pub row_seq: *const u32,
        pub row_pos: *const u32,
        pub cache_k: *const u16,
        pub cache_v: *const u16,
        pub q_heads: u32,
        pub kv_heads: u32,
        pub head_dim: u32,
        pub capacity: u32,
        pub sequences: u32,
        pub scale: f32,
    }

    /// Defines the entry point `$name` with the one parameter list of the
    /// attention kernels (the host's launch passes them in this order, as
    /// [`AttnArgs`] holds them) and runs `$run` on them.
    macro_rules! attention_entry {
        ($(#[$doc:meta])* $name:ident => $run:expr) => {
            $(#[$doc])*
            #[unsafe(no_mangle)]
            #[allow(clippy::too_many_arguments)]
            pub unsafe extern "ptx-kernel" fn $name(
                q: *const u16,
                q_stride: u32,
                out: *mut u16,
                workspace: *mut f32,
                counters: *mut u32,
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
                let args = $crate::engine::attention::gpu::AttnArgs {
                    q,
                    q_stride,
                    out,
                    workspace,
                    counters,
                    row_seq,
                    row_pos,
                    cache_k,
                    cache_v,
                    q_heads,
                    kv_heads,
                    head_dim,
                    capacity,
                    sequences,
                    scale,
                };
                // SAFETY: forwarded from the caller.
                unsafe { ($run)(args) }
            }
        };
    }
    pub(crate) use attention_entry;

    /// `softmax(scale · q·Kᵀ) V` of row `r` over positions `0..=row_pos[r]`
    /// of sequence `row_seq[r]`, for the query heads and positions of this
    /// block (grid: rows, kv_heads × head_chunks, splits). With one split
    /// the result goes to `out`, else the split's partial state to
    /// `workspace` (see [`attention_workspace_words`]).
    ///
    /// # Safety
    /// `q` holds rows × `q_stride` BF16 (row r's head h at `r * q_stride +
    /// h * head_dim`), `out` rows × q_heads × head_dim; `row_seq`, `row_pos`
    /// `rows` u32; the caches sequences × kv_heads × capacity × head_dim
    /// BF16, filled up to each row's position; `workspace` the words
    /// [`attention_workspace_words`] gives for `splits`, `counters` the
    /// zeroed [`attention_counters`]. kv_heads divides q_heads; grid y is
    /// kv_heads × [`AttnShape::head_chunks`]. Block [`ATTN_THREADS`]. A
    /// position or sequence out of range, or a shape [`AttnShape::new`]
    /// refuses, traps.
    #[inline(always)]
    unsafe fn attention_heads(a: AttnArgs) {
        let AttnArgs {
            q,
            q_stride,
            out,
            workspace,
            counters,
            row_seq,
            row_pos,
            cache_k,
            cache_v,
            q_heads,
            kv_heads,
            head_dim,
            capacity,
            sequences,
            scale,
        } = a;
        // Inputs may come from the kernel before (launch overlap).
        crate::ptx::start_after_prior_grids();
        let s_all = shared_memory::<ATTN_SMEM_BYTES>();
        let s_acc = s_all; // (ATTN_WARPS, ATTN_BLOCK_DIMS) f32
        let s_state = s_all + 4 * ATTN_WARPS * ATTN_BLOCK_DIMS; // (ATTN_WARPS, slots, 2) f32
        let s_ring = s_all + ATTN_MERGE_BYTES; // (ATTN_STAGES, keys | values)
        let (r, y, split) = block_idx();
        let splits = crate::ptx::grid_dim_z();
        let (warp, lane) = (thread_idx() / 32, thread_idx() % 32);
        let group = q_heads / nonzero(kv_heads);
        let Some(AttnShape {
            slots,
            lanes_per_head,
            dims_per_lane: dims,
            head_chunks,
        }) = AttnShape::new(head_dim, group)
        else {
            trap()
        };
        // Divisors through `nonzero` (AttnShape::new made them non-zero):
        // no division-by-zero panic path in the kernel.
        let (chunks_nz, lanes_nz, dim_nz) = (
            nonzero(head_chunks),
            nonzero(lanes_per_head),
            nonzero(head_dim),
        );
        let (kvh, chunk) = (y / chunks_nz, y % chunks_nz);
        let slot = lane / lanes_nz;
        let in_group = chunk * slots + slot;
        let active = in_group < group;
        let head = kvh * group + in_group;
        let first_dim = (lane % lanes_nz) * dims;
        // SAFETY: sequence and position are checked against the cache; a
        // lane's dimensions stay below head_dim; shared addresses inside
        // s_all (slots * head_dim ≤ ATTN_BLOCK_DIMS).
        unsafe {
            let (seq, pos) = (*row_seq.add(r as usize), *row_pos.add(r as usize));
            if seq >= sequences || pos >= capacity {
                trap();
            }
            // Scores in log2 units for the base-2 online softmax.
            let scale = scale * core::f32::consts::LOG2_E;
            let mut r_q = [0f32; ATTN_LANE_DIMS];
            if active {
                let at = r as usize * q_stride as usize + (head * head_dim + first_dim) as usize;
                seq_macro::seq!(E in 0..8 {
                    if E < dims {
                        r_q[E] = bf16_to_f32(*q.add(at + E)) * scale;
                    }
                });
            }
            let keys = split_keys(capacity, splits);
            let start = split * keys;
            let end = (start + keys).min(pos + 1);
            let (kv, cap, d) = (kv_heads as usize, capacity as usize, head_dim as usize);
            // This (sequence, KV head)'s positions are contiguous in the
            // caches: a tile is one contiguous run of bytes in each.
            let first = cache_offset(seq as usize, kvh as usize, 0, kv, cap, d);
            let (g_k, g_v) = (
                cache_k.add(first) as *const u8,
                cache_v.add(first) as *const u8,
            );
            let tile = tile_keys(head_dim);
            let row_bytes = 2 * head_dim;
            let tiles = end.saturating_sub(start).div_ceil(tile);
            // Copies tile `t` into its stage; positions past `end` are
            // zero-filled without reading.
            let issue = |t: u32| {
                let stage = s_ring + (t % ATTN_STAGES) * ATTN_STAGE_BYTES;
                let k0 = start + t * tile;
                let mut c = 0;
                while c < ATTN_COPIES_PER_THREAD {
                    let at = (c * ATTN_THREADS + thread_idx()) * 16; // byte in the tile
                    let key = k0 + at / row_bytes;
                    let live = if key < end { 16 } else { 0 };
                    let src =
                        (k0 as usize * row_bytes as usize + at as usize) * (live as usize / 16);
                    cp_async_16(stage + at, g_k.add(src), live);
                    cp_async_16(stage + ATTN_STAGE_BYTES / 2 + at, g_v.add(src), live);
                    c += 1;
                }
            };
            // Two keys per warp at a time: their reads and butterflies are
            // independent, so their latencies overlap.
            let mut state = OnlineSoftmax::EMPTY;
            let mut r_acc = [0f32; ATTN_LANE_DIMS];
            // The first ATTN_STAGES - 1 tiles in flight, one commit group
            // each (maybe empty).
            let mut p = 0;
            while p < ATTN_STAGES - 1 {
                if p < tiles {
                    issue(p);
                }
                cp_async_commit();
                p += 1;
            }
            let lane_bytes = 2 * first_dim;
            let mut t = 0;
            while t < tiles {
                if t + ATTN_STAGES - 1 < tiles {
                    issue(t + ATTN_STAGES - 1);
                }
                // One group per iteration (maybe empty), so "all but the
                // newest ATTN_STAGES - 1" is always up to tile t.
                cp_async_commit();
                cp_async_wait::<{ ATTN_STAGES - 1 }>();
                sync_threads();
                let stage = s_ring + (t % ATTN_STAGES) * ATTN_STAGE_BYTES;
                let k0 = start + t * tile;
                let here = (end - k0).min(tile);
                let mut i = warp;
                while i < here {
                    let i2 = i + ATTN_WARPS;
                    let two = i2 < here; // warp-uniform
                    let (a1, a2) = (
                        stage + i * row_bytes + lane_bytes,
                        stage + (if two { i2 } else { i }) * row_bytes + lane_bytes,
                    );
                    let (k1, k2) = (load_dims(a1, dims), load_dims(a2, dims));
                    let (mut dot1, mut dot2) = (0.0f32, 0.0f32);
                    seq_macro::seq!(E in 0..8 {
                        dot1 += r_q[E] * k1[E];
                        dot2 += r_q[E] * k2[E];
                    });
                    // The values are loaded once the keys are spent, so
                    // the two never hold registers together.
                    let half = ATTN_STAGE_BYTES / 2;
                    let (v1, v2) = (load_dims(a1 + half, dims), load_dims(a2 + half, dims));
                    let (s1, s2) = (
                        group_sum(dot1, lanes_per_head),
                        group_sum(dot2, lanes_per_head),
                    );
                    let (rescale, weight) = state.push(s1);
                    seq_macro::seq!(E in 0..8 {
                        r_acc[E] = r_acc[E] * rescale + weight * v1[E];
                    });
                    if two {
                        let (rescale, weight) = state.push(s2);
                        seq_macro::seq!(E in 0..8 {
                            r_acc[E] = r_acc[E] * rescale + weight * v2[E];
                        });
                    }
                    i += 2 * ATTN_WARPS;
                }
                // Every warp is done with this stage before tile
                // t + ATTN_STAGES is copied into it (next iteration).
                sync_threads();
                t += 1;
            }
            // Merge the warps' partial states: lane `l` holds dimensions
            // `l * dims ..` of the block's slots × head_dim values.
            if lane % lanes_nz == 0 {
                let at = s_state + 8 * (warp * slots + slot);
                st_shared_u32(at, state.max.to_bits());
                st_shared_u32(at + 4, state.sum.to_bits());
            }
            let s_warp = s_acc + 4 * (warp * ATTN_BLOCK_DIMS + lane * dims);
            seq_macro::seq!(E in 0..8 {
                if E < dims {
                    st_shared_u32(s_warp + 4 * E, r_acc[E].to_bits());
                }
            });
            sync_threads();
            let mut x = thread_idx();
            while x < slots * head_dim {
                let (slot, dim) = (x / dim_nz, x % dim_nz);
                let in_group = chunk * slots + slot;
                if in_group < group {
                    let head = kvh * group + in_group;
                    let mut max = f32::NEG_INFINITY;
                    let mut w = 0;
                    while w < ATTN_WARPS {
                        let m = ld_shared_u32(s_state + 8 * (w * slots + slot));
                        max = max.max(f32::from_bits(m));
                        w += 1;
                    }
                    let (mut sum, mut value) = (0.0f32, 0.0f32);
                    let mut w = 0;
                    while w < ATTN_WARPS {
                        let at = s_state + 8 * (w * slots + slot);
                        let part = f32::from_bits(ld_shared_u32(at));
                        let weight = OnlineSoftmax::merge_weight(part, max);
                        sum += weight * f32::from_bits(ld_shared_u32(at + 4));
                        let a = s_acc + 4 * (w * ATTN_BLOCK_DIMS + x);
                        value += weight * f32::from_bits(ld_shared_u32(a));
                        w += 1;
                    }
                    let row_head = r as usize * q_heads as usize + head as usize;
                    if splits == 1 {
                        *out.add(row_head * d + dim as usize) = f32_to_bf16(value / sum);
                    } else {
                        let words = row_head * splits as usize * (d + 2);
                        let ws = workspace.add(words);
                        let local = split as usize;
                        if dim == 0 {
                            *ws.add(2 * local) = max;
                            *ws.add(2 * local + 1) = sum;
                        }
                        *ws.add(2 * splits as usize + local * d + dim as usize) = value;
                    }
                }
                x += ATTN_THREADS;
            }
            if splits == 1 {
                return;
            }
            // The last of the splits of this (row, heads) to arrive merges
            // them. The barrier orders every thread's partial writes before
            // thread 0's release; its acquire (in the last block) sees the
            // other blocks' writes, and the barrier after passes that on.
            sync_threads();
            if thread_idx() == 0 {
                let counter =
                    counters.add(r as usize * crate::ptx::grid_dim_y() as usize + y as usize);
                let last = atom_add_acq_rel_u32(counter, 1) == splits - 1;
                if last {
                    *counter = 0; // ready for the next launch
                }
                st_shared_u32(s_state, u32::from(last));
            }
            sync_threads();
            if ld_shared_u32(s_state) == 0 {
                return;
            }
            let n = splits as usize;
            let mut x = thread_idx();
            while x < slots * head_dim {
                let (slot, dim) = (x / dim_nz, x % dim_nz);
                let in_group = chunk * slots + slot;
                if in_group < group {
                    let row_head =
                        r as usize * q_heads as usize + (kvh * group + in_group) as usize;
                    let ws = workspace.add(row_head * n * (d + 2));
                    let value = merged_value(ws, n, d, dim as usize);
                    *out.add(row_head * d + dim as usize) = f32_to_bf16(value);
                }
                x += ATTN_THREADS;
            }
        }
    }

    attention_entry!(
        /// The block-per-head-chunk kernel, [`attention_heads`] (whose
        /// docs say what each argument holds).
        ///
        /// # Safety
        /// As [`attention_heads`].
        engine_attention => attention_heads
    );
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
                let (rescale, weight) = states[j % parts].push(s * core::f32::consts::LOG2_E);
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

    /// The tile-wise form (`advance`, then `weight`), with lane-partial
    /// sums merged at the end, equals the direct softmax, masked scores and
    /// all-masked tiles included.
    #[test]
    fn tile_wise_online_softmax_matches_direct() {
        let n = 70;
        let scores: Vec<f32> = (0..n)
            .map(|i| {
                if i % 9 == 4 || (32..48).contains(&i) {
                    f32::NEG_INFINITY // masked (one whole tile of 16 among them)
                } else {
                    ((i * 7919) % 23) as f32 * 0.37 - 3.0
                }
            })
            .collect();
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).cos()).collect();
        let live: Vec<usize> = (0..n).filter(|&i| scores[i] > f32::NEG_INFINITY).collect();
        let max = live
            .iter()
            .map(|&i| scores[i])
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        let w = |i: usize| ((scores[i] as f64 - max) * core::f64::consts::LN_2).exp();
        let want = live.iter().map(|&i| w(i) * values[i] as f64).sum::<f64>()
            / live.iter().map(|&i| w(i)).sum::<f64>();
        for tile in [1usize, 8, 16, 32] {
            let mut state = OnlineSoftmax::EMPTY;
            let mut acc = 0f32;
            for chunk in scores.chunks(tile).zip(values.chunks(tile)) {
                let tile_max = chunk.0.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let rescale = state.advance(tile_max);
                acc *= rescale;
                for (&s, &v) in chunk.0.iter().zip(chunk.1) {
                    let p = state.weight(s);
                    state.sum += p;
                    acc += p * v;
                }
            }
            let got = (acc / state.sum) as f64;
            assert!((got - want).abs() < 1e-5, "tile {tile}: {got} vs {want}");
        }
        // Nothing but masked scores: the state stays empty.
        let mut state = OnlineSoftmax::EMPTY;
        assert_eq!(state.advance(f32::NEG_INFINITY), 1.0);
        assert_eq!(state.weight(f32::NEG_INFINITY), 0.0);
        assert_eq!(state, OnlineSoftmax::EMPTY);
    }

    #[test]
    fn shapes_of_common_models() {
        let shape = |d, g| AttnShape::new(d, g).unwrap();
        // Llama-3-8B (head 128, group 4): two blocks of two heads.
        assert_eq!(
            shape(128, 4),
            AttnShape {
                slots: 2,
                lanes_per_head: 16,
                dims_per_lane: 8,
                head_chunks: 2
            }
        );
        // SmolLM2 (head 64, group 3): a fourth slot idles.
        assert_eq!(
            shape(64, 3),
            AttnShape {
                slots: 4,
                lanes_per_head: 8,
                dims_per_lane: 8,
                head_chunks: 1
            }
        );
        // Llama-3-70B (head 128, group 8): four blocks per KV head.
        assert_eq!(shape(128, 8).head_chunks, 4);
        // No grouping; the largest and smallest heads; a very wide group.
        assert_eq!(shape(128, 1).slots, 1);
        assert_eq!(
            shape(256, 8),
            AttnShape {
                slots: 1,
                lanes_per_head: 32,
                dims_per_lane: 8,
                head_chunks: 8
            }
        );
        assert_eq!(shape(32, 1).dims_per_lane, 1);
        assert_eq!(
            shape(32, 71),
            AttnShape {
                slots: 8,
                lanes_per_head: 4,
                dims_per_lane: 8,
                head_chunks: 9
            }
        );
        for (d, g) in [(0, 1), (48, 1), (288, 1), (128, 0)] {
            assert_eq!(AttnShape::new(d, g), None, "head_dim {d}, group {g}");
        }
    }

    /// Every shape's lanes hold each (slot, dimension) of the block exactly
    /// once, at the shared-memory index the merge reads it from, within the
    /// lane and block limits.
    #[test]
    fn lanes_tile_the_block_dimensions() {
        for d in (32..=ATTN_MAX_HEAD_DIM).step_by(32) {
            for g in 1..=20 {
                let s = AttnShape::new(d, g).unwrap();
                assert!(s.slots.is_power_of_two() && s.slots <= ATTN_MAX_SLOTS);
                assert!(s.slots * d <= ATTN_BLOCK_DIMS);
                assert!(s.dims_per_lane as usize <= ATTN_LANE_DIMS);
                assert!(s.head_chunks * s.slots >= g && (s.head_chunks - 1) * s.slots < g);
                let mut seen = std::vec![0u32; (s.slots * d) as usize];
                for lane in 0..32 {
                    let (slot, first) = (
                        lane / s.lanes_per_head,
                        (lane % s.lanes_per_head) * s.dims_per_lane,
                    );
                    for e in 0..s.dims_per_lane {
                        let x = lane * s.dims_per_lane + e; // where the lane stores it
                        assert_eq!(x, slot * d + first + e, "head_dim {d}, group {g}");
                        seen[x as usize] += 1;
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "head_dim {d}, group {g}");
            }
        }
    }

    /// The ring's tiles: whole rows, every byte of a stage copied by
    /// exactly one thread's copies, and the block's shared memory within
    /// the static 48 KB.
    #[test]
    fn ring_tiles_cover_their_stage() {
        for d in (32..=ATTN_MAX_HEAD_DIM).step_by(32) {
            // The most whole rows a half stage holds (exactly 8 KB for the
            // powers of two; the copies past the last row fetch part of
            // the next position or zeros, never read).
            let t = tile_keys(d);
            assert!(t >= 1 && t * 2 * d <= ATTN_STAGE_BYTES / 2, "head_dim {d}");
            assert!((t + 1) * 2 * d > ATTN_STAGE_BYTES / 2, "head_dim {d}");
        }
        const {
            assert!(ATTN_COPIES_PER_THREAD * ATTN_THREADS * 16 == ATTN_STAGE_BYTES / 2);
            assert!(ATTN_SMEM_BYTES <= 48 * 1024);
            assert!(ATTN_MERGE_BYTES.is_multiple_of(16));
        }
    }

    #[test]
    fn splits_fill_the_card_only_when_rows_are_few() {
        // An H100/H200: 132 multiprocessors.
        const WAVE: usize = 132 * ATTN_MIN_BLOCKS_PER_SM as usize;
        // Batch 1 of Llama-3-8B: 16 blocks; a 640-position cache allows 20.
        assert_eq!(attention_splits(16, 640, WAVE), 20);
        assert_eq!(attention_splits(2, 100_000, WAVE), ATTN_MAX_SPLITS);
        assert_eq!(attention_splits(16, 100_000, WAVE), WAVE / 16);
        // Batch 8 (128 blocks): 4 splits, 512 blocks, one wave of 528.
        assert_eq!(attention_splits(128, 640, WAVE), 4);
        assert!(attention_splits(128, 640, WAVE) * 128 <= WAVE);
        assert_eq!(attention_splits(1, 1 << 20, WAVE), ATTN_MAX_SPLITS);
        // Batch 64 (1024 blocks), or a prefill: enough blocks already.
        assert_eq!(attention_splits(1024, 640, WAVE), 1);
        // Just short of a wave: splitting would add a second one.
        assert_eq!(attention_splits(WAVE - 1, 640, WAVE), 1);
        assert_eq!(attention_splits(WAVE / 2, 640, WAVE), 2);
        // A short cache is not split below the minimum.
        assert_eq!(attention_splits(8, 12, WAVE), 1);
        assert_eq!(attention_splits(0, 640, WAVE), 1);
        for blocks in 1..300 {
            for capacity in [1, 31, 32, 33, 640, 4096] {
                let s = attention_splits(blocks, capacity, WAVE);
                assert!((1..=ATTN_MAX_SPLITS).contains(&s));
                let keys = split_keys(capacity as u32, s as u32) as usize;
                // Every position belongs to a split.
                assert!(keys * s >= capacity);
                assert!(s == 1 || keys >= ATTN_MIN_SPLIT_KEYS.min(capacity));
            }
        }
        assert_eq!(attention_workspace_words(3, 6, 64, 1), 0);
        assert_eq!(attention_workspace_words(3, 6, 64, 4), 3 * 6 * 4 * 66);
    }

    #[test]
    fn query_heads_map_to_their_group() {
        let g = core::num::NonZeroU32::new(3).unwrap();
        let heads: Vec<u32> = (0..9).map(|h| kv_head_of(h, g)).collect();
        assert_eq!(heads, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }
}
