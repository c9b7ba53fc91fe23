//! One small wrapper per Hopper-only PTX instruction (compiled into the
//! `sm_90a` image alone): warpgroup MMA, `mbarrier` transaction counts,
//! bulk and tensor copies, proxy fences, `setmaxnreg`. Section names refer
//! to the PTX ISA reference (version 8.x); kernel bodies call these and
//! never contain raw `asm!`.
//!
//! Operands of the copy and barrier instructions are 32-bit shared-window
//! addresses (as `ptx::dynamic_shared_memory` gives them); a CTA's own
//! shared-window address is also a valid `shared::cluster` address of it.

use core::arch::asm;

use crate::ptx::FragA;

/// Orders this thread's earlier register writes (the A fragments, the
/// accumulators) before the `wgmma.mma_async` operations that read them
/// (PTX ISA, "wgmma.fence"). Needed before the first `wgmma` of a batch
/// whenever ordinary instructions touched its registers.
///
/// # Safety
/// Warpgroup-collective: all 128 threads of the warpgroup execute it,
/// converged.
#[inline(always)]
pub unsafe fn wgmma_fence() {
    // SAFETY: no operands; the caller keeps the warpgroup converged.
    unsafe { asm!("wgmma.fence.sync.aligned;", options(nostack)) }
}

/// Closes the batch of `wgmma.mma_async` operations issued since the last
/// commit into a *wgmma-group* (PTX ISA, "wgmma.commit_group").
///
/// # Safety
/// Warpgroup-collective, as [`wgmma_fence`].
#[inline(always)]
pub unsafe fn wgmma_commit_group() {
    // SAFETY: no operands; the caller keeps the warpgroup converged.
    unsafe { asm!("wgmma.commit_group.sync.aligned;", options(nostack)) }
}

/// Waits until at most `N` wgmma-groups of this warpgroup are pending
/// (PTX ISA, "wgmma.wait_group"): only then may their accumulators be read
/// and their A registers and shared-memory operands be reused.
///
/// # Safety
/// Warpgroup-collective, as [`wgmma_fence`].
#[inline(always)]
pub unsafe fn wgmma_wait_group<const N: u32>() {
    // SAFETY: no memory operands; the caller keeps the warpgroup converged.
    unsafe { asm!("wgmma.wait_group.sync.aligned {n};", n = const N, options(nostack)) }
}

/// Stores four 8×8 BF16 matrices from the warp's registers to shared
/// memory, each transposed (PTX ISA, "stmatrix", `.m8n8.x4.trans`, sm_90):
/// lane `i`'s register `k` holds row `i / 4`, columns `2·(i % 4)` and `+ 1`
/// of matrix `k` (the layout of an `mma` C fragment packed to BF16), and
/// lane `8k + r` gives the address of stored row `r` of matrix `k`, which
/// receives the matrix's column `r`: its 8 elements, 16 bytes.
///
/// # Safety
/// `s_row` is a 16-byte aligned shared address with 16 writable bytes; all
/// 32 lanes of the warp execute it together.
#[inline(always)]
pub unsafe fn stmatrix_x4_trans(s_row: u32, r: [u32; 4]) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [{p}], {{{r0}, {r1}, {r2}, {r3}}};",
            p = in(reg32) s_row,
            r0 = in(reg32) r[0], r1 = in(reg32) r[1], r2 = in(reg32) r[2], r3 = in(reg32) r[3],
            options(nostack, preserves_flags),
        );
    }
}

