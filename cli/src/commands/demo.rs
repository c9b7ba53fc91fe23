//! `zipserv demo`: one tensor-core tile on the GPU, checked against the CPU.

use crate::error::Result;
use zipserv_gpu::{Gpu, run_demo_mma};

pub fn run(device: u32, seed: Option<u64>) -> Result<()> {
    let gpu = Gpu::new(device)?;
    let seed = seed.unwrap_or_else(zipserv_format::rng::fresh_seed);
    let info = gpu.info();
    println!(
        "device {device}: {} (sm_{}{}, {} SMs, CUDA {}.{} driver), running the {} PTX image",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.multiprocessors,
        info.cuda_driver_version.0,
        info.cuda_driver_version.1,
        gpu.ptx_image().image.arch
    );
    let report = run_demo_mma(&gpu, seed)?;
    println!(
        "demo mma.sync m16n8k16 bf16 (seed {seed}): max |err| {:.3e}, relative error {:.3e} vs f64 CPU reference: OK",
        report.max_abs_err, report.rel_err
    );
    Ok(())
}
