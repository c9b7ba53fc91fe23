//! The CUDA driver library (`libcuda.so.1`), opened at run time.
//!
//! `cust` declares the driver API as `extern "C"` functions and asks the
//! linker for `-lcuda`, so a binary built on it cannot even start on a
//! machine without the NVIDIA driver. zipserv-gpu instead defines, under its
//! C name, every driver function cust calls, as a forwarder to the same
//! function of the driver library opened with `dlopen` on first use; the
//! link itself is satisfied by the empty stub in `host/cuda-link-stub`
//! (named in `.cargo/config.toml`). cudarc's `dynamic-loading` feature makes
//! the same choice.
//!
//! - The list below is the set of driver functions the linker asks for: a
//!   new cust call that is missing here fails the build with "undefined
//!   symbol: cuXxx", naming what to add. Signatures are those of `cust::sys`
//!   (bindgen's translation of `cuda.h`), so they are checked against it.
//! - Each function is resolved by its exact (versioned) name, e.g.
//!   `cuMemAlloc_v2`, which is what `cuda.h` maps the plain names to.
//! - Without a driver library every forwarder returns
//!   `CUDA_ERROR_STUB_LIBRARY`; [`load`] says why it could not be opened,
//!   which [`crate::Gpu::new`] reports as [`Error::NoDriver`].
//! - The forwarders are not exported from the binary's dynamic symbol table
//!   (Rust executables are linked without `-rdynamic`), so they cannot
//!   interpose on libraries that call the driver themselves (cuBLAS).

#![allow(non_snake_case)]

use std::ffi::{c_char, c_int, c_uchar, c_uint, c_void};
use std::sync::OnceLock;

use cust::sys::*;
use libloading::Library;

use crate::error::{Error, Result};

/// The driver library's name, as the NVIDIA driver installs it.
pub const DRIVER_LIBRARY: &str = "libcuda.so.1";

/// Opens the driver library (once per process) and resolves every function
/// zipserv uses. Fails with [`Error::NoDriver`] when the library is absent or
/// lacks one of them.
pub fn load() -> Result<()> {
    match api() {
        Ok(_) => Ok(()),
        Err(reason) => Err(Error::NoDriver {
            reason: reason.clone(),
        }),
    }
}

/// The library stays open for the life of the process: the function
/// pointers point into it.
struct Driver {
    _library: Library,
    api: Api,
    launch_ex: Option<LaunchKernelEx>,
}

/// `CUlaunchAttribute` of `cuda.h` (CUDA 12): an id, padding, and a 64-byte
/// union of which the one attribute zipserv sets uses the first `int`.
/// cust's bindings (CUDA 11.4) predate it.
#[repr(C)]
pub(crate) struct LaunchAttribute {
    pub id: c_uint,
    pub pad: [u8; 4],
    pub value: [u64; 8],
}

/// `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`: the launched
/// kernel may start before the previous kernel on the stream ends, and
/// waits for it with `griddepcontrol.wait` itself.
pub(crate) const PROGRAMMATIC_STREAM_SERIALIZATION: c_uint = 6;

/// `CUlaunchConfig` of `cuda.h` (CUDA 12).
#[repr(C)]
pub(crate) struct LaunchConfig {
    pub grid: [c_uint; 3],
    pub block: [c_uint; 3],
    pub shared_mem_bytes: c_uint,
    pub stream: CUstream,
    pub attrs: *mut LaunchAttribute,
    pub num_attrs: c_uint,
}

// The sizes and offsets of cuda.h on a 64-bit host.
const _: () = assert!(std::mem::size_of::<LaunchAttribute>() == 72);
const _: () = assert!(std::mem::offset_of!(LaunchAttribute, value) == 8);
const _: () = assert!(std::mem::size_of::<LaunchConfig>() == 56);
const _: () = assert!(std::mem::offset_of!(LaunchConfig, stream) == 32);
const _: () = assert!(std::mem::offset_of!(LaunchConfig, num_attrs) == 48);