/// `wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16` with A from
/// registers (PTX ISA, "wgmma.mma_async"; register fragments in "Matrix
/// Fragments for wgmma.mma_async.m64nNk16"): `D += A · B` for the
/// warpgroup's 64 × N tile. `a` is this thread's A fragment, laid out as
/// `mma.m16n8k16`'s A for the warp's 16 rows; `b_desc` describes the
/// K-major 16 × N B operand in shared memory (`sm90::x_descriptor`); `acc`
/// holds this thread's N / 2 f32 accumulators, 4 per 8 columns
/// (`sm90::accumulator_position`). Scale factors 1, B not transposed,
/// always accumulating (`scale-d` = 1).
///
/// The instruction runs asynchronously: the accumulators are valid only
/// after [`wgmma_commit_group`] and [`wgmma_wait_group`]; until then
/// neither they nor `a`'s registers may be touched by other instructions
/// (ptxas serialises the wgmma pipeline when they are, and says so).
macro_rules! wgmma_rs {
    ($name:ident, $n:literal, $regs:literal, $blocks:literal) => {
        #[doc = concat!("m64n", stringify!($n), "k16 form of the register-A `wgmma` (see the module's macro).")]
        ///
        /// # Safety
        /// Warpgroup-collective: all 128 threads issue it converged, after a
        /// [`wgmma_fence`]; `b_desc` describes readable shared memory that
        /// stays unchanged until the matching [`wgmma_wait_group`].
        #[inline(always)]
        pub unsafe fn $name(acc: &mut [[f32; 4]; $blocks], a: FragA, b_desc: u64) {
            // SAFETY: the caller's promise; operands are registers.
            unsafe {
                seq_macro::seq!(I in 1..$regs {
                    asm!(
                        concat!(
                            "wgmma.mma_async.sync.aligned.m64n", stringify!($n),
                            "k16.f32.bf16.bf16 {{{0}",
                            #( ", {", I, "}", )*
                            "}}, {{{a0}, {a1}, {a2}, {a3}}}, {b}, 1, 1, 1, 0;"
                        ),
                        inout(reg32) acc[0][0],
                        #( inout(reg32) acc[I / 4][I % 4], )*
                        a0 = in(reg32) a[0],
                        a1 = in(reg32) a[1],
                        a2 = in(reg32) a[2],
                        a3 = in(reg32) a[3],
                        b = in(reg64) b_desc,
                        options(nostack),
                    );
                });
            }
        }
    };
}

wgmma_rs!(wgmma_m64n16k16_bf16, 16, 8, 2);
wgmma_rs!(wgmma_m64n32k16_bf16, 32, 16, 4);
wgmma_rs!(wgmma_m64n64k16_bf16, 64, 32, 8);
wgmma_rs!(wgmma_m64n128k16_bf16, 128, 64, 16);
wgmma_rs!(wgmma_m64n256k16_bf16, 256, 128, 32);

/// Initialises the `mbarrier` at `s_bar` to expect `count` arrivals per
/// phase (PTX ISA, "mbarrier.init"); it starts in phase 0.
///
/// # Safety
/// `s_bar` is an 8-byte aligned shared address that no thread uses as a
/// barrier until a fence and block barrier after this.
#[inline(always)]
pub unsafe fn mbarrier_init(s_bar: u32, count: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("mbarrier.init.shared::cta.b64 [{b}], {c};", b = in(reg32) s_bar, c = in(reg32) count, options(nostack))
    }
}

/// Makes preceding `mbarrier.init`s visible to the other threads and to
/// the asynchronous proxy (the copy engines that complete transactions on
/// them) (PTX ISA, "membar/fence": `fence.mbarrier_init`).
#[inline(always)]
pub fn fence_mbarrier_init() {
    // SAFETY: no operands.
    unsafe { asm!("fence.mbarrier_init.release.cluster;", options(nostack)) }
}

/// Arrives on the barrier at `s_bar` and raises the bytes its current
/// phase waits for by `bytes` (PTX ISA, "mbarrier.arrive":
/// `.expect_tx`): the phase completes once every arrival is in and the
/// copies that name this barrier have delivered those bytes.
///
/// # Safety
/// `s_bar` is an initialised `mbarrier` in this block's shared memory.
#[inline(always)]
pub unsafe fn mbarrier_arrive_expect_tx(s_bar: u32, bytes: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "mbarrier.arrive.expect_tx.shared::cta.b64 _, [{b}], {n};",
            b = in(reg32) s_bar,
            n = in(reg32) bytes,
            options(nostack),
        )
    }
}

