//! Smallest proof of the Hopper path: one warpgroup computes a 64×64 tile
//! over K = 64 with four register-A `wgmma`s, B staged by ordinary stores
//! in the 128-byte-swizzled K-major layout that TMA writes for the ZipGEMM.
//! It checks, with no decode or copy engine involved, the three layouts the
//! Hopper ZipGEMM relies on: the A fragment (= `mma.m16n8k16`'s, per warp),
//! the B descriptor (`sm90::x_descriptor`, including the 32-byte step
//! between k-steps inside a swizzle row) and the accumulator positions.

use crate::format::pair_position;
use crate::ptx::{lane_id, named_barrier_sync, st_shared_u16, thread_idx};
use crate::ptx_sm90::{
    fence_proxy_async_shared, wgmma_commit_group, wgmma_fence, wgmma_m64n64k16_bf16,
    wgmma_wait_group,
};
use crate::sm90::{
    SWIZZLE_ATOM_BYTES, X_BOX_COLS, accumulator_position, sw128_offset, x_descriptor,
};

/// Rows of B (wgmma's N; M is 64, 16 rows per warp), and the K extent:
/// one box.
const N: usize = 64;
const K: usize = X_BOX_COLS;
/// Static shared memory: one box of B, plus the slack to align it to a
/// swizzle atom.
const SMEM_BYTES: usize = N * K * 2 + SWIZZLE_ATOM_BYTES;
const _: () = assert!(N / 8 == 8, "the store below unrolls 8 column blocks");

/// `d[64×64] = a[64×64] · bᵀ` with `a` and `b` (64 × 64, `b` holding the
/// activations as rows, like X) row-major BF16 and `d` row-major f32.
///
/// # Safety
/// Launch one block of 128 threads; `a` and `b` hold 4096 BF16, `d` room
/// for 4096 f32.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn demo_wgmma_m64n64k64(a: *const u16, b: *const u16, d: *mut f32) {
    let tid = thread_idx() as usize;
    let (warp, lane) = (tid / 32, lane_id() as usize);
    let smem = crate::ptx::shared_memory::<SMEM_BYTES>();
    let s_b = (smem + SWIZZLE_ATOM_BYTES as u32 - 1) & !(SWIZZLE_ATOM_BYTES as u32 - 1);
    // SAFETY: indices stay inside the sizes the caller guarantees; shared
    // addresses inside the static allocation; one converged warpgroup.
    unsafe {
        // B: each thread stores 32 elements at their swizzled places.
        let mut e = tid;
        while e < N * K {
            let (row, col) = (e / K, e % K);
            st_shared_u16(s_b + sw128_offset(row, col) as u32, *b.add(e));
            e += 128;
        }
        // Ordinary stores, read next by the tensor cores: async proxy.
        fence_proxy_async_shared();
        named_barrier_sync(0, 128);

        // A: this warp's 16 rows, pair p of k-step s at the mma.m16n8k16 A
        // position, the same map the compressed format uses.
        let mut acc = [[0f32; 4]; 8];
        wgmma_fence();
        seq_macro::seq!(S in 0..4 {
            let frag = [0usize, 1, 2, 3].map(|r| {
                let pair = 4 * S + r;
                let (row, col) = pair_position(lane, pair, 0);
                let at = (16 * warp + row) * K + col;
                u32::from(*a.add(at)) | u32::from(*a.add(at + 1)) << 16
            });
            wgmma_m64n64k16_bf16(&mut acc, frag, x_descriptor(s_b, N, S));
        });
        wgmma_commit_group();
        wgmma_wait_group::<0>();

        // Constant indices only: the accumulators must stay in registers.
        seq_macro::seq!(J in 0..8 {
            seq_macro::seq!(I in 0..4 {
                let (row, col) = accumulator_position(lane as u32, J, I);
                *d.add((16 * warp + row as usize) * N + col as usize) = acc[J][I];
            });
        });
    }
}
