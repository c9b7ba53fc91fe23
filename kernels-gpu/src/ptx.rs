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

/// Index of the warp of thread `thread` (its index in the block, or in any
/// range that starts on a warp boundary), passed through a shuffle from
/// lane 0. The result is the same as `thread / 32`, but ptxas then knows it
/// is warp-uniform and keeps it, and the addresses and tile indices derived
/// from it, in uniform registers: the two-block Hopper ZipGEMM variants'
/// 104 vector registers need that (their n64 variant spilled 28 bytes
/// without it), and it took 1–4% of the instructions off the `mma.sync`
/// ZipGEMM loops. All 32 lanes call it together.
#[inline(always)]
pub fn warp_index(thread: u32) -> u32 {
    shfl_idx(thread / 32, 0)
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

/// [`ldmatrix_x4`] with each 8×8 matrix transposed on the way (`.trans`):
/// lane `i` receives elements (2·(i % 4), i / 4) and (2·(i % 4) + 1, i / 4)
/// of each matrix as stored (row = the address the lane group gave). A
/// B fragment whose K runs down the stored rows (attention's values,
/// stored key by key) comes out in the order `mma` wants.
///
/// # Safety
/// As [`ldmatrix_x4`].
#[inline(always)]
pub unsafe fn ldmatrix_x4_trans(smem_row: u32) -> [u32; 4] {
    let mut r = [0u32; 4];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{{r0}, {r1}, {r2}, {r3}}}, [{p}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1], r2 = out(reg32) r[2], r3 = out(reg32) r[3],
            p = in(reg32) smem_row,
            options(readonly, nostack),
        );
    }
    r
}

/// Two-matrix form of [`ldmatrix_x4`]: lanes 0..16 give the row addresses.
///
/// # Safety
/// As [`ldmatrix_x4`].
#[inline(always)]
pub unsafe fn ldmatrix_x2(smem_row: u32) -> [u32; 2] {
    let mut r = [0u32; 2];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ldmatrix.sync.aligned.m8n8.x2.shared.b16 {{{r0}, {r1}}}, [{p}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1],
            p = in(reg32) smem_row,
            options(readonly, nostack),
        );
    }
    r
}