/// Raises the transaction count the current phase of the barrier at
/// `s_bar` waits for by `bytes`, without arriving (PTX ISA,
/// "mbarrier.expect_tx"): a copy may be started before the thread knows
/// the size of a second one it will announce with its arrival.
///
/// # Safety
/// `s_bar` is an initialised `mbarrier` in this block's shared memory
/// whose current phase this thread has not yet arrived on.
#[inline(always)]
pub unsafe fn mbarrier_expect_tx(s_bar: u32, bytes: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "mbarrier.expect_tx.shared::cta.b64 [{b}], {n};",
            b = in(reg32) s_bar,
            n = in(reg32) bytes,
            options(nostack),
        )
    }
}

/// Arrives on the barrier at `s_bar` (PTX ISA, "mbarrier.arrive"), with
/// release semantics: this thread's earlier reads of the stage it guards
/// are done before a waiter reuses it.
///
/// # Safety
/// `s_bar` is an initialised `mbarrier` in this block's shared memory.
#[inline(always)]
pub unsafe fn mbarrier_arrive(s_bar: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("mbarrier.arrive.shared::cta.b64 _, [{b}];", b = in(reg32) s_bar, options(nostack))
    }
}

/// Whether the phase of parity `parity` of the barrier at `s_bar` has
/// completed, waiting a bounded, hardware-chosen time for it first (PTX
/// ISA, "mbarrier.test_wait/try_wait": `try_wait.parity`). A fresh barrier
/// is in phase 0, and counts the phase before it (parity 1) as complete.
///
/// # Safety
/// `s_bar` is an initialised `mbarrier` in this block's shared memory.
#[inline(always)]
pub unsafe fn mbarrier_try_wait_parity(s_bar: u32, parity: u32) -> bool {
    let done: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "{{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [{b}], {q}; selp.u32 {d}, 1, 0, p; }}",
            b = in(reg32) s_bar,
            q = in(reg32) parity,
            d = out(reg32) done,
            options(nostack),
        )
    }
    done != 0
}

/// Spins on [`mbarrier_try_wait_parity`] until the phase has completed;
/// its acquire semantics make the data the phase guards visible.
///
/// # Safety
/// As [`mbarrier_try_wait_parity`].
#[inline(always)]
pub unsafe fn mbarrier_wait_parity(s_bar: u32, parity: u32) {
    // SAFETY: the caller's promise.
    while !unsafe { mbarrier_try_wait_parity(s_bar, parity) } {}
}

/// Bulk copy of `bytes` contiguous bytes global → shared by the copy
/// engine, completing `bytes` transactions on the barrier at `s_bar`
/// (PTX ISA, "cp.async.bulk": `.shared::cluster.global.mbarrier::
/// complete_tx::bytes`). One thread moves a whole 2816-byte compressed
/// tile without registers.
///
/// # Safety
/// `s_dst` (shared) and `g_src` (global) are 16-byte aligned, `bytes` a
/// multiple of 16, all inside their allocations; `s_bar` is an initialised
/// barrier whose current phase expects these bytes.
#[inline(always)]
pub unsafe fn cp_async_bulk_g2s(s_dst: u32, g_src: *const u8, bytes: u32, s_bar: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [{d}], [{s}], {n}, [{b}];",
            d = in(reg32) s_dst,
            s = in(reg64) g_src,
            n = in(reg32) bytes,
            b = in(reg32) s_bar,
            options(nostack),
        )
    }
}

