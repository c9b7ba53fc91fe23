//! cuBLASLt, the stronger BF16 baseline: the same `Y = X·Wᵀ` as
//! [`Cublas::linear`](crate::Cublas::linear), but with the algorithm chosen
//! by the caller from cuBLASLt's heuristic list instead of by cuBLAS's
//! default, and with a workspace of our own. `cublasGemmEx` picks one
//! algorithm per shape; timing the heuristics' top few and keeping the
//! fastest is what a serving stack that tunes its GEMMs gets, so a speedup
//! measured against it is not flattered by a weak default.
//!
//! Opened at run time like cuBLAS (`cublas.rs`), for the same reason: a
//! CPU-only machine must build and test without it. Layers: `ffi` (types,
//! constants, entry points), `Api` (the opened library), [`CublasLt`] (a
//! handle and its workspace), [`LinearPlan`] (the descriptors of one shape),
//! [`LtAlgorithm`] (one heuristic result).

use std::ffi::{OsStr, c_int, c_void};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use cust::memory::{DeviceBuffer, DeviceSlice};
use cust::stream::Stream;
use half::bf16;

use crate::cublas::{candidates_for, check, first_that_opens, symbol};
use crate::device::Gpu;
use crate::error::{CudaContext, Error, Result, Shape};

/// Environment variable naming a cuBLASLt library to try before the
/// defaults.
pub const CUBLASLT_ENV: &str = "ZIPSERV_CUBLASLT";

/// Library names tried, newest first: CUDA 13, CUDA 12, then the
/// unversioned development link.
const SONAMES: [&str; 3] = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"];

/// Workspace offered to cuBLASLt's algorithms: 32 MiB, what Hopper's
/// split-K and stream-K kernels ask for at most on these shapes (and what
/// frameworks commonly give it).
pub const DEFAULT_WORKSPACE_BYTES: usize = 32 << 20;

/// The C side, as declared in `cublasLt.h` and `library_types.h`.
mod ffi {
    use std::ffi::{c_int, c_void};

    pub type Handle = *mut c_void;
    pub type MatmulDesc = *mut c_void;
    pub type Layout = *mut c_void;
    pub type Preference = *mut c_void;
    pub type Status = c_int;
    /// `cudaStream_t`; the same object as the driver API's `CUstream`.
    pub type Stream = *mut c_void;

