//! cuBLAS, the baseline every kernel here is measured against.
//!
//! The library is opened at run time, not linked: CPU-only machines (CI)
//! have no cuBLAS, and they must still build and run every CPU test. Layers,
//! bottom up: `ffi` (the few C types, constants and entry points we use),
//! `Api` (the opened library and its function pointers), [`Cublas`] (a
//! handle, destroyed on drop) and [`Cublas::linear`] (`Y = X·Wᵀ`).

use std::cell::Cell;
use std::ffi::{OsStr, c_int, c_void};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use cust::memory::{DeviceCopy, DeviceSlice};
use cust::stream::Stream;

use crate::device::Gpu;
use crate::error::{Error, Result, Shape};
use half::bf16;

/// Environment variable naming a cuBLAS library to try before the defaults.
pub const CUBLAS_ENV: &str = "ZIPSERV_CUBLAS";

/// Library names tried, newest first: CUDA 13, CUDA 12, then the unversioned
/// development link.
const SONAMES: [&str; 3] = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"];

/// The C side, as declared in `cublas_api.h` and `library_types.h`.
mod ffi {
    use std::ffi::{c_int, c_void};

    pub type Handle = *mut c_void;
    pub type Status = c_int;
    /// `cudaStream_t`; the same object as the driver API's `CUstream`.
    pub type Stream = *mut c_void;

    pub const STATUS_SUCCESS: Status = 0;
    /// `cublasOperation_t`.
    pub const OP_N: c_int = 0;
    pub const OP_T: c_int = 1;
    /// `cudaDataType_t`.
    pub const R_32F: c_int = 0;
    pub const R_16BF: c_int = 14;
    /// `cublasComputeType_t`: fp32 accumulation, no down-conversion.
    pub const COMPUTE_32F: c_int = 68;
    /// `cublasGemmAlgo_t`: let cuBLAS pick (tensor cores included).
    pub const GEMM_DEFAULT: c_int = -1;

    pub type CreateFn = unsafe extern "C" fn(handle: *mut Handle) -> Status;
    pub type DestroyFn = unsafe extern "C" fn(handle: Handle) -> Status;
    pub type SetStreamFn = unsafe extern "C" fn(handle: Handle, stream: Stream) -> Status;
    /// `cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda,
    /// B, Btype, ldb, beta, C, Ctype, ldc, computeType, algo)`.
    pub type GemmExFn = unsafe extern "C" fn(
        handle: Handle,
        transa: c_int,
        transb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: *const c_void,
        a: *const c_void,
        a_type: c_int,
        lda: c_int,
        b: *const c_void,
        b_type: c_int,
        ldb: c_int,
        beta: *const c_void,
        c: *mut c_void,
        c_type: c_int,
        ldc: c_int,
        compute_type: c_int,
        algo: c_int,
    ) -> Status;
}

/// A `cublasStatus_t` other than success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CublasStatus(pub i32);

impl CublasStatus {
    /// The enumerator's name in `cublas_api.h`, or `"unknown"`.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "CUBLAS_STATUS_SUCCESS",
            1 => "CUBLAS_STATUS_NOT_INITIALIZED",
            3 => "CUBLAS_STATUS_ALLOC_FAILED",
            7 => "CUBLAS_STATUS_INVALID_VALUE",
            8 => "CUBLAS_STATUS_ARCH_MISMATCH",
            11 => "CUBLAS_STATUS_MAPPING_ERROR",
            13 => "CUBLAS_STATUS_EXECUTION_FAILED",
            14 => "CUBLAS_STATUS_INTERNAL_ERROR",
            15 => "CUBLAS_STATUS_NOT_SUPPORTED",
            16 => "CUBLAS_STATUS_LICENSE_ERROR",
            _ => "unknown",
        }
    }
}

impl fmt::Display for CublasStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

pub(crate) fn check(call: &'static str, status: c_int) -> Result<()> {
    if status == ffi::STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Cublas {
            call,
            status: CublasStatus(status),
        })
    }
}

/// Where to look for cuBLAS, in order: `override_path` (the value of
/// [`CUBLAS_ENV`]), each soname through the dynamic loader's own search,
/// then each soname under `$CUDA_HOME/lib64` and `/usr/local/cuda/lib64`.
pub fn library_candidates(
    override_path: Option<&OsStr>,
    cuda_home: Option<&OsStr>,
) -> Vec<PathBuf> {
    candidates_for(&SONAMES, override_path, cuda_home)
}