/// Asynchronous 16-byte copy global → shared that bypasses L1 (PTX ISA
/// §9.7.9.25.3, `cp.async.cg`), zero-filling the bytes past `src_bytes`
/// (0..=16). Lets a block stage the next activations while it computes;
/// `src_bytes = 0` writes zeros without reading `g_src`.
///
/// # Safety
/// `smem_dst` is a 16-byte aligned shared address; `g_src` a 16-byte aligned
/// global address with `src_bytes` readable bytes.
#[inline(always)]
pub unsafe fn cp_async_16(smem_dst: u32, g_src: *const u8, src_bytes: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.cg.shared.global [{d}], [{s}], 16, {n};",
            d = in(reg32) smem_dst,
            s = in(reg64) g_src,
            n = in(reg32) src_bytes,
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

core::arch::global_asm!(".extern .shared .align 16 .b8 zipserv_dynamic_smem[];");

/// Address (shared window) of the block's dynamic shared memory, whose size
/// is set at launch. Module-level `.extern .shared` (PTX ISA §5.1.5) because
/// Rust statics carry no address space.
#[inline(always)]
pub fn dynamic_shared_memory() -> u32 {
    let r: u32;
    // SAFETY: reads the address of a module-level symbol.
    unsafe {
        asm!("mov.u32 {r}, zipserv_dynamic_smem;", r = out(reg32) r, options(pure, nomem, nostack))
    }
    r
}

/// Declares a block's static shared memory of `BYTES` bytes and returns its
/// 32-bit shared-window address. Rust has no address-space qualifier for
/// statics, so the `.shared` variable is declared in the kernel's own scope
/// (PTX ISA §5.1.5). Call it exactly once per kernel, outside loops: a second
/// expansion would redeclare the name.
#[inline(always)]
pub fn shared_memory<const BYTES: usize>() -> u32 {
    let r: u32;
    // SAFETY: declares a kernel-scope variable and reads its address.
    unsafe {
        asm!(
            ".shared .align 16 .b8 zipserv_smem[{n}];",
            "mov.u32 {r}, zipserv_smem;",
            n = const BYTES,
            r = out(reg32) r,
            options(pure, nomem, nostack),
        )
    }
    r
}

/// 16-byte read-only global load that does not allocate in L1 (PTX ISA
/// §9.7.9.8, `ld.global.nc.L1::no_allocate`): compressed weights are read
/// exactly once, so caching them would only evict the activations.
///
/// # Safety
/// `p` is a 16-byte aligned global address with 16 readable bytes that no
/// thread writes during the kernel.
#[inline(always)]
pub unsafe fn ld_stream_v4(p: *const u8) -> [u32; 4] {
    let mut r = [0u32; 4];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ld.global.nc.L1::no_allocate.v4.u32 {{{r0}, {r1}, {r2}, {r3}}}, [{p}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1], r2 = out(reg32) r[2], r3 = out(reg32) r[3],
            p = in(reg64) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    r
}

/// 8-byte version of [`ld_stream_v4`].
///
/// # Safety
/// As [`ld_stream_v4`], with 8-byte alignment and size.
#[inline(always)]
pub unsafe fn ld_stream_v2(p: *const u8) -> [u32; 2] {
    let mut r = [0u32; 2];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ld.global.nc.L1::no_allocate.v2.u32 {{{r0}, {r1}}}, [{p}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1],
            p = in(reg64) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    r
}

/// 16-byte read-only global load through L1 (PTX ISA §9.7.9.8,
/// `ld.global.nc.v4`): for data many warps of a multiprocessor read, such as
/// the activations of a matrix-vector product, which L1 then serves.
///
/// # Safety
/// `p` is a 16-byte aligned global address with 16 readable bytes that no
/// thread writes during the kernel.
#[inline(always)]
pub unsafe fn ld_nc_v4(p: *const u8) -> [u32; 4] {
    let mut r = [0u32; 4];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ld.global.nc.v4.u32 {{{r0}, {r1}, {r2}, {r3}}}, [{p}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1], r2 = out(reg32) r[2], r3 = out(reg32) r[3],
            p = in(reg64) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    r
}

/// 16-byte global load (PTX ISA §9.7.9.8, `ld.global.v4`), coherent with
/// this kernel's own stores (unlike [`ld_stream_v4`]).
///
/// # Safety
/// `p` is a 16-byte aligned global address with 16 readable bytes.
#[inline(always)]
pub unsafe fn ld_global_v4(p: *const u8) -> [u32; 4] {
    let mut r = [0u32; 4];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ld.global.v4.u32 {{{r0}, {r1}, {r2}, {r3}}}, [{p}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1], r2 = out(reg32) r[2], r3 = out(reg32) r[3],
            p = in(reg64) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    r
}

/// 16-byte global store (PTX ISA §9.7.9.9, `st.global.v4`).
///
/// # Safety
/// `p` is a 16-byte aligned global address with 16 writable bytes.
#[inline(always)]
pub unsafe fn st_global_v4(p: *mut u8, v: [u32; 4]) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "st.global.v4.u32 [{p}], {{{v0}, {v1}, {v2}, {v3}}};",
            p = in(reg64) p,
            v0 = in(reg32) v[0], v1 = in(reg32) v[1], v2 = in(reg32) v[2], v3 = in(reg32) v[3],
            options(nostack, preserves_flags),
        );
    }
}

/// 32-bit shared-memory store.
///
/// # Safety
/// `addr` is a 4-byte aligned address inside this block's shared memory.
#[inline(always)]
pub unsafe fn st_shared_u32(addr: u32, v: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("st.shared.u32 [{a}], {v};", a = in(reg32) addr, v = in(reg32) v, options(nostack, preserves_flags))
    }
}

/// 16-bit shared-memory store.
///
/// # Safety
/// `addr` is a 2-byte aligned address inside this block's shared memory.
#[inline(always)]
pub unsafe fn st_shared_u16(addr: u32, v: u16) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("st.shared.u16 [{a}], {v};", a = in(reg32) addr, v = in(reg16) v, options(nostack, preserves_flags))
    }
}

/// 16-byte shared-memory store.
///
/// # Safety
/// `addr` is a 16-byte aligned address inside this block's shared memory.
#[inline(always)]
pub unsafe fn st_shared_v4(addr: u32, v: [u32; 4]) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "st.shared.v4.u32 [{a}], {{{v0}, {v1}, {v2}, {v3}}};",
            a = in(reg32) addr,
            v0 = in(reg32) v[0], v1 = in(reg32) v[1], v2 = in(reg32) v[2], v3 = in(reg32) v[3],
            options(nostack, preserves_flags),
        )
    }
}