    /// `cublasLtMatmulAlgo_t`: opaque, trivially copyable.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Algo {
        pub data: [u64; 8],
    }

    /// `cublasLtMatmulHeuristicResult_t`.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct HeuristicResult {
        pub algo: Algo,
        pub workspace_size: usize,
        pub state: Status,
        pub waves_count: f32,
        pub reserved: [c_int; 4],
    }

    /// `cublasOperation_t`.
    pub const OP_N: c_int = 0;
    pub const OP_T: c_int = 1;
    /// `cudaDataType_t`.
    pub const R_32F: c_int = 0;
    pub const R_16BF: c_int = 14;
    /// `cublasComputeType_t`: fp32 accumulation, no down-conversion.
    pub const COMPUTE_32F: c_int = 68;
    /// `cublasLtMatmulDescAttributes_t`.
    pub const DESC_TRANSA: c_int = 3;
    pub const DESC_TRANSB: c_int = 4;
    /// `cublasLtMatmulPreferenceAttributes_t`.
    pub const PREF_MAX_WORKSPACE_BYTES: c_int = 1;

    pub type CreateFn = unsafe extern "C" fn(handle: *mut Handle) -> Status;
    pub type DestroyFn = unsafe extern "C" fn(handle: Handle) -> Status;
    pub type DescCreateFn =
        unsafe extern "C" fn(desc: *mut MatmulDesc, compute: c_int, scale: c_int) -> Status;
    pub type DescDestroyFn = unsafe extern "C" fn(desc: MatmulDesc) -> Status;
    pub type DescSetFn = unsafe extern "C" fn(
        desc: MatmulDesc,
        attr: c_int,
        buf: *const c_void,
        size: usize,
    ) -> Status;
    pub type LayoutCreateFn = unsafe extern "C" fn(
        layout: *mut Layout,
        data_type: c_int,
        rows: u64,
        cols: u64,
        ld: i64,
    ) -> Status;
    pub type LayoutDestroyFn = unsafe extern "C" fn(layout: Layout) -> Status;
    pub type PrefCreateFn = unsafe extern "C" fn(pref: *mut Preference) -> Status;
    pub type PrefDestroyFn = unsafe extern "C" fn(pref: Preference) -> Status;
    pub type PrefSetFn = unsafe extern "C" fn(
        pref: Preference,
        attr: c_int,
        buf: *const c_void,
        size: usize,
    ) -> Status;
    /// `cublasLtMatmulAlgoGetHeuristic(handle, desc, A, B, C, D, pref,
    /// requested, results, returned)`.
    pub type HeuristicFn = unsafe extern "C" fn(
        handle: Handle,
        desc: MatmulDesc,
        a: Layout,
        b: Layout,
        c: Layout,
        d: Layout,
        pref: Preference,
        requested: c_int,
        results: *mut HeuristicResult,
        returned: *mut c_int,
    ) -> Status;
    /// `cublasLtMatmul(handle, desc, alpha, A, Adesc, B, Bdesc, beta, C,
    /// Cdesc, D, Ddesc, algo, workspace, workspaceSize, stream)`.
    pub type MatmulFn = unsafe extern "C" fn(
        handle: Handle,
        desc: MatmulDesc,
        alpha: *const c_void,
        a: *const c_void,
        a_desc: Layout,
        b: *const c_void,
        b_desc: Layout,
        beta: *const c_void,
        c: *const c_void,
        c_desc: Layout,
        d: *mut c_void,
        d_desc: Layout,
        algo: *const Algo,
        workspace: *mut c_void,
        workspace_size: usize,
        stream: Stream,
    ) -> Status;
}

/// Where to look for cuBLASLt, in the order of
/// [`library_candidates`](crate::cublas::library_candidates): the override,
/// each soname through the loader, then under `$CUDA_HOME/lib64` and
/// `/usr/local/cuda/lib64`.
pub fn library_candidates(
    override_path: Option<&OsStr>,
    cuda_home: Option<&OsStr>,
) -> Vec<PathBuf> {
    candidates_for(&SONAMES, override_path, cuda_home)
}

/// An opened cuBLASLt and the entry points we call; the pointers are valid
/// while `_library` is loaded, and it lives as long as they do.
struct Api {
    create: ffi::CreateFn,
    destroy: ffi::DestroyFn,
    desc_create: ffi::DescCreateFn,
    desc_destroy: ffi::DescDestroyFn,
    desc_set: ffi::DescSetFn,
    layout_create: ffi::LayoutCreateFn,
    layout_destroy: ffi::LayoutDestroyFn,
    pref_create: ffi::PrefCreateFn,
    pref_destroy: ffi::PrefDestroyFn,
    pref_set: ffi::PrefSetFn,
    heuristic: ffi::HeuristicFn,
    matmul: ffi::MatmulFn,
    path: PathBuf,
    _library: libloading::Library,
}

impl Api {
    /// Opens the first candidate that loads and has every entry point.
    fn load(candidates: &[PathBuf]) -> Result<Self> {
        first_that_opens(candidates, Self::open)
            .map_err(|tried| Error::CublasLtUnavailable { tried })
    }

