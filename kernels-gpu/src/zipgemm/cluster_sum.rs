//! The split-K end of the `mma.sync` ZipGEMM through distributed shared
//! memory (Hopper, `sm_90a` image only).
//!
//! When the host launches a product whose row groups ("units") are each cut
//! into `s` whole K slices (blocks `u·s .. u·s + s` for unit `u`) with a
//! cluster of `s` blocks, the blocks of one unit are one cluster, so their
//! partial sums can meet in shared memory instead of in global memory:
//!   1. each warp parks its 16 × 8·NT f32 sums in its own A stage (free
//!      once its last k-step has read it);
//!   2. cluster barrier (release / acquire): every block's sums are visible
//!      to the whole cluster;
//!   3. block `r` adds, for its `1/s` of the unit's outputs, the `s` blocks'
//!      sums in rank order (so the result does not depend on which block
//!      finished first) and writes `Y`; each load is one trip through the
//!      cluster's interconnect;
//!   4. a second cluster barrier keeps every block (its shared memory)
//!      alive until all its peers have read it.
//!
//! The global-memory end it replaces (`Output::reduce_partial`) costs three
//! dependent round trips to L2 after the last tile: the partial stores
//! (released by the atomic), the arrival atomic, and the last block's loads.

use crate::format::TILE_ROWS;
use crate::launch::{GEMM_A_STAGE_BYTES, GEMM_WARPS};
use crate::ptx::sync_warp;
use crate::ptx_sm90::{
    cluster_arrive, cluster_blocks, cluster_rank, cluster_wait, ld_cluster_v4_f32,
};

/// Most blocks of a cluster this end supports (the host launches at most
/// this many: `launch::GEMM_MAX_CLUSTER`).
const MAX_PEERS: u32 = crate::launch::GEMM_MAX_CLUSTER;
/// Peers whose loads are in flight at once: eight 16-byte loads, 32
/// registers, within the one-n-tile kernel's 64.
const PEERS_PER_ROUND: u32 = 8;

/// Whether this launch sums split-K partials in its cluster (the host made
/// clusters of more than one block).
#[inline(always)]
pub fn in_cluster() -> bool {
    cluster_blocks() > 1
}

/// Steps 1–4 of the module docs for one block. `a_stage0` is warp 0's A
/// stage (the warps' stages are consecutive); `put(row, col, v)` stores
/// output `v` of row `row` of the unit (0..64) and activation column `col`
/// (0..8·NT) wherever it belongs, bounds included.
///
/// # Safety
/// Every thread of every block of the cluster calls this once, after its
/// K loop; the A stages lie in this block's shared memory.
#[inline(always)]
pub unsafe fn reduce<const NT: usize>(
    acc: &[[f32; 4]; NT],
    a_stage0: u32,
    warp: u32,
    lane: u32,
    tid: u32,
    put: impl Fn(u32, u32, f32),
) {
    let stage = |w: u32| a_stage0 + w * GEMM_A_STAGE_BYTES as u32;
    // SAFETY: every address below lies in one warp's A stage (16 × 8·NT
    // f32 ≤ its 4 KB); the barriers follow the caller's promise.
    unsafe {
        // 1. The warp's last k-step is done reading its stage.
        sync_warp();
        super::for_each_fragment::<NT>(acc, lane, |row, col, v| {
            crate::ptx::st_shared_u32(
                stage(warp) + (col * TILE_ROWS as u32 + row) * 4,
                v.to_bits(),
            )
        });
        // 2.
        cluster_arrive();
        cluster_wait();
        // 3. Runs of four rows of one column: warp w's column c, rows
        // 4q..4q+3 is run (w·8·NT + c)·4 + q, at byte (c·16 + 4q)·4 of its
        // stage. Block r takes runs r, r + s, r + 2s, …
        let (peers, rank) = (cluster_blocks().min(MAX_PEERS), cluster_rank());
        // Runs per warp: its 16 rows × 8·NT columns, four rows each.
        let warp_runs = (TILE_ROWS / 4 * 8 * NT) as u32;
        let (runs, threads) = (GEMM_WARPS * warp_runs, 32 * GEMM_WARPS);
        let mut j = rank + peers * tid;
        while j < runs {
            let (w, c, q) = (j / warp_runs, (j / 4) % (8 * NT as u32), j % 4);
            let at = stage(w) + (c * TILE_ROWS as u32 + 4 * q) * 4;
            let mut sum = [0f32; 4];
            let mut first = 0;
            while first < peers {
                let mut v = [[0f32; 4]; PEERS_PER_ROUND as usize];
                seq_macro::seq!(P in 0..8 {
                    if first + P < peers {
                        v[P] = ld_cluster_v4_f32(at, first + P);
                    }
                });
                seq_macro::seq!(P in 0..8 {
                    if first + P < peers {
                        seq_macro::seq!(E in 0..4 { sum[E] += v[P][E]; });
                    }
                });
                first += PEERS_PER_ROUND;
            }
            seq_macro::seq!(E in 0..4 {
                put(w * TILE_ROWS as u32 + 4 * q + E, c, sum[E]);
            });
            j += peers * threads;
        }
        // 4. This block's loads of its peers are done (release); its own
        // stages must outlive theirs.
        cluster_arrive();
        cluster_wait();
    }
}
