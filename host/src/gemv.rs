//! Launches of the BF16 matrix-vector product of decode batches
//! (`zipserv_gemv_bf16`; the kernel and why it exists are described in
//! `zipserv_kernels::gemv`): `Y[n×m] = X[n×k] · Wᵀ` with `W` BF16
//! row-major, for `n` ≤ [`GEMV_MAX_N`].

use cust::memory::{DevicePointer, DeviceSlice};
use cust::stream::Stream;
use cust::sys::{CUdeviceptr, CUstream};
use half::bf16;
use zipserv_kernels::gemv::{gemv_blocks, gemv_grid};
use zipserv_kernels::launch::{GEMV_WARPS, STORE_BF16, STORE_F32};

pub use zipserv_kernels::gemv::gemv_unsupported;
pub use zipserv_kernels::launch::GEMV_MAX_N;

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::kernels::{GemmOutput, OutputType, check_len};
use crate::launch::launch_kernel;

/// `Y[n×m] = X[n×k] · Wᵀ` for BF16 `w` (m × k) and `x` (n × k), f32
/// accumulation, asynchronously on `stream`. Refuses (with the reason)
/// shapes the kernel does not take: `n` above [`GEMV_MAX_N`], `k` not a
/// multiple of 8, buffers not 16-byte aligned.
#[allow(clippy::too_many_arguments)]
pub fn bf16_gemv(
    gpu: &Gpu,
    stream: &Stream,
    w: &DeviceSlice<bf16>,
    m: usize,
    k: usize,
    x: &DeviceSlice<bf16>,
    n: usize,
    out: GemmOutput<'_>,
) -> Result<()> {
    refuse(m, k, n)?;
    check_len("BF16 GEMV weights", w.len(), m, k)?;
    check_len("BF16 GEMV activations", x.len(), n, k)?;
    let (y, kind, len) = out.raw();
    check_len("BF16 GEMV output", len, n, m)?;
    let (w, x) = (w.as_device_ptr().as_raw(), x.as_device_ptr().as_raw());
    // SAFETY: a live stream of the device's context; every buffer holds
    // what the shape needs (checked above) and is borrowed for the call,
    // the output mutably, so it overlaps neither input.
    unsafe { bf16_gemv_raw(gpu, stream.as_inner(), w, m, k, x, n, y, kind) }
}

/// The shape's reason for refusal, as an error.
fn refuse(m: usize, k: usize, n: usize) -> Result<()> {
    match gemv_unsupported(m, k, n) {
        Some(why) => Err(Error::Unsupported(format!(
            "BF16 GEMV of {n} x {m} x {k}: {why}"
        ))),
        None => Ok(()),
    }
}

/// [`bf16_gemv`] over a caller's device pointers on a caller's stream.
///
/// # Safety
/// `stream` is a live stream of `gpu`'s device primary context, or null
/// for its default stream; `w` points to `m × k` and `x` to `n × k`
/// readable BF16 elements, `y` to `n × m` writable elements of type `out`,
/// in device memory of that context, valid until the launch completes; `y`
/// overlaps neither input, and no other work writes `w` or `x` or touches
/// `y` meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn bf16_gemv_raw(
    gpu: &Gpu,
    stream: CUstream,
    w: CUdeviceptr,
    m: usize,
    k: usize,
    x: CUdeviceptr,
    n: usize,
    y: CUdeviceptr,
    out: OutputType,
) -> Result<()> {
    refuse(m, k, n)?;
    for (what, p) in [("weights", w), ("activations", x)] {
        if !p.is_multiple_of(16) {
            return Err(Error::Unsupported(format!(
                "BF16 GEMV: the {what} start at {p:#x}, not on a 16-byte boundary"
            )));
        }
    }
    let (y, y32, store) = match out {
        OutputType::Bf16 => (
            DevicePointer::<bf16>::from_raw(y),
            DevicePointer::null(),
            STORE_BF16,
        ),
        OutputType::F32 => (
            DevicePointer::null(),
            DevicePointer::<f32>::from_raw(y),
            STORE_F32,
        ),
    };
    // As few blocks as one wave holds, the row groups dealt evenly. (One
    // block per group instead, tried at commit `84db9c0`: 28672×4096 at
    // N = 1 60.6 against 59.4 µs, the shapes of one wave or less even.)
    let blocks = gemv_grid(gemv_blocks(m), gpu.gemv_blocks_per_wave());
    let blocks = u32::try_from(blocks)
        .map_err(|_| Error::Unsupported(format!("BF16 GEMV: {m} rows need too many blocks")))?;
    // SAFETY: the caller's promises; the shape was checked against the
    // kernel's contract above, and the block size is 32 · GEMV_WARPS.
    unsafe {
        launch_kernel!(
            gpu.kernels().gemv,
            blocks,
            32 * GEMV_WARPS,
            0,
            stream,
            gpu.launch_order(),
            (
                DevicePointer::<bf16>::from_raw(w),
                DevicePointer::<bf16>::from_raw(x),
                y,
                y32,
                m as u32,
                k as u32,
                n as u32,
                store
            )
        )
    }
}