    fn open(path: &Path) -> std::result::Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; the candidates
        // are cuBLASLt's own names or a path the user chose to name it.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        // SAFETY (every symbol): each is given the signature `cublasLt.h`
        // declares for it (see `ffi`).
        unsafe {
            Ok(Self {
                create: symbol(&lib, "cublasLtCreate")?,
                destroy: symbol(&lib, "cublasLtDestroy")?,
                desc_create: symbol(&lib, "cublasLtMatmulDescCreate")?,
                desc_destroy: symbol(&lib, "cublasLtMatmulDescDestroy")?,
                desc_set: symbol(&lib, "cublasLtMatmulDescSetAttribute")?,
                layout_create: symbol(&lib, "cublasLtMatrixLayoutCreate")?,
                layout_destroy: symbol(&lib, "cublasLtMatrixLayoutDestroy")?,
                pref_create: symbol(&lib, "cublasLtMatmulPreferenceCreate")?,
                pref_destroy: symbol(&lib, "cublasLtMatmulPreferenceDestroy")?,
                pref_set: symbol(&lib, "cublasLtMatmulPreferenceSetAttribute")?,
                heuristic: symbol(&lib, "cublasLtMatmulAlgoGetHeuristic")?,
                matmul: symbol(&lib, "cublasLtMatmul")?,
                path: path.to_path_buf(),
                _library: lib,
            })
        }
    }
}

/// A cuBLASLt handle in the primary context a [`Gpu`] made current on this
/// thread, with the device workspace its algorithms may use; destroyed on
/// drop. It borrows the `Gpu` so that it cannot outlive the context.
pub struct CublasLt<'gpu> {
    handle: ffi::Handle,
    workspace: DeviceBuffer<u8>,
    api: Api,
    _gpu: PhantomData<&'gpu Gpu>,
}

impl<'gpu> CublasLt<'gpu> {
    /// Loads cuBLASLt from the default places (with `$ZIPSERV_CUBLASLT`
    /// and `$CUDA_HOME`), creates a handle and a workspace of
    /// [`DEFAULT_WORKSPACE_BYTES`].
    pub fn new(gpu: &'gpu Gpu) -> Result<Self> {
        let candidates = library_candidates(
            std::env::var_os(CUBLASLT_ENV).as_deref(),
            std::env::var_os("CUDA_HOME").as_deref(),
        );
        Self::with_candidates(gpu, &candidates, DEFAULT_WORKSPACE_BYTES)
    }

    /// As [`CublasLt::new`], trying exactly `candidates`, with a workspace
    /// of `workspace_bytes` (at least 1 byte is allocated, so that the
    /// pointer is valid).
    pub fn with_candidates(
        _gpu: &'gpu Gpu,
        candidates: &[PathBuf],
        workspace_bytes: usize,
    ) -> Result<Self> {
        let api = Api::load(candidates)?;
        let workspace = DeviceBuffer::<u8>::zeroed(workspace_bytes.max(1)).cuda("cuMemAlloc")?;
        let mut handle: ffi::Handle = std::ptr::null_mut();
        // SAFETY: `handle` is a valid place for the new handle; the
        // device's context is current (made so by `Gpu`).
        check("cublasLtCreate", unsafe { (api.create)(&mut handle) })?;
        Ok(Self {
            handle,
            workspace,
            api,
            _gpu: PhantomData,
        })
    }

    /// The library file (or soname) that was loaded.
    pub fn library(&self) -> &Path {
        &self.api.path
    }

    /// Bytes of workspace the algorithms may use.
    pub fn workspace_bytes(&self) -> usize {
        self.workspace.len()
    }