/// The search order of [`library_candidates`] for any NVIDIA library's
/// `sonames` (cuBLASLt uses it too).
pub(crate) fn candidates_for(
    sonames: &[&str],
    override_path: Option<&OsStr>,
    cuda_home: Option<&OsStr>,
) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = override_path.map(PathBuf::from).into_iter().collect();
    candidates.extend(sonames.iter().map(PathBuf::from));
    let dirs = cuda_home
        .map(|home| Path::new(home).join("lib64"))
        .into_iter()
        .chain([PathBuf::from("/usr/local/cuda/lib64")]);
    for dir in dirs {
        candidates.extend(sonames.iter().map(|name| dir.join(name)));
    }
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert(c.clone()));
    candidates
}

/// The candidates for this process's environment.
fn default_candidates() -> Vec<PathBuf> {
    library_candidates(
        std::env::var_os(CUBLAS_ENV).as_deref(),
        std::env::var_os("CUDA_HOME").as_deref(),
    )
}

/// An opened cuBLAS and the entry points we call. The function pointers are
/// valid while `_library` is loaded, and it lives as long as they do.
struct Api {
    create: ffi::CreateFn,
    destroy: ffi::DestroyFn,
    set_stream: ffi::SetStreamFn,
    gemm_ex: ffi::GemmExFn,
    path: PathBuf,
    _library: libloading::Library,
}

impl Api {
    /// Opens the first candidate that loads and has every entry point.
    fn load(candidates: &[PathBuf]) -> Result<Self> {
        first_that_opens(candidates, Self::open).map_err(|tried| Error::CublasUnavailable { tried })
    }

    fn open(path: &Path) -> std::result::Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; the candidates
        // are cuBLAS's own names or a path the user chose to name cuBLAS.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        // SAFETY (all four): each symbol is given the signature
        // `cublas_api.h` declares for it (see `ffi`).
        Ok(Self {
            create: unsafe { symbol::<ffi::CreateFn>(&library, "cublasCreate_v2") }?,
            destroy: unsafe { symbol::<ffi::DestroyFn>(&library, "cublasDestroy_v2") }?,
            set_stream: unsafe { symbol::<ffi::SetStreamFn>(&library, "cublasSetStream_v2") }?,
            gemm_ex: unsafe { symbol::<ffi::GemmExFn>(&library, "cublasGemmEx") }?,
            path: path.to_path_buf(),
            _library: library,
        })
    }
}

/// Looks up `name` and copies the pointer out; the caller keeps `library`
/// loaded as long as the pointer is used.
///
/// # Safety
///
/// `T` must be the type of the symbol `name` (a function pointer type).
/// The first of `candidates` that `open` accepts, or each one's path with the
/// reason it was rejected.
pub(crate) fn first_that_opens<T>(
    candidates: &[PathBuf],
    open: impl Fn(&Path) -> std::result::Result<T, String>,
) -> std::result::Result<T, Vec<String>> {
    let mut tried = Vec::new();
    for path in candidates {
        match open(path) {
            Ok(api) => return Ok(api),
            Err(reason) => tried.push(format!("{} ({reason})", path.display())),
        }
    }
    Err(tried)
}

pub(crate) unsafe fn symbol<T: Copy>(
    library: &libloading::Library,
    name: &str,
) -> std::result::Result<T, String> {
    // SAFETY: the caller guarantees `T` is the symbol's type.
    unsafe { library.get::<T>(name) }
        .map(|s| *s)
        .map_err(|e| format!("no symbol {name}: {e}"))
}

mod private {
    pub trait Sealed {
        /// The `cudaDataType_t` cuBLAS is told the output has.
        const CUDA_DATA_TYPE: std::ffi::c_int;
    }
}

/// Element types [`Cublas::linear`] can write: bf16 or f32.
pub trait BlasOutput: DeviceCopy + private::Sealed {}

impl private::Sealed for bf16 {
    const CUDA_DATA_TYPE: c_int = ffi::R_16BF;
}
impl BlasOutput for bf16 {}

impl private::Sealed for f32 {
    const CUDA_DATA_TYPE: c_int = ffi::R_32F;
}
impl BlasOutput for f32 {}

/// `M`, `K`, `N` of one [`Cublas::linear`], checked against the buffers and
/// narrowed to the `int` cuBLAS takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinearDims {
    m: c_int,
    k: c_int,
    n: c_int,
}

impl LinearDims {
    fn check(
        w_len: usize,
        x_len: usize,
        y_len: usize,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Self> {
        if m == 0 || k == 0 || n == 0 {
            return Err(Error::Unsupported(format!(
                "empty GEMM (M={m}, K={k}, N={n}): every dimension must be at least 1"
            )));
        }
        let narrow = |d: usize, name: &str| {
            c_int::try_from(d).map_err(|_| {
                Error::Unsupported(format!("{name}={d} exceeds cuBLAS's 32-bit dimensions"))
            })
        };
        let dims = Self {
            m: narrow(m, "M")?,
            k: narrow(k, "K")?,
            n: narrow(n, "N")?,
        };
        let expect = |what: &'static str, rows: usize, cols: usize, len: usize| -> Result<()> {
            match rows.checked_mul(cols) {
                Some(want) if want == len => Ok(()),
                _ => Err(Error::ShapeMismatch {
                    what,
                    expected: Shape(vec![rows, cols]),
                    got: Shape(vec![len]),
                }),
            }
        };
        expect("cuBLAS linear: W (M x K)", m, k, w_len)?;
        expect("cuBLAS linear: X (N x K)", n, k, x_len)?;
        expect("cuBLAS linear: Y (N x M)", n, m, y_len)?;
        Ok(dims)
    }
}

