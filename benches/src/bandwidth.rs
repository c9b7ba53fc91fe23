//! The card's copy bandwidth: the practical ceiling for a kernel that
//! streams its weights once.

use cust::memory::{AsyncCopyDestination, DeviceBuffer};

use super::timing::time_op;
use zipserv_gpu::Gpu;
use zipserv_gpu::error::{CudaContext, Error, Result};

/// Bytes copied per iteration by [`copy_bandwidth`]: 1 GiB.
pub const COPY_BYTES: usize = 1 << 30;

/// GB/s (10⁹ bytes per second) for `bytes` moved in `us` microseconds.
pub fn gbps(bytes: f64, us: f64) -> f64 {
    bytes / us / 1e3
}

/// Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes
/// written, median of 10 copies of 1 GiB after 3 warm-up copies.
pub fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    copy_bandwidth_with(gpu, COPY_BYTES, 10)
}

/// As [`copy_bandwidth`], copying `bytes` bytes `iters` times.
pub fn copy_bandwidth_with(gpu: &Gpu, bytes: usize, iters: usize) -> Result<f64> {
    if bytes == 0 {
        return Err(Error::Unsupported("copy bandwidth of 0 bytes".into()));
    }
    let src = DeviceBuffer::<u8>::zeroed(bytes).cuda("cuMemAlloc")?;
    let mut dst = DeviceBuffer::<u8>::zeroed(bytes).cuda("cuMemAlloc")?;
    let stream = gpu.stream();
    let timing = time_op(stream, 3, iters, |_| {
        // SAFETY: both buffers have `bytes` bytes and outlive the copy:
        // `time_op` synchronizes the stream before returning.
        unsafe { dst.async_copy_from(&src, stream) }.cuda("cuMemcpyDtoDAsync")
    })?;
    Ok(gbps(2.0 * bytes as f64, timing.median_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbps_units() {
        // 2 GiB moved in 1 ms is 2147.48 GB/s.
        let got = gbps(2.0 * (1u64 << 30) as f64, 1000.0);
        assert!((got - 2147.483648).abs() < 1e-9, "{got}");
    }
}
