//! Kernels and the decode logic they share with the host.
//!
//! This crate is built twice: for `nvptx64-nvidia-cuda`, where the `ptx-kernel`
//! entry points below become PTX (see `host/build.rs`), and for the host, where
//! the same pure functions are unit-tested and used by the CPU codec.
#![no_std]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(abi_ptx, asm_experimental_arch, stdarch_nvptx)
)]
// Unrolled loops (`seq!`) turn index arithmetic such as `4 * J` into `4 * 0`;
// that is the point of unrolling, not a mistake.
#![allow(clippy::identity_op, clippy::erasing_op)]

pub mod catalog;
pub mod decode;
pub mod engine;
pub mod format;
pub mod gemv;
pub mod launch;
pub mod sm90;
pub mod staged_store;
pub mod tile;
pub mod zipgemv;

#[cfg(target_arch = "nvptx64")]
pub mod ptx;
// Hopper-only instructions: compiled into the sm_90a image alone (see
// `catalog`).
#[cfg(all(target_arch = "nvptx64", target_feature = "sm_90a"))]
pub mod ptx_sm90;

#[cfg(target_arch = "nvptx64")]
mod decompress;
#[cfg(target_arch = "nvptx64")]
mod demo;
#[cfg(all(target_arch = "nvptx64", target_feature = "sm_90a"))]
mod demo_wgmma;
#[cfg(target_arch = "nvptx64")]
pub mod zipgemm;
#[cfg(all(target_arch = "nvptx64", target_feature = "sm_90a"))]
pub mod zipgemm_sm90;

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // A kernel cannot unwind or print; trap so the launch fails loudly.
    ptx::trap()
}