/// Environment variable that sets [`Gpu::bf16_path`] at [`crate::Gpu::new`]:
/// `auto` (default) or `cublas`, so that a benchmark or an engine run can
/// compare the library's BF16 GEMV with cuBLAS without code changes.
pub const BF16_PATH_ENV: &str = "ZIPSERV_BF16_PATH";

/// Which kernel multiplies BF16 weights for callers that leave it to the
/// library (the engine's BF16 layers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bf16Path {
    /// The BF16 GEMV on the shapes where it was measured faster than
    /// cuBLAS or even with it (`n` ≤ [`GEMV_MAX_N`], `k` ≤
    /// [`GEMV_AUTO_MAX_K`], `m` ≤ [`GEMV_AUTO_MAX_ROWS`]), cuBLAS otherwise.
    #[default]
    Auto,
    /// cuBLAS for every product.
    Cublas,
}

/// Longest rows [`Bf16Path::Auto`] gives the GEMV, and most rows. Measured
/// on an H200 at N = 1–8 in three calls (commits `415d3a8`–`4b5fdad`,
/// docs/PERFORMANCE.md, "A BF16 GEMV of our own"): the GEMV is 8–12% faster
/// than the best of cuBLAS and cuBLASLt on 4096×4096 and 6144×4096, even
/// on 28672×4096 (57.5 against 57.7 µs at N = 1), and 4–9% slower on
/// 4096×14336 and on the 128256×4096 LM head; longer rows were not
/// measured.
pub const GEMV_AUTO_MAX_K: usize = 4096;
pub const GEMV_AUTO_MAX_ROWS: usize = 28672;

impl Bf16Path {
    /// Whether an `m × k` product of `n` activation rows runs on the GEMV.
    pub fn uses_gemv(self, m: usize, k: usize, n: usize) -> bool {
        self == Bf16Path::Auto
            && gemv_unsupported(m, k, n).is_none()
            && k <= GEMV_AUTO_MAX_K
            && m <= GEMV_AUTO_MAX_ROWS
    }
}

impl std::str::FromStr for Bf16Path {
    type Err = Error;

    /// `auto` or `cublas` (the values of [`BF16_PATH_ENV`]).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Bf16Path::Auto),
            "cublas" => Ok(Bf16Path::Cublas),
            other => Err(Error::Unsupported(format!(
                "{BF16_PATH_ENV}={other:?}: expected auto or cublas"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_path_choice() {
        assert!(Bf16Path::Auto.uses_gemv(4096, 4096, 1));
        assert!(Bf16Path::Auto.uses_gemv(28672, 4096, 8));
        assert!(Bf16Path::Auto.uses_gemv(576, 576, 3));
        // Measured slower than cuBLAS: the down projection and the LM head.
        assert!(!Bf16Path::Auto.uses_gemv(4096, 14336, 1));
        assert!(!Bf16Path::Auto.uses_gemv(128256, 4096, 1));
        assert!(!Bf16Path::Auto.uses_gemv(4096, 4096, 9));
        assert!(!Bf16Path::Auto.uses_gemv(4096, 4100, 1));
        assert!(!Bf16Path::Cublas.uses_gemv(4096, 4096, 1));
        assert_eq!("cublas".parse::<Bf16Path>().unwrap(), Bf16Path::Cublas);
        assert_eq!("auto".parse::<Bf16Path>().unwrap(), Bf16Path::Auto);
        let err = "gemv".parse::<Bf16Path>().unwrap_err().to_string();
        assert!(err.contains("auto or cublas"), "{err}");
    }
}