/// 32-bit shared-memory load.
///
/// # Safety
/// `addr` is a 4-byte aligned address inside this block's shared memory.
#[inline(always)]
pub unsafe fn ld_shared_u32(addr: u32) -> u32 {
    let r: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("ld.shared.u32 {r}, [{a}];", r = out(reg32) r, a = in(reg32) addr, options(readonly, nostack, preserves_flags))
    }
    r
}

/// 16-bit shared-memory load.
///
/// # Safety
/// `addr` is a 2-byte aligned address inside this block's shared memory.
#[inline(always)]
pub unsafe fn ld_shared_u16(addr: u32) -> u16 {
    let r: u16;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("ld.shared.u16 {r}, [{a}];", r = out(reg16) r, a = in(reg32) addr, options(readonly, nostack, preserves_flags))
    }
    r
}

/// 16-byte shared-memory load.
///
/// # Safety
/// `addr` is a 16-byte aligned address inside this block's shared memory.
#[inline(always)]
pub unsafe fn ld_shared_v4(addr: u32) -> [u32; 4] {
    let mut r = [0u32; 4];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ld.shared.v4.u32 {{{r0}, {r1}, {r2}, {r3}}}, [{a}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1], r2 = out(reg32) r[2], r3 = out(reg32) r[3],
            a = in(reg32) addr,
            options(readonly, nostack, preserves_flags),
        )
    }
    r
}

/// Read-only global byte load through the L1/texture path (`ld.global.nc.u8`).
///
/// # Safety
/// `p` is a readable global address not written during the kernel.
#[inline(always)]
pub unsafe fn ld_nc_u8(p: *const u8) -> u32 {
    let r: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("ld.global.nc.u8 {r}, [{p}];", r = out(reg32) r, p = in(reg64) p, options(readonly, nostack, preserves_flags))
    }
    r
}

/// Read-only global 16-bit load (`ld.global.nc.u16`).
///
/// # Safety
/// `p` is a 2-byte aligned readable global address not written during the kernel.
#[inline(always)]
pub unsafe fn ld_nc_u16(p: *const u16) -> u32 {
    let r: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("ld.global.nc.u16 {r}, [{p}];", r = out(reg32) r, p = in(reg64) p, options(readonly, nostack, preserves_flags))
    }
    r
}

/// Read-only global 32-bit load (`ld.global.nc.u32`).
///
/// # Safety
/// `p` is a 4-byte aligned readable global address not written during the kernel.
#[inline(always)]
pub unsafe fn ld_nc_u32(p: *const u32) -> u32 {
    let r: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("ld.global.nc.u32 {r}, [{p}];", r = out(reg32) r, p = in(reg64) p, options(readonly, nostack, preserves_flags))
    }
    r
}

/// Bit mask of the lanes (of those named in `mask`) whose `pred` is true
/// (PTX ISA §9.7.13.10, `vote.sync.ballot.b32`).
#[inline(always)]
pub fn ballot(pred: bool) -> u32 {
    let r: u32;
    let p = pred as u32;
    // SAFETY: all 32 lanes execute it together (callers keep it warp-uniform).
    unsafe {
        asm!(
            "{{ .reg .pred p; setp.ne.u32 p, {v}, 0; vote.sync.ballot.b32 {r}, p, 0xffffffff; }}",
            v = in(reg32) p,
            r = out(reg32) r,
            options(nomem, nostack),
        )
    }
    r
}

/// Warp-level barrier and memory fence among all 32 lanes (`bar.warp.sync`).
#[inline(always)]
pub fn sync_warp() {
    // SAFETY: all 32 lanes execute it together.
    unsafe { asm!("bar.warp.sync 0xffffffff;", options(nostack)) }
}

/// Round an f32 to BF16, nearest even (`cvt.rn.bf16.f32`, sm_80+).
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> u16 {
    let r: u16;
    // SAFETY: register-only conversion.
    unsafe {
        asm!("cvt.rn.bf16.f32 {r}, {v};", r = out(reg16) r, v = in(reg32) v, options(pure, nomem, nostack))
    }
    r
}

