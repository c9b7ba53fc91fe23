//! The end-to-end proof of the toolchain: the `demo_mma_16x8x16` kernel (one
//! `mma.sync` tile) run on random bf16 inputs and checked on the CPU.

use cust::memory::{CopyDestination, DeviceBuffer};
use half::bf16;

use crate::device::Gpu;
use crate::error::{CudaContext, Error, Result};
use crate::launch::{LaunchOrder, launch_kernel};

/// Outcome of one demo run.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Largest |gpu − cpu| over the 128 outputs.
    pub max_abs_err: f64,
    /// ‖gpu − cpu‖ / ‖cpu‖.
    pub rel_err: f64,
}

/// Runs one 16×8×16 bf16 `mma.sync` on the GPU with inputs drawn from
/// `seed`, and checks every output against an f64 CPU product. The inputs
/// are exactly representable and the tensor core accumulates in f32, so the
/// error bound is f32 rounding of 16-term sums.
pub fn run_demo_mma(gpu: &Gpu, seed: u64) -> Result<DemoReport> {
    let mut rng = zipserv_format::rng::SplitMix64::new(seed);
    let a: Vec<bf16> = (0..16 * 16)
        .map(|_| bf16::from_f32(rng.next_f32_signed()))
        .collect();
    let bt: Vec<bf16> = (0..8 * 16)
        .map(|_| bf16::from_f32(rng.next_f32_signed()))
        .collect();

    let d_a = DeviceBuffer::from_slice(bytemuck::cast_slice::<bf16, u16>(&a)).cuda("cuMemAlloc")?;
    let d_bt =
        DeviceBuffer::from_slice(bytemuck::cast_slice::<bf16, u16>(&bt)).cuda("cuMemAlloc")?;
    // Poisoned with NaN so an unwritten output cannot pass.
    let d_out = DeviceBuffer::from_slice(&[f32::NAN; 16 * 8]).cuda("cuMemAlloc")?;

    let (a_ptr, bt_ptr, out_ptr) = (
        d_a.as_device_ptr(),
        d_bt.as_device_ptr(),
        d_out.as_device_ptr(),
    );
    // SAFETY: one block of 32 threads on the device's own stream; buffer
    // sizes match the kernel's contract and outlive the synchronize below.
    unsafe {
        launch_kernel!(
            gpu.kernels().demo,
            1,
            32,
            0,
            gpu.stream().as_inner(),
            // The demo kernel does not wait for a prior grid.
            LaunchOrder::AfterPrevious,
            (a_ptr, bt_ptr, out_ptr)
        )
    }?;
    gpu.synchronize()?;

    let mut out = [0f32; 16 * 8];
    d_out.copy_to(&mut out[..]).cuda("cuMemcpyDtoH")?;

    let mut max_abs_err = 0f64;
    let (mut err2, mut ref2) = (0f64, 0f64);
    for i in 0..16 {
        for j in 0..8 {
            let want: f64 = (0..16)
                .map(|k| a[i * 16 + k].to_f64() * bt[j * 16 + k].to_f64())
                .sum();
            let got = out[i * 8 + j] as f64;
            if !got.is_finite() {
                return Err(Error::Mismatch(format!(
                    "output ({i}, {j}) is {got}: not written"
                )));
            }
            max_abs_err = max_abs_err.max((got - want).abs());
            err2 += (got - want).powi(2);
            ref2 += want.powi(2);
        }
    }
    let rel_err = (err2 / ref2.max(f64::MIN_POSITIVE)).sqrt();
    if rel_err > 1e-5 {
        return Err(Error::Mismatch(format!(
            "demo mma relative error {rel_err:.3e} > 1e-5"
        )));
    }
    Ok(DemoReport {
        max_abs_err,
        rel_err,
    })
}
