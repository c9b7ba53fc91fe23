//! Shared helpers for the integration tests.

pub mod minilm;
pub mod st;

use std::io::Write;
use zipserv_gpu::Error;

use zipserv_gpu::Gpu;

/// Set to `1` where a GPU must be present (the GPU machine's test script), so
/// a broken driver setup fails the run instead of skipping every GPU test.
pub const REQUIRE_GPU_ENV: &str = "ZIPSERV_REQUIRE_GPU";

/// Opens device 0, or reports why GPU tests are skipped.
///
/// Returns `None` only when there is no CUDA device at all; any other CUDA
/// failure panics, so a GPU test can never pass by skipping on a machine that
/// has a GPU. Call as `let Some(gpu) = gpu_or_skip("name") else { return };`.
pub fn gpu_or_skip(test: &str) -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) if e.is_no_gpu() => {
            let reason = e.to_string();
            if std::env::var(REQUIRE_GPU_ENV).as_deref() == Ok("1") {
                panic!("{test}: {REQUIRE_GPU_ENV}=1 but {reason}");
            }
            // Written to the real stderr, past the test harness's capture, so
            // a CI log shows which GPU tests did not run.
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped: no CUDA device ({reason})"
            );
            None
        }
        Err(e) => panic!("{test}: CUDA initialisation failed: {e}"),
    }
}

/// `data` copied to a new device buffer, and the copy finished: cust's
/// `DeviceBuffer::from_slice` copies on the legacy stream from pageable
/// memory and may return before the DMA lands, while the kernels run on the
/// GPU's non-blocking stream, which does not wait for the legacy one.
pub fn upload<T: cust::memory::DeviceCopy>(data: &[T]) -> cust::memory::DeviceBuffer<T> {
    let b = cust::memory::DeviceBuffer::from_slice(data).unwrap();
    cust::context::CurrentContext::synchronize().unwrap();
    b
}

pub mod data;

/// Loads cuBLAS for `gpu`, or reports why cuBLAS tests are skipped.
///
/// A machine with a GPU but no cuBLAS skips (cuBLAS is only the baseline),
/// unless [`REQUIRE_GPU_ENV`] is `1`, where it fails like a missing GPU.
pub fn cublas_or_skip<'gpu>(gpu: &'gpu Gpu, test: &str) -> Option<zipserv_gpu::Cublas<'gpu>> {
    match zipserv_gpu::Cublas::new(gpu) {
        Ok(blas) => Some(blas),
        Err(e @ Error::CublasUnavailable { .. }) => {
            if std::env::var(REQUIRE_GPU_ENV).as_deref() == Ok("1") {
                panic!("{test}: {REQUIRE_GPU_ENV}=1 but {e}");
            }
            println!("{test}: skipped: {e}");
            None
        }
        Err(e) => panic!("{test}: cuBLAS initialisation failed: {e}"),
    }
}

/// Loads cuBLASLt for `gpu`, or reports why cuBLASLt tests are skipped (as
/// [`cublas_or_skip`] does for cuBLAS).
pub fn cublaslt_or_skip<'gpu>(gpu: &'gpu Gpu, test: &str) -> Option<zipserv_gpu::CublasLt<'gpu>> {
    match zipserv_gpu::CublasLt::new(gpu) {
        Ok(lt) => Some(lt),
        Err(e @ Error::CublasLtUnavailable { .. }) => {
            if std::env::var(REQUIRE_GPU_ENV).as_deref() == Ok("1") {
                panic!("{test}: {REQUIRE_GPU_ENV}=1 but {e}");
            }
            println!("{test}: skipped: {e}");
            None
        }
        Err(e) => panic!("{test}: cuBLASLt initialisation failed: {e}"),
    }
}

/// Names of the temporary outputs (`.NAME.zipserv-tmp-*`) left in `dir`.
pub fn leftover_temporaries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("zipserv-tmp"))
        .collect()
}