/// A cuBLAS handle in the primary context that a [`Gpu`] made current on
/// this thread; destroyed on drop. It borrows the `Gpu` so that it cannot
/// outlive the context.
pub struct Cublas<'gpu> {
    handle: ffi::Handle,
    /// The stream the handle was last bound to (null: the default stream).
    bound_stream: Cell<ffi::Stream>,
    api: Api,
    _gpu: PhantomData<&'gpu Gpu>,
}

impl<'gpu> Cublas<'gpu> {
    /// Loads cuBLAS from the default places (see [`library_candidates`],
    /// with `$ZIPSERV_CUBLAS` and `$CUDA_HOME`) and creates a handle.
    pub fn new(gpu: &'gpu Gpu) -> Result<Self> {
        Self::with_candidates(gpu, &default_candidates())
    }

    /// As [`Cublas::new`], trying exactly `candidates` (paths or sonames).
    pub fn with_candidates(_gpu: &'gpu Gpu, candidates: &[PathBuf]) -> Result<Self> {
        let api = Api::load(candidates)?;
        let mut handle: ffi::Handle = std::ptr::null_mut();
        // SAFETY: `handle` is a valid place for cuBLAS to write the new
        // handle to; the device's context is current (made so by `Gpu`).
        check("cublasCreate_v2", unsafe { (api.create)(&mut handle) })?;
        Ok(Self {
            handle,
            bound_stream: Cell::new(std::ptr::null_mut()),
            api,
            _gpu: PhantomData,
        })
    }

    /// The library file (or soname) that was loaded.
    pub fn library(&self) -> &Path {
        &self.api.path
    }

    /// Makes later calls run on `stream`; a no-op when already bound to it
    /// (rebinding resets cuBLAS's workspace, which costs time in a loop).
    fn bind(&self, stream: &Stream) -> Result<()> {
        let raw = stream.as_inner().cast::<c_void>();
        if self.bound_stream.get() != raw {
            // SAFETY: `self.handle` is live; `raw` is a stream of the
            // current context that outlives this call.
            check("cublasSetStream_v2", unsafe {
                (self.api.set_stream)(self.handle, raw)
            })?;
            self.bound_stream.set(raw);
        }
        Ok(())
    }

    /// Enqueues `Y = X·Wᵀ` on `stream`, the `linear` layer of decode: `w` is
    /// `M×K` row-major bf16, `x` is `N×K` row-major bf16, `y` is `N×M`
    /// row-major, bf16 or f32; products are accumulated in f32.
    ///
    /// cuBLAS is column-major: row-major `W` is column-major `Wᵀ` (`K×M`,
    /// leading dimension `K`), and likewise `X`, while row-major `Y` is
    /// column-major `Yᵀ = W·Xᵀ` (`M×N`, leading dimension `M`). So this is
    /// `C = op_T(W)·op_N(X)` with `lda = ldb = K`, `ldc = M`.
    ///
    /// Returns [`Error::ShapeMismatch`] when a buffer's length does not fit
    /// `m`, `k`, `n`, and [`Error::Unsupported`] for empty or over-large
    /// dimensions, before anything is enqueued.
    ///
    /// # Safety
    ///
    /// The GEMM runs asynchronously: `w`, `x` and `y` must stay allocated,
    /// and `y` must not be read or written by anyone else, until `stream`
    /// has finished it (synchronize the stream or wait on an event after
    /// it). `y` must not overlap `w` or `x`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn linear<Y: BlasOutput>(
        &self,
        stream: &Stream,
        w: &DeviceSlice<bf16>,
        x: &DeviceSlice<bf16>,
        y: &mut DeviceSlice<Y>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        let dims = LinearDims::check(w.len(), x.len(), y.len(), m, k, n)?;
        self.bind(stream)?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let device_ptr = |raw: u64| raw as usize as *mut c_void;
        // SAFETY: the handle is live and bound to `stream`; the buffer
        // lengths were checked against `m`, `k`, `n` and the leading
        // dimensions above; alpha and beta are f32 host values, as
        // `COMPUTE_32F` in the default host pointer mode requires, and are
        // read before the call returns; the caller keeps the buffers alive
        // and unaliased until the stream is done.
        let status = unsafe {
            (self.api.gemm_ex)(
                self.handle,
                ffi::OP_T,
                ffi::OP_N,
                dims.m,
                dims.n,
                dims.k,
                (&raw const alpha).cast(),
                device_ptr(w.as_device_ptr().as_raw()),
                ffi::R_16BF,
                dims.k,
                device_ptr(x.as_device_ptr().as_raw()),
                ffi::R_16BF,
                dims.k,
                (&raw const beta).cast(),
                device_ptr(y.as_device_ptr().as_raw()),
                <Y as private::Sealed>::CUDA_DATA_TYPE,
                dims.m,
                ffi::COMPUTE_32F,
                ffi::GEMM_DEFAULT,
            )
        };
        check("cublasGemmEx", status)
    }
}