/// `cuLaunchKernelEx` (CUDA 11.8 and later).
pub(crate) type LaunchKernelEx = unsafe extern "C" fn(
    config: *const LaunchConfig,
    f: CUfunction,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult;

/// `cuLaunchKernelEx`, or `None` when the driver is older than CUDA 11.8
/// (or absent). Resolved apart from the functions cust needs, so an older
/// driver runs everything but overlapped launches.
pub(crate) fn launch_kernel_ex() -> Option<LaunchKernelEx> {
    api().ok()?;
    DRIVER.get()?.as_ref().ok()?.launch_ex
}

static DRIVER: OnceLock<std::result::Result<Driver, String>> = OnceLock::new();

fn api() -> std::result::Result<&'static Api, &'static String> {
    let driver = DRIVER.get_or_init(|| {
        // SAFETY: loading the NVIDIA driver library runs its initialisers,
        // which is what linking it would have done at program start.
        let library = unsafe { Library::new(DRIVER_LIBRARY) }.map_err(|e| {
            let detail = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
            format!("cannot open {DRIVER_LIBRARY} ({detail}); is the NVIDIA driver installed?")
        })?;
        // SAFETY: each symbol is resolved with the signature `cuda.h` gives
        // it (through cust::sys); the library outlives the pointers.
        let api = unsafe { Api::resolve(&library) }?;
        // SAFETY: the signature cuda.h gives `cuLaunchKernelEx`.
        let launch_ex = unsafe { library.get::<LaunchKernelEx>(b"cuLaunchKernelEx\0") }
            .ok()
            .map(|symbol| *symbol);
        Ok(Driver {
            _library: library,
            api,
            launch_ex,
        })
    });
    driver.as_ref().map(|d| &d.api)
}

/// Declares the driver functions: a table of pointers resolved from the
/// library, and a forwarder under each C name.
macro_rules! driver_api {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        struct Api {
            $($name: unsafe extern "C" fn($($ty),*) -> CUresult,)*
        }

        impl Api {
            /// # Safety
            /// `library` must be the CUDA driver library.
            unsafe fn resolve(library: &Library) -> std::result::Result<Self, String> {
                Ok(Self {
                    $($name: {
                        let name = concat!(stringify!($name), "\0");
                        // SAFETY: the caller's promise; the type is the one
                        // cuda.h declares for this name.
                        let symbol = unsafe {
                            library.get::<unsafe extern "C" fn($($ty),*) -> CUresult>(name.as_bytes())
                        };
                        *symbol.map_err(|e| {
                            format!("{DRIVER_LIBRARY} lacks {} ({e}); the driver is too old", stringify!($name))
                        })?
                    },)*
                })
            }
        }

        /// The forwarders, one per driver function, under the C names cust
        /// links against.
        pub mod forward {
            use super::*;
            $(
                #[doc(hidden)]
                #[unsafe(no_mangle)]
                /// # Safety
                /// As for the driver function of this name.
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> CUresult {
                    match api() {
                        // SAFETY: the caller keeps the driver's contract.
                        Ok(api) => unsafe { (api.$name)($($arg),*) },
                        Err(_) => cudaError_enum::CUDA_ERROR_STUB_LIBRARY,
                    }
                }
            )*
        }
    };
}

driver_api! {
    fn cuCtxSetCurrent(ctx: CUcontext);
    fn cuCtxSynchronize();
    fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int);
    fn cuDeviceGetAttribute(pi: *mut c_int, attrib: CUdevice_attribute, dev: CUdevice);
    fn cuDeviceGetCount(count: *mut c_int);
    fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice);
    fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice);
    fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice);
    fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice);
    fn cuDriverGetVersion(driver_version: *mut c_int);
    fn cuEventCreate(ph_event: *mut CUevent, flags: c_uint);
    fn cuEventDestroy_v2(h_event: CUevent);
    fn cuEventElapsedTime(p_milliseconds: *mut f32, h_start: CUevent, h_end: CUevent);
    fn cuEventRecord(h_event: CUevent, h_stream: CUstream);
    fn cuFuncSetAttribute(hfunc: CUfunction, attrib: CUfunction_attribute, value: c_int);
    fn cuGetErrorString(error: CUresult, p_str: *mut *const c_char);
    fn cuInit(flags: c_uint);
    fn cuLaunchKernel(
        f: CUfunction,
        grid_dim_x: c_uint,
        grid_dim_y: c_uint,
        grid_dim_z: c_uint,
        block_dim_x: c_uint,
        block_dim_y: c_uint,
        block_dim_z: c_uint,
        shared_mem_bytes: c_uint,
        h_stream: CUstream,
        kernel_params: *mut *mut c_void,
        extra: *mut *mut c_void,
    );
    fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize);
    fn cuMemFree_v2(dptr: CUdeviceptr);
    fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize);
    fn cuMemcpyDtoDAsync_v2(
        dst_device: CUdeviceptr,
        src_device: CUdeviceptr,
        byte_count: usize,
        h_stream: CUstream,
    );
    fn cuMemcpyDtoH_v2(dst_host: *mut c_void, src_device: CUdeviceptr, byte_count: usize);
    fn cuMemcpyHtoD_v2(dst_device: CUdeviceptr, src_host: *const c_void, byte_count: usize);
    fn cuMemsetD8_v2(dst_device: CUdeviceptr, uc: c_uchar, n: usize);
    fn cuModuleGetFunction(hfunc: *mut CUfunction, hmod: CUmodule, name: *const c_char);
    fn cuModuleLoadDataEx(
        module: *mut CUmodule,
        image: *const c_void,
        num_options: c_uint,
        options: *mut CUjit_option,
        option_values: *mut *mut c_void,
    );
    fn cuModuleUnload(hmod: CUmodule);
    fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
        num_blocks: *mut c_int,
        func: CUfunction,
        block_size: c_int,
        dynamic_s_mem_size: usize,
    );
    fn cuStreamCreateWithPriority(ph_stream: *mut CUstream, flags: c_uint, priority: c_int);
    fn cuStreamDestroy_v2(h_stream: CUstream);
    fn cuStreamSynchronize(h_stream: CUstream);
    // The engine's decode step, replayed as a CUDA graph.
    fn cuStreamBeginCapture_v2(h_stream: CUstream, mode: CUstreamCaptureMode);
    fn cuStreamEndCapture(h_stream: CUstream, ph_graph: *mut CUgraph);
    fn cuGraphInstantiateWithFlags(
        ph_graph_exec: *mut CUgraphExec,
        h_graph: CUgraph,
        flags: std::ffi::c_ulonglong,
    );
    fn cuGraphLaunch(h_graph_exec: CUgraphExec, h_stream: CUstream);
    fn cuGraphExecDestroy(h_graph_exec: CUgraphExec);
    fn cuGraphDestroy(h_graph: CUgraph);
    // The engine waits for uploads made on the legacy stream, which its
    // non-blocking stream does not wait for.
}