    /// The descriptors of `Y[N×M] = X[N×K] · W[M×K]ᵀ`, all row-major BF16,
    /// FP32 accumulation and scaling: the layout of
    /// [`Cublas::linear`](crate::Cublas::linear) (column-major
    /// `Yᵀ = op_T(W')·X'`, where `W'` is `W` read column-major as `K×M`).
    pub fn linear_plan(&self, m: usize, k: usize, n: usize) -> Result<LinearPlan<'_>> {
        let dims = Dims::new(m, k, n)?;
        let mut plan = LinearPlan {
            lt: self,
            desc: std::ptr::null_mut(),
            layouts: [std::ptr::null_mut(); 3],
            dims,
        };
        let api = &self.api;
        // SAFETY: each create call writes a new descriptor into a field of
        // `plan`, whose drop destroys the ones that were created (non-null)
        // if a later call fails; attribute values are i32 as the header
        // declares for TRANSA/TRANSB and live across the call.
        unsafe {
            check(
                "cublasLtMatmulDescCreate",
                (api.desc_create)(&mut plan.desc, ffi::COMPUTE_32F, ffi::R_32F),
            )?;
            for (attr, op) in [(ffi::DESC_TRANSA, ffi::OP_T), (ffi::DESC_TRANSB, ffi::OP_N)] {
                let op: i32 = op;
                check(
                    "cublasLtMatmulDescSetAttribute",
                    (api.desc_set)(plan.desc, attr, (&raw const op).cast(), size_of::<i32>()),
                )?;
            }
            // W' (K×M, ld K), X' (K×N, ld K), Y' (M×N, ld M): C and D share
            // one layout.
            let shapes = [
                (dims.k, dims.m, dims.k),
                (dims.k, dims.n, dims.k),
                (dims.m, dims.n, dims.m),
            ];
            for (slot, (rows, cols, ld)) in plan.layouts.iter_mut().zip(shapes) {
                check(
                    "cublasLtMatrixLayoutCreate",
                    (api.layout_create)(slot, ffi::R_16BF, rows, cols, ld as i64),
                )?;
            }
        }
        Ok(plan)
    }
}

impl Drop for CublasLt<'_> {
    fn drop(&mut self) {
        // SAFETY: created by `cublasLtCreate`, destroyed once; plans borrow
        // `self`, so none is left; the library unloads only after this.
        let _ = unsafe { (self.api.destroy)(self.handle) };
    }
}

/// `M`, `K`, `N`, each at least 1 and within the 32-bit sizes cuBLASLt
/// supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    m: u64,
    k: u64,
    n: u64,
}

impl Dims {
    fn new(m: usize, k: usize, n: usize) -> Result<Self> {
        if m == 0 || k == 0 || n == 0 {
            return Err(Error::Unsupported(format!(
                "empty GEMM (M={m}, K={k}, N={n}): every dimension must be at least 1"
            )));
        }
        let narrow = |d: usize, name: &str| {
            c_int::try_from(d).map(|d| d as u64).map_err(|_| {
                Error::Unsupported(format!("{name}={d} exceeds cuBLASLt's 32-bit dimensions"))
            })
        };
        Ok(Self {
            m: narrow(m, "M")?,
            k: narrow(k, "K")?,
            n: narrow(n, "N")?,
        })
    }

    /// Element counts of W, X and Y.
    fn lens(&self) -> [usize; 3] {
        [
            (self.m * self.k) as usize,
            (self.n * self.k) as usize,
            (self.n * self.m) as usize,
        ]
    }
}

/// One algorithm cuBLASLt's heuristics proposed for a [`LinearPlan`], in
/// their order (the first is their favourite).
#[derive(Debug, Clone, Copy)]
pub struct LtAlgorithm {
    result: ffi::HeuristicResult,
}

impl LtAlgorithm {
    /// Workspace bytes it needs (at most the handle's).
    pub fn workspace_bytes(&self) -> usize {
        self.result.workspace_size
    }

    /// The heuristics' utilisation estimate (1.0: one full wave of blocks).
    pub fn waves(&self) -> f32 {
        self.result.waves_count
    }
}

/// The descriptors of one `linear` shape; destroyed on drop.
pub struct LinearPlan<'lt> {
    lt: &'lt CublasLt<'lt>,
    desc: ffi::MatmulDesc,
    /// W', X', Y' (the last for both C and D).
    layouts: [ffi::Layout; 3],
    dims: Dims,
}