impl Drop for Cublas<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `cublasCreate_v2` and is
        // destroyed once; the context outlives `self` (it borrows the
        // `Gpu`), and the library is unloaded only after this, when `api`
        // drops. A failure here has nowhere to go and frees nothing more.
        let _ = unsafe { (self.api.destroy)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_in_order_without_duplicates() {
        let c = library_candidates(
            Some(OsStr::new("/opt/my/libcublas.so")),
            Some(OsStr::new("/usr/local/cuda")),
        );
        let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "/opt/my/libcublas.so",
                "libcublas.so.13",
                "libcublas.so.12",
                "libcublas.so",
                "/usr/local/cuda/lib64/libcublas.so.13",
                "/usr/local/cuda/lib64/libcublas.so.12",
                "/usr/local/cuda/lib64/libcublas.so",
            ]
        );
        let c = library_candidates(None, Some(OsStr::new("/opt/cuda")));
        assert_eq!(c.len(), 9);
        assert_eq!(c[3], Path::new("/opt/cuda/lib64/libcublas.so.13"));
    }

    #[test]
    fn missing_library_is_reported_with_every_candidate() {
        let candidates = [
            PathBuf::from("libzipserv-no-such-cublas.so.99"),
            PathBuf::from("/nonexistent/dir/libcublas.so"),
        ];
        let err = Api::load(&candidates).err().expect("must not load");
        let Error::CublasUnavailable { tried } = &err else {
            panic!("unexpected error {err}");
        };
        assert_eq!(tried.len(), 2);
        assert!(tried[0].starts_with("libzipserv-no-such-cublas.so.99 ("));
        assert!(tried[1].starts_with("/nonexistent/dir/libcublas.so ("));
        let message = err.to_string();
        assert!(message.contains("cuBLAS unavailable"), "{message}");
        assert!(message.contains(CUBLAS_ENV), "{message}");
    }

    #[test]
    fn library_without_cublas_symbols_is_rejected() {
        // The C library loads everywhere but has no cuBLAS entry points.
        let err = Api::load(&[PathBuf::from("libc.so.6")])
            .err()
            .expect("libc is not cuBLAS");
        let Error::CublasUnavailable { tried } = err else {
            panic!("unexpected error");
        };
        assert!(tried[0].contains("cublasCreate_v2"), "{}", tried[0]);
    }

    #[test]
    fn status_names() {
        assert_eq!(CublasStatus(7).name(), "CUBLAS_STATUS_INVALID_VALUE");
        assert_eq!(CublasStatus(15).name(), "CUBLAS_STATUS_NOT_SUPPORTED");
        assert_eq!(CublasStatus(999).name(), "unknown");
        assert!(check("cublasGemmEx", 0).is_ok());
        let err = check("cublasGemmEx", 13).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cuBLAS error in cublasGemmEx: CUBLAS_STATUS_EXECUTION_FAILED (13)"
        );
    }

    #[test]
    fn linear_dims_accept_matching_buffers() {
        let d = LinearDims::check(6 * 4, 3 * 4, 3 * 6, 6, 4, 3).unwrap();
        assert_eq!(d, LinearDims { m: 6, k: 4, n: 3 });
    }

    #[test]
    fn linear_dims_reject_wrong_lengths() {
        for (w, x, y, what) in [(23, 12, 18, "W"), (24, 13, 18, "X"), (24, 12, 17, "Y")] {
            let err = LinearDims::check(w, x, y, 6, 4, 3).unwrap_err();
            match err {
                Error::ShapeMismatch { what: got, .. } => {
                    assert!(got.contains(what), "{got} should name {what}")
                }
                other => panic!("unexpected error {other}"),
            }
        }
    }

    #[test]
    fn linear_dims_reject_empty_and_huge() {
        assert!(matches!(
            LinearDims::check(0, 0, 0, 0, 4, 3),
            Err(Error::Unsupported(_))
        ));
        let big = c_int::MAX as usize + 1;
        assert!(matches!(
            LinearDims::check(big, 1, big, big, 1, 1),
            Err(Error::Unsupported(_))
        ));
    }
}
