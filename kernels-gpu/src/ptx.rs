//! One small wrapper per PTX instruction the kernels use.
//!
//! Kernel bodies never contain raw `asm!`; they call these. Section numbers
//! refer to the PTX ISA reference (version 8.x).

use core::arch::asm;

/// Abort the kernel; the launch then reports an error to the host.
#[inline(always)]
pub fn trap() -> ! {
    // SAFETY: `trap` has no operands and never returns.
    unsafe { asm!("trap;", options(noreturn, nostack)) }
}

/// Lane index within the warp (0..32).
#[inline(always)]
pub fn lane_id() -> u32 {
    let r: u32;
    // SAFETY: reads a special register.
    unsafe { asm!("mov.u32 {r}, %laneid;", r = out(reg32) r, options(pure, nomem, nostack)) }
    r
}

/// Accumulator fragment of `mma.m16n8k16` with f32 accumulation: four f32 per
/// lane, laid out as in PTX ISA §9.7.14.5.8 ("Matrix Fragments for
/// mma.m16n8k16 with floating point type"), figure for the C/D matrix.
pub type FragC = [f32; 4];
/// A fragment of `mma.m16n8k16` with bf16 inputs: four 32-bit registers, each
/// holding two bf16 (same section, figure for the A matrix).
pub type FragA = [u32; 4];
/// B fragment of `mma.m16n8k16` with bf16 inputs: two 32-bit registers.
pub type FragB = [u32; 2];

/// `D = A·B + C` on one 16×8×16 tile, bf16 inputs, f32 accumulators
/// (PTX ISA §9.7.14.5.14, `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`).
/// The tensor-core instruction every GEMM kernel here is built on.
#[inline(always)]
pub fn mma_bf16_16816(a: FragA, b: FragB, c: FragC) -> FragC {
    let mut d = [0f32; 4];
    // SAFETY: register-only instruction; every operand is initialised. All 32
    // lanes of the warp must execute it together, which callers guarantee by
    // keeping it out of divergent branches.
    unsafe {
        asm!(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 \
             {{{d0}, {d1}, {d2}, {d3}}}, \
             {{{a0}, {a1}, {a2}, {a3}}}, \
             {{{b0}, {b1}}}, \
             {{{c0}, {c1}, {c2}, {c3}}};",
            d0 = out(reg32) d[0], d1 = out(reg32) d[1], d2 = out(reg32) d[2], d3 = out(reg32) d[3],
            a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
            b0 = in(reg32) b[0], b1 = in(reg32) b[1],
            c0 = in(reg32) c[0], c1 = in(reg32) c[1], c2 = in(reg32) c[2], c3 = in(reg32) c[3],
            options(pure, nomem, nostack),
        );
    }
    d
}

/// Load four 8×8 b16 matrices from shared memory into registers, one 32-bit
/// register per matrix per lane (PTX ISA §9.7.14.5.15, `ldmatrix`). Lanes
/// 8·i..8·i+7 give the row addresses of matrix i. This is how B fragments are
/// read from shared memory without per-element loads.
///
/// # Safety
/// `smem_row` must be a shared-memory address of 16 readable, 16-byte
/// aligned bytes; all lanes of the warp must execute this together.
#[inline(always)]
pub unsafe fn ldmatrix_x4(smem_row: u32) -> [u32; 4] {
    let mut r = [0u32; 4];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{r0}, {r1}, {r2}, {r3}}}, [{p}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1], r2 = out(reg32) r[2], r3 = out(reg32) r[3],
            p = in(reg32) smem_row,
            options(readonly, nostack),
        );
    }
    r
}

/// Asynchronous 16-byte copy global → shared that bypasses L1 (PTX ISA
/// §9.7.9.25.3, `cp.async.cg`). Lets a block stage activations in shared
/// memory while it keeps computing.
///
/// # Safety
/// `smem_dst` is a 16-byte aligned shared address, `g_src` a 16-byte aligned
/// global address with 16 readable bytes.
#[inline(always)]
pub unsafe fn cp_async_16(smem_dst: u32, g_src: *const u8) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.cg.shared.global [{d}], [{s}], 16;",
            d = in(reg32) smem_dst,
            s = in(reg64) g_src,
            options(nostack),
        );
    }
}

/// Close the current group of `cp.async` copies (PTX ISA §9.7.9.25.4).
#[inline(always)]
pub fn cp_async_commit() {
    // SAFETY: no operands.
    unsafe { asm!("cp.async.commit_group;", options(nostack)) }
}

/// Wait until at most `N` committed `cp.async` groups are still pending
/// (PTX ISA §9.7.9.25.5). `N = 0` waits for all of them.
#[inline(always)]
pub fn cp_async_wait<const N: u32>() {
    // SAFETY: no memory operands; orders this thread's async copies.
    unsafe { asm!("cp.async.wait_group {n};", n = const N, options(nostack)) }
}

/// Convert a generic pointer into shared memory to a 32-bit shared-window
/// address, as `ldmatrix` and `cp.async` expect (PTX ISA §9.7.8.21, `cvta`).
#[inline(always)]
pub fn shared_addr<T>(p: *const T) -> u32 {
    let r: u64;
    // The pointer is only converted, never dereferenced: pass it as an integer.
    let generic = p as u64;
    // SAFETY: pure address arithmetic.
    unsafe {
        asm!("cvta.to.shared.u64 {r}, {p};", r = out(reg64) r, p = in(reg64) generic, options(pure, nomem, nostack))
    }
    r as u32
}

/// Block-wide barrier (`bar.sync 0`, PTX ISA §9.7.13.4).
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: every thread of the block reaches it (callers keep it out of
    // divergent code).
    unsafe { core::arch::nvptx::_syncthreads() }
}

/// Byte permute (PTX ISA §9.7.8.7, `prmt.b32`): builds a word from any four
/// bytes of two words, optionally replicating a byte's sign bit. The decode
/// uses it to spread two sign+mantissa bytes into a BF16 pair in one step.
#[inline(always)]
pub fn prmt(a: u32, b: u32, sel: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only instruction.
    unsafe {
        asm!("prmt.b32 {r}, {a}, {b}, {s};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, s = in(reg32) sel, options(pure, nomem, nostack))
    }
    r
}