impl LinearPlan<'_> {
    /// Up to `max` algorithms the heuristics propose for this shape within
    /// the handle's workspace, best guess first. An empty list means
    /// cuBLASLt has none for it.
    pub fn algorithms(&self, max: usize) -> Result<Vec<LtAlgorithm>> {
        let api = &self.lt.api;
        let requested = c_int::try_from(max.max(1)).unwrap_or(c_int::MAX);
        let mut results = vec![ffi::HeuristicResult::default(); requested as usize];
        let mut returned: c_int = 0;
        let mut pref: ffi::Preference = std::ptr::null_mut();
        // SAFETY: `pref` is created here and destroyed below on every path;
        // the workspace limit is a u64 as the header declares; `results`
        // has room for `requested` entries and `returned` is a valid place.
        let status = unsafe {
            check(
                "cublasLtMatmulPreferenceCreate",
                (api.pref_create)(&mut pref),
            )?;
            let limit = self.lt.workspace_bytes() as u64;
            let mut status = check(
                "cublasLtMatmulPreferenceSetAttribute",
                (api.pref_set)(
                    pref,
                    ffi::PREF_MAX_WORKSPACE_BYTES,
                    (&raw const limit).cast(),
                    size_of::<u64>(),
                ),
            );
            if status.is_ok() {
                let [a, b, c] = self.layouts;
                status = check(
                    "cublasLtMatmulAlgoGetHeuristic",
                    (api.heuristic)(
                        self.lt.handle,
                        self.desc,
                        a,
                        b,
                        c,
                        c,
                        pref,
                        requested,
                        results.as_mut_ptr(),
                        &mut returned,
                    ),
                );
            }
            (api.pref_destroy)(pref);
            status
        };
        match status {
            Ok(()) => {}
            // No algorithm for this shape: an empty list, not a failure.
            Err(Error::Cublas { status, .. }) if status.0 == NOT_SUPPORTED => return Ok(vec![]),
            Err(e) => return Err(e),
        }
        let returned = usize::try_from(returned).unwrap_or(0).min(results.len());
        Ok(results[..returned]
            .iter()
            .filter(|r| r.state == 0 && r.workspace_size <= self.lt.workspace_bytes())
            .map(|&result| LtAlgorithm { result })
            .collect())
    }

    /// Enqueues `Y = X·Wᵀ` on `stream` with `algorithm` (one of
    /// [`Self::algorithms`]'): `w` is `M×K`, `x` `N×K`, `y` `N×M`, all
    /// row-major BF16.
    ///
    /// # Safety
    ///
    /// The GEMM runs asynchronously: `w`, `x` and `y` must stay allocated,
    /// and `y` must not be read or written by anyone else, until `stream`
    /// has finished it; `y` must not overlap `w` or `x`. The handle's one
    /// workspace is used by every call: calls on different streams must
    /// not overlap in time.
    pub unsafe fn linear(
        &self,
        stream: &Stream,
        algorithm: &LtAlgorithm,
        w: &DeviceSlice<bf16>,
        x: &DeviceSlice<bf16>,
        y: &mut DeviceSlice<bf16>,
    ) -> Result<()> {
        let [w_len, x_len, y_len] = self.dims.lens();
        for (what, want, got) in [
            ("cuBLASLt linear: W (M x K)", w_len, w.len()),
            ("cuBLASLt linear: X (N x K)", x_len, x.len()),
            ("cuBLASLt linear: Y (N x M)", y_len, y.len()),
        ] {
            if want != got {
                return Err(Error::ShapeMismatch {
                    what,
                    expected: Shape(vec![want]),
                    got: Shape(vec![got]),
                });
            }
        }
        let api = &self.lt.api;
        let [a, b, c] = self.layouts;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let ptr = |raw: u64| raw as usize as *mut c_void;
        // SAFETY: descriptors are live (owned by `self`); buffer lengths
        // match the layouts (checked above); alpha/beta are f32 host values
        // as the FP32 scale type in host pointer mode requires; the
        // algorithm came from this plan's heuristics and needs at most the
        // handle's workspace; the caller keeps the buffers alive and
        // unaliased, and the workspace unshared, until the stream is done.
        let status = unsafe {
            (api.matmul)(
                self.lt.handle,
                self.desc,
                (&raw const alpha).cast(),
                ptr(w.as_device_ptr().as_raw()),
                a,
                ptr(x.as_device_ptr().as_raw()),
                b,
                (&raw const beta).cast(),
                ptr(y.as_device_ptr().as_raw()),
                c,
                ptr(y.as_device_ptr().as_raw()),
                c,
                &algorithm.result.algo,
                ptr(self.lt.workspace.as_device_ptr().as_raw()),
                algorithm.result.workspace_size,
                stream.as_inner().cast(),
            )
        };
        check("cublasLtMatmul", status)
    }
}

