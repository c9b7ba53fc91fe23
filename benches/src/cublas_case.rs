//! The cuBLAS baseline as a benchmark case: the reference point for every
//! other path, and the proof that the machinery works end to end.

use cust::memory::{CopyDestination, DeviceBuffer};
use half::bf16;

use super::record::Row;
use super::rotation::{rotation_copies, upload_rotated};
use super::sweep::Case;
use super::timing::{TimingOptions, time_op};
use zipserv_format::rng::SplitMix64;
use zipserv_gpu::error::{CudaContext, Error, Result};
use zipserv_gpu::{Cublas, Gpu};

/// Output columns of the first row spot-checked against the CPU.
const CHECKED_COLUMNS: usize = 16;

/// Times cuBLAS `linear` (bf16 in, bf16 out, f32 accumulation) on random
/// inputs of the case's shape, buffers rotated past L2, and spot-checks
/// the result against the CPU. Only `cublas_us` is measured; the other
/// times and the ratio are NaN (`null` in JSON), and so are the fields a
/// [`crate::Runner`] completes until it does.
pub fn cublas_only_case(
    gpu: &Gpu,
    blas: &Cublas<'_>,
    case: &Case,
    options: TimingOptions,
) -> Result<Row> {
    let &Case { m, k, n, split_k } = case;
    let len = |rows: usize, cols: usize| {
        rows.checked_mul(cols)
            .ok_or_else(|| Error::Unsupported(format!("{rows} x {cols} elements overflow")))
    };
    let (w_len, x_len, y_len) = (len(m, k)?, len(n, k)?, len(n, m)?);

    let mut rng = SplitMix64::new(0x5EED ^ ((m as u64) << 32) ^ ((k as u64) << 16) ^ (n as u64));
    let mut random = |count: usize| -> Vec<bf16> {
        (0..count)
            .map(|_| bf16::from_f32(rng.next_f32_signed()))
            .collect()
    };
    let (w, x) = (random(w_len), random(x_len));

    let bytes_per_copy = size_of::<bf16>() * (w_len + x_len + y_len);
    let copies = rotation_copies(gpu.info().l2_bytes, bytes_per_copy);
    let d_w = upload_rotated(&w[..], copies)?;
    let d_x = upload_rotated(&x[..], copies)?;
    let mut d_y = (0..copies)
        .map(|_| DeviceBuffer::<bf16>::zeroed(y_len).cuda("cuMemAlloc"))
        .collect::<Result<Vec<_>>>()?;

    let stream = gpu.stream();
    let timing = time_op(stream, options.warmup, options.iters, |i| {
        let c = i % copies;
        // SAFETY: the buffers outlive the GEMM, since `time_op` synchronizes
        // the stream before returning; each `d_y[c]` is its own allocation.
        unsafe { blas.linear(stream, &d_w[c], &d_x[c], &mut d_y[c], m, k, n) }
    })?;

    check_first_row(&d_y[0], &w, &x, m, k)?;
    let mut row = Row::new(m, k, n, split_k, "synthetic, uniform in ±1 (cuBLAS only)");
    row.cublas_us = timing.median_us;
    Ok(row)
}

/// Compares a few outputs of row 0 of `Y` with an f64 CPU product, so a
/// benchmark of a broken call cannot pass unnoticed.
fn check_first_row(
    d_y: &DeviceBuffer<bf16>,
    w: &[bf16],
    x: &[bf16],
    m: usize,
    k: usize,
) -> Result<()> {
    let mut row = vec![bf16::ZERO; m];
    d_y.index(0..m).copy_to(&mut row[..]).cuda("cuMemcpyDtoH")?;
    let (mut err2, mut ref2) = (0f64, 0f64);
    for j in 0..CHECKED_COLUMNS.min(m) {
        let col = j * m / CHECKED_COLUMNS.min(m);
        let want: f64 = (0..k)
            .map(|i| x[i].to_f64() * w[col * k + i].to_f64())
            .sum();
        let got = row[col].to_f64();
        if !got.is_finite() {
            return Err(Error::Mismatch(format!(
                "cuBLAS output (0, {col}) is {got}"
            )));
        }
        err2 += (got - want).powi(2);
        ref2 += want.powi(2);
    }
    let rel = (err2 / ref2.max(f64::MIN_POSITIVE)).sqrt();
    if rel > 1e-2 {
        return Err(Error::Mismatch(format!(
            "cuBLAS spot check: relative error {rel:.3e} > 1e-2"
        )));
    }
    Ok(())
}