/// Index of this thread in its block (x dimension).
#[inline(always)]
pub fn thread_idx() -> u32 {
    // SAFETY: reads a special register.
    unsafe { core::arch::nvptx::_thread_idx_x() }
}

/// Block index along x, y, z.
#[inline(always)]
pub fn block_idx() -> (u32, u32, u32) {
    // SAFETY: reads special registers.
    unsafe {
        (
            core::arch::nvptx::_block_idx_x(),
            core::arch::nvptx::_block_idx_y(),
            core::arch::nvptx::_block_idx_z(),
        )
    }
}

/// Grid size along y.
#[inline(always)]
pub fn grid_dim_y() -> u32 {
    // SAFETY: reads a special register.
    unsafe { core::arch::nvptx::_grid_dim_y() }
}

/// Grid size along z.
#[inline(always)]
pub fn grid_dim_z() -> u32 {
    // SAFETY: reads a special register.
    unsafe { core::arch::nvptx::_grid_dim_z() }
}

/// Grid size along x.
#[inline(always)]
pub fn grid_dim_x() -> u32 {
    // SAFETY: reads a special register.
    unsafe { core::arch::nvptx::_grid_dim_x() }
}

/// Reads `v` from lane `lane ^ mask` of the warp (`shfl.sync.bfly`): one
/// step of a butterfly reduction.
#[inline(always)]
pub fn shfl_xor(v: u32, mask: u32) -> u32 {
    let r: u32;
    // SAFETY: all 32 lanes execute it together (callers keep it warp-uniform).
    unsafe {
        asm!(
            "shfl.sync.bfly.b32 {r}, {v}, {m}, 0x1f, 0xffffffff;",
            r = out(reg32) r, v = in(reg32) v, m = in(reg32) mask,
            options(nomem, nostack),
        )
    }
    r
}

/// Two f32 rounded to BF16 (nearest even) in one register, `lo` in the low
/// half (`cvt.rn.bf16x2.f32`, PTX ISA §9.7.9.21): the element order of an
/// `mma` fragment register.
#[inline(always)]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: register arithmetic.
    unsafe {
        asm!(
            "cvt.rn.bf16x2.f32 {r}, {h}, {l};",
            r = out(reg32) r, h = in(reg32) hi, l = in(reg32) lo,
            options(pure, nomem, nostack, preserves_flags),
        )
    }
    r
}

/// Reads `v` from lane `src` of the warp (PTX ISA §9.7.8.6, `shfl.sync.idx`).
#[inline(always)]
pub fn shfl_idx(v: u32, src: u32) -> u32 {
    let r: u32;
    // SAFETY: all 32 lanes execute it together (callers keep it warp-uniform).
    unsafe {
        asm!(
            "shfl.sync.idx.b32 {r}, {v}, {s}, 0x1f, 0xffffffff;",
            r = out(reg32) r, v = in(reg32) v, s = in(reg32) src,
            options(nomem, nostack),
        )
    }
    r
}

/// Shared-memory byte load.
///
/// # Safety
/// `addr` is inside this block's shared memory.
#[inline(always)]
pub unsafe fn ld_shared_u8(addr: u32) -> u32 {
    let r: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("ld.shared.u8 {r}, [{a}];", r = out(reg32) r, a = in(reg32) addr, options(readonly, nostack, preserves_flags))
    }
    r
}

/// Atomic add on a global u32 returning the old value, with acquire and
/// release semantics at GPU scope (`atom.acq_rel.gpu.global.add.u32`, PTX
/// ISA §9.7.13.5; memory model §8). After a block barrier, one thread's
/// release publishes the whole block's earlier writes (the barrier orders
/// them before it); its acquire, followed by a barrier, makes the writes of
/// every block that released before visible to the whole block. So the
/// split-K arrival needs no fence per thread.
///
/// # Safety
/// `p` is a 4-byte aligned global address of a writable u32.
#[inline(always)]
pub unsafe fn atom_add_acq_rel_u32(p: *mut u32, v: u32) -> u32 {
    let r: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("atom.acq_rel.gpu.global.add.u32 {r}, [{p}], {v};", r = out(reg32) r, p = in(reg64) p, v = in(reg32) v, options(nostack))
    }
    r
}