impl Drop for LinearPlan<'_> {
    fn drop(&mut self) {
        let api = &self.lt.api;
        // SAFETY: each descriptor was created by this plan (or is still
        // null when its creation failed) and is destroyed once; nothing
        // enqueued keeps them (cuBLASLt reads descriptors at enqueue time).
        unsafe {
            for &layout in &self.layouts {
                if !layout.is_null() {
                    (api.layout_destroy)(layout);
                }
            }
            if !self.desc.is_null() {
                (api.desc_destroy)(self.desc);
            }
        }
    }
}

/// `CUBLAS_STATUS_NOT_SUPPORTED`.
const NOT_SUPPORTED: i32 = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_in_order() {
        let c = library_candidates(Some(OsStr::new("/opt/lt.so")), None);
        let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "/opt/lt.so",
                "libcublasLt.so.13",
                "libcublasLt.so.12",
                "libcublasLt.so",
                "/usr/local/cuda/lib64/libcublasLt.so.13",
                "/usr/local/cuda/lib64/libcublasLt.so.12",
                "/usr/local/cuda/lib64/libcublasLt.so",
            ]
        );
    }

    #[test]
    fn missing_or_wrong_library_is_reported() {
        let err = Api::load(&[PathBuf::from("libzipserv-no-such-lt.so.1")])
            .err()
            .expect("must not load");
        let message = err.to_string();
        assert!(message.contains("cuBLASLt unavailable"), "{message}");
        assert!(message.contains(CUBLASLT_ENV), "{message}");
        let Error::CublasLtUnavailable { tried } = Api::load(&[PathBuf::from("libc.so.6")])
            .err()
            .expect("libc is not cuBLASLt")
        else {
            panic!("unexpected error");
        };
        assert!(tried[0].contains("cublasLtCreate"), "{}", tried[0]);
    }

    #[test]
    fn struct_layouts_match_the_header() {
        // cublasLtMatmulAlgo_t is uint64_t[8]; the heuristic result adds a
        // size_t, a status, a float and int[4].
        assert_eq!(size_of::<ffi::Algo>(), 64);
        assert_eq!(size_of::<ffi::HeuristicResult>(), 96);
        assert_eq!(
            std::mem::offset_of!(ffi::HeuristicResult, workspace_size),
            64
        );
        assert_eq!(std::mem::offset_of!(ffi::HeuristicResult, state), 72);
        assert_eq!(std::mem::offset_of!(ffi::HeuristicResult, waves_count), 76);
    }

    #[test]
    fn dims_are_checked() {
        let d = Dims::new(6, 4, 3).unwrap();
        assert_eq!(d.lens(), [24, 12, 18]);
        assert!(matches!(Dims::new(0, 4, 3), Err(Error::Unsupported(_))));
        let big = c_int::MAX as usize + 1;
        assert!(matches!(Dims::new(big, 1, 1), Err(Error::Unsupported(_))));
    }
}