/// Tensor copy of one 2-D box global → shared (TMA) at coordinates
/// (`c0` innermost, `c1`), as the tensor map at `g_map` describes it
/// (shape, strides, box, swizzle; elements outside the tensor are zero),
/// completing the box's bytes on the barrier at `s_bar` (PTX ISA,
/// "cp.async.bulk.tensor": `.2d.shared::cluster.global.tile.mbarrier::
/// complete_tx::bytes`).
///
/// # Safety
/// `g_map` is the generic address of a valid, 64-byte aligned tensor map
/// in global memory, made visible to the tensor-map proxy
/// ([`fence_proxy_tensormap_acquire`]); `s_dst` is aligned as its swizzle
/// requires (1024 bytes for 128-byte swizzle) with room for the box;
/// `s_bar` as for [`cp_async_bulk_g2s`].
#[inline(always)]
pub unsafe fn tma_load_2d(s_dst: u32, g_map: *const u64, c0: i32, c1: i32, s_bar: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{d}], [{m}, {{{x}, {y}}}], [{b}];",
            d = in(reg32) s_dst,
            m = in(reg64) g_map,
            x = in(reg32) c0,
            y = in(reg32) c1,
            b = in(reg32) s_bar,
            options(nostack),
        )
    }
}

/// Orders this thread's earlier ordinary (generic-proxy) shared-memory
/// writes before later accesses by the asynchronous proxy — `wgmma`'s
/// operand reads, bulk copies (PTX ISA, "membar/fence":
/// `fence.proxy.async.shared::cta`). Each writing thread issues it before
/// the barrier that hands the data to the tensor cores.
#[inline(always)]
pub fn fence_proxy_async_shared() {
    // SAFETY: no operands.
    unsafe { asm!("fence.proxy.async.shared::cta;", options(nostack)) }
}

/// Release half of handing a tensor map written by ordinary stores to the
/// tensor-map proxy, which TMA reads it through (PTX ISA, "membar/fence":
/// `fence.proxy.tensormap::generic.release.gpu`, PTX 8.3).
#[inline(always)]
pub fn fence_proxy_tensormap_release() {
    // SAFETY: no operands.
    unsafe {
        asm!(
            "fence.proxy.tensormap::generic.release.gpu;",
            options(nostack)
        )
    }
}

/// Acquire half (`fence.proxy.tensormap::generic.acquire.gpu [map], 128`):
/// after it, tensor copies that name the 128-byte map at `g_map` see the
/// writes released before.
///
/// # Safety
/// `g_map` is the generic address of a 128-byte tensor map in global memory.
#[inline(always)]
pub unsafe fn fence_proxy_tensormap_acquire(g_map: *const u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "fence.proxy.tensormap::generic.acquire.gpu [{m}], 128;",
            m = in(reg64) g_map,
            options(nostack),
        )
    }
}

/// Raises this warpgroup's registers per thread to `N`, taking them from
/// the block's pool (PTX ISA, "setmaxnreg": `.inc.sync.aligned.u32`); waits
/// until the pool has them. `N` is a multiple of 8 in 24..=256.
///
/// # Safety
/// Warpgroup-collective: every warp of the warpgroup executes this same
/// instruction; the kernel was compiled with a register cap (launch bounds).
#[inline(always)]
pub unsafe fn setmaxnreg_inc<const N: u32>() {
    const { assert!(N >= 24 && N <= 256 && N.is_multiple_of(8)) };
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("setmaxnreg.inc.sync.aligned.u32 {n};", n = const N, options(nostack)) }
}

/// Lowers this warpgroup's registers per thread to `N`, returning the rest
/// to the block's pool (`setmaxnreg.dec.sync.aligned.u32`).
///
/// # Safety
/// As [`setmaxnreg_inc`].
#[inline(always)]
pub unsafe fn setmaxnreg_dec<const N: u32>() {
    const { assert!(N >= 24 && N <= 256 && N.is_multiple_of(8)) };
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("setmaxnreg.dec.sync.aligned.u32 {n};", n = const N, options(nostack)) }
}