/// One f32 from L2, skipping L1 (`ld.global.cg.f32`): reads data other
/// multiprocessors wrote during this kernel, which L1 may hold stale.
///
/// # Safety
/// `p` is a 4-byte aligned readable global address.
#[inline(always)]
pub unsafe fn ld_cg_f32(p: *const f32) -> f32 {
    let r: f32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("ld.global.cg.f32 {r}, [{p}];", r = out(reg32) r, p = in(reg64) p, options(readonly, nostack, preserves_flags))
    }
    r
}

/// Four f32 from L2, skipping L1 (`ld.global.cg.v4.f32`): reads data other
/// multiprocessors wrote during this kernel, which L1 may hold stale.
///
/// # Safety
/// `p` is a 16-byte aligned readable global address.
#[inline(always)]
pub unsafe fn ld_cg_v4_f32(p: *const f32) -> [f32; 4] {
    let mut r = [0f32; 4];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ld.global.cg.v4.f32 {{{r0}, {r1}, {r2}, {r3}}}, [{p}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1], r2 = out(reg32) r[2], r3 = out(reg32) r[3],
            p = in(reg64) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    r
}

/// 8-byte shared-memory load.
///
/// # Safety
/// `addr` is an 8-byte aligned address inside this block's shared memory.
#[inline(always)]
pub unsafe fn ld_shared_v2(addr: u32) -> [u32; 2] {
    let mut r = [0u32; 2];
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ld.shared.v2.u32 {{{r0}, {r1}}}, [{a}];",
            r0 = out(reg32) r[0], r1 = out(reg32) r[1],
            a = in(reg32) addr,
            options(readonly, nostack, preserves_flags),
        )
    }
    r
}

/// Barrier among the first `threads` threads to arrive at barrier `id`
/// (`bar.sync id, threads`, PTX ISA §9.7.13.4): lets some warps of a block
/// synchronise without the others (barrier 0 with no count is
/// [`sync_threads`]). `threads` is a multiple of 32.
///
/// # Safety
/// Exactly `threads` threads, in whole warps, reach this barrier for each
/// use of it, and no other barrier use with the same `id` overlaps.
#[inline(always)]
pub unsafe fn named_barrier_sync(id: u32, threads: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("bar.sync {i}, {n};", i = in(reg32) id, n = in(reg32) threads, options(nostack)) }
}

/// The GPU's global nanosecond timer (`%globaltimer`).
#[inline(always)]
pub fn global_timer_ns() -> u64 {
    let t: u64;
    // SAFETY: reads a special register.
    unsafe { asm!("mov.u64 {t}, %globaltimer;", t = out(reg64) t, options(nomem, nostack)) };
    t
}

/// Arrives on named barrier `id` for `threads` threads without waiting
/// (`bar.arrive`): what this thread wrote before is visible to the threads
/// that wait on that use of the barrier with [`named_barrier_sync`].
///
/// # Safety
/// As [`named_barrier_sync`]: exactly `threads` threads, in whole warps,
/// arrive on or wait at this use of the barrier.
#[inline(always)]
pub unsafe fn named_barrier_arrive(id: u32, threads: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("bar.arrive {i}, {n};", i = in(reg32) id, n = in(reg32) threads, options(nostack))
    }
}

/// Lane 0 adds `v` to the counter at `p` (`atom.acq_rel.gpu`, as
/// [`atom_add_acq_rel_u32`]) and, when the sum reaches `total`, sets the
/// counter back to 0; every lane gets whether it did. One block of PTX with
/// predicated instructions and a shuffle: no branch on the lane, which
/// LLVM could thread through the barriers around it (`ptx::opaque`).
///
/// # Safety
/// All 32 lanes of the warp call it together; `p` is a 4-byte aligned
/// global counter.
#[inline(always)]
pub unsafe fn lane0_count_to(p: *mut u32, v: u32, total: u32, lane: u32) -> bool {
    let done: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "{{ .reg .pred l, d; .reg .u32 r;",
            "mov.u32 r, 0;",
            "setp.eq.u32 l, {lane}, 0;",
            "@l atom.acq_rel.gpu.global.add.u32 r, [{p}], {v};",
            "add.u32 r, r, {v};",
            "setp.eq.and.u32 d, r, {t}, l;",
            "@d st.relaxed.gpu.global.u32 [{p}], 0;",
            "selp.u32 r, 1, 0, d;",
            "shfl.sync.idx.b32 {done}, r, 0, 31, 0xffffffff; }}",
            lane = in(reg32) lane,
            p = in(reg64) p,
            v = in(reg32) v,
            t = in(reg32) total,
            done = out(reg32) done,
            options(nostack),
        )
    }
    done != 0
}

/// `v`, passed through a `mov` the optimizer must leave where it is (an
/// `asm!` with side effects): values derived from the result are computed
/// at this point, not hoisted out of the enclosing loop. In the Hopper
/// ZipGEMM's epilogue, loop-invariant code motion hoisted the 128 store
/// offsets of each thread's accumulators (they depend only on the lane) out
/// of the loop over units: 256 registers, spilled to local memory.
#[inline(always)]
pub fn opaque(v: u32) -> u32 {
    let r: u32;
    // SAFETY: a register move.
    unsafe {
        asm!("mov.b32 {r}, {v};", r = out(reg32) r, v = in(reg32) v, options(nomem, nostack, preserves_flags))
    }
    r
}

/// Waits until every grid this one depends on has completed and its memory
/// writes are visible (PTX ISA §9.7.13.13, `griddepcontrol.wait`). A kernel
/// launched with programmatic stream serialization (the host's launch
/// overlap, Hopper only) may start while the kernel before it on the
/// stream still runs; it calls this before it reads anything that kernel
/// writes, or writes anything it reads. Launched normally, the previous
/// kernel has finished already and this returns at once.
///
/// Compiled into the `sm_90a` image only: the instruction needs sm_90, and
/// the host overlaps launches only for that image. In the `sm_80` image it
/// is nothing, which is right there since its launches never overlap.
#[inline(always)]
pub fn wait_for_prior_grids() {
    // SAFETY: no operands; it only delays this thread. Not `nomem`: the
    // compiler must not move memory accesses across it.
    #[cfg(target_feature = "sm_90a")]
    unsafe {
        asm!("griddepcontrol.wait;", options(nostack))
    }
}

/// Lets the next kernel on the stream start before this one ends, if it
/// was launched with programmatic stream serialization (PTX ISA §9.7.13.13,
/// `griddepcontrol.launch_dependents`): once every block of this grid has
/// called it or exited, the next grid's blocks may be scheduled on
/// multiprocessors this grid frees, to run up to their own
/// [`wait_for_prior_grids`]. Nothing in the `sm_80` image (see there).
#[inline(always)]
pub fn allow_next_grid() {
    // SAFETY: no operands; a scheduling hint with no effect on memory.
    #[cfg(target_feature = "sm_90a")]
    unsafe {
        asm!("griddepcontrol.launch_dependents;", options(nostack))
    }
}

/// [`wait_for_prior_grids`], then [`allow_next_grid`]: the first thing a
/// kernel does that has no work to start before its inputs are ready. One
/// grid at most then waits ahead of the one running (the next is launched
/// only once every block of this one is past its wait).
#[inline(always)]
pub fn start_after_prior_grids() {
    wait_for_prior_grids();
    allow_next_grid();
}

/// `(a << k) + b` as one PTX block (`shl` then `add`), which ptxas turns
/// into one `LEA`. Written out because LLVM canonicalizes `(w & m) << k`
/// into `(w << k) & (m << k)`, which needs the shift and the mask as two
/// instructions before the add (see `decode::decode_pair`).
#[inline(always)]
pub fn shl_add(a: u32, k: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register arithmetic.
    unsafe {
        asm!(
            "{{ .reg .b32 t; shl.b32 t, {a}, {k}; add.u32 {r}, t, {b}; }}",
            r = out(reg32) r,
            a = in(reg32) a,
            k = in(reg32) k,
            b = in(reg32) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    }
    r
}

/// `(a >> k) + b` (logical shift) as one PTX block; ptxas turns it into one
/// `LEA.HI`. See [`shl_add`].
#[inline(always)]
pub fn shr_add(a: u32, k: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register arithmetic.
    unsafe {
        asm!(
            "{{ .reg .b32 t; shr.u32 t, {a}, {k}; add.u32 {r}, t, {b}; }}",
            r = out(reg32) r,
            a = in(reg32) a,
            k = in(reg32) k,
            b = in(reg32) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    }
    r
}
