//! Kernel launches without a name lookup: every kernel's handle is resolved
//! once, when the device is opened (`Kernels`), and launched with
//! `cuLaunchKernel` on a raw `CUstream`, so that callers with streams of
//! their own (an engine, PyTorch, cudarc) launch on them directly.

use std::ffi::c_void;

use cust::function::GridSize;
use cust::module::Module;
use cust::sys::{CUfunction, CUfunction_attribute, CUstream, cudaError_enum};
use zipserv_kernels::catalog::{GEMV_BF16, X_PITCH};
use zipserv_kernels::launch::{GEMM_VARIANTS, ZIPGEMV_VARIANTS};
use zipserv_kernels::sm90::WGMMA_GEMM_VARIANTS;

use crate::driver::{LaunchAttribute, LaunchConfig, PROGRAMMATIC_STREAM_SERIALIZATION};
use crate::error::{CudaContext, Error, Result};

/// A kernel of the loaded module. The driver's function handles may be used
/// from any thread while their module is loaded.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub(crate) name: &'static str,
    handle: CUfunction,
}

// SAFETY: a CUfunction is an opaque driver handle, valid in every thread of
// the process while its module is loaded (the `Gpu` owning both unloads the
// module last).
unsafe impl Send for Kernel {}
// SAFETY: as above; launching through a shared handle is thread-safe.
unsafe impl Sync for Kernel {}

impl Kernel {
    pub(crate) fn resolve(module: &Module, name: &'static str) -> Result<Self> {
        let function = module.get_function(name).cuda("cuModuleGetFunction")?;
        Ok(Self {
            name,
            handle: function.to_raw(),
        })
    }

    pub(crate) fn raw(self) -> CUfunction {
        self.handle
    }

    /// The kernel's entry-point name.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// Asks the driver to run this kernel with `percent` of the unified
    /// L1/shared memory as shared memory
    /// (`CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT`; the driver
    /// rounds up to a configuration the card has). A multiprocessor holds
    /// blocks of consecutive kernels at once only while they agree on it,
    /// so it decides what an overlapped launch can overlap.
    pub fn prefer_shared_carveout(self, percent: u32) -> Result<()> {
        prefer_shared_carveout(self.handle, self.name, percent)
    }
}

/// [`Kernel::prefer_shared_carveout`] for a function handle (`name` for
/// the error), before the image's kernels are resolved.
pub(crate) fn prefer_shared_carveout(function: CUfunction, name: &str, percent: u32) -> Result<()> {
    if percent > 100 {
        return Err(Error::Unsupported(format!(
            "{name}: a shared-memory carveout of {percent}% (0 to 100)"
        )));
    }
    set_attribute(
        function,
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
        percent as i32,
        "cuFuncSetAttribute(PREFERRED_SHARED_MEMORY_CARVEOUT)",
    )
}

/// `cuFuncSetAttribute(function, attribute, value)`, its failure named
/// `call`.
fn set_attribute(
    function: CUfunction,
    attribute: CUfunction_attribute,
    value: i32,
    call: &'static str,
) -> Result<()> {
    // SAFETY: a valid function handle and a plain integer attribute.
    let code = unsafe { cust::sys::cuFuncSetAttribute(function, attribute, value) };
    if code != cudaError_enum::CUDA_SUCCESS {
        return Err(Error::Driver {
            call,
            code: code as i32,
        });
    }
    Ok(())
}

/// Every kernel a device's image holds, resolved at [`crate::Gpu::new`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernels {
    pub(crate) decompress: Kernel,
    pub(crate) demo: Kernel,
    pub(crate) gemv: Kernel,
    /// One per `launch::ZIPGEMV_VARIANTS`.
    pub(crate) zipgemv: [Kernel; ZIPGEMV_VARIANTS.len()],
    /// One per `launch::GEMM_VARIANTS`.
    pub(crate) gemm: [Kernel; GEMM_VARIANTS.len()],
    /// One per `sm90::WGMMA_GEMM_VARIANTS`, and the activation copy they may
    /// need; `None` in an image without the Hopper kernels.
    pub(crate) wgmma: Option<([Kernel; WGMMA_GEMM_VARIANTS.len()], Kernel)>,
}

impl Kernels {
    pub(crate) fn resolve(module: &Module, has_wgmma: bool) -> Result<Self> {
        fn each<const N: usize>(module: &Module, names: [&'static str; N]) -> Result<[Kernel; N]> {
            let mut out = [None; N];
            for (slot, name) in out.iter_mut().zip(names) {
                *slot = Some(Kernel::resolve(module, name)?);
            }
            Ok(out.map(|k| k.expect("every slot resolved above")))
        }
        let wgmma = if has_wgmma {
            let names = WGMMA_GEMM_VARIANTS.map(|v| v.name);
            Some((each(module, names)?, Kernel::resolve(module, X_PITCH)?))
        } else {
            None
        };
        Ok(Self {
            decompress: Kernel::resolve(module, "zipserv_decompress")?,
            demo: Kernel::resolve(module, "demo_mma_16x8x16")?,
            gemv: Kernel::resolve(module, GEMV_BF16)?,
            zipgemv: each(module, ZIPGEMV_VARIANTS.map(|v| v.name))?,
            gemm: each(module, GEMM_VARIANTS.map(|v| v.name))?,
            wgmma,
        })
    }
}

/// Lets `function` use `shared_bytes` of dynamic shared memory (above the
/// default 48 KiB limit) and returns how many blocks of `block_threads`
/// fit on one multiprocessor with it.
pub(crate) fn allow_shared_memory(
    function: &cust::function::Function<'_>,
    shared_bytes: usize,
    block_threads: u32,
) -> Result<u32> {
    set_attribute(
        function.to_raw(),
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        shared_bytes as i32,
        "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
    )?;
    function
        .max_active_blocks_per_multiprocessor(
            cust::function::BlockSize::x(block_threads),
            shared_bytes,
        )
        .cuda("cuOccupancyMaxActiveBlocksPerMultiprocessor")
}

/// Why overlapped launches are refused under a driver without
/// `cuLaunchKernelEx`.
pub(crate) const NO_LAUNCH_EX: &str =
    "overlapped launches need cuLaunchKernelEx (a CUDA 11.8 or newer driver)";

/// How a launch relates to the kernel before it on its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchOrder {
    /// Starts when the previous work on the stream has finished.
    AfterPrevious,
    /// May start while the previous kernel still runs (programmatic stream
    /// serialization, CUDA 11.8+ on Hopper): its blocks take the
    /// multiprocessors the previous kernel frees, do what needs none of its
    /// results (a ZipGEMM fetches its first weight tiles) and wait for it
    /// with `griddepcontrol.wait` before touching anything it may read or
    /// write. Only for kernels of the `sm_90a` image, which all wait so
    /// (`ptx::start_after_prior_grids`); [`crate::Gpu::launch_order`] says
    /// which order a device's launches take.
    Overlapped,
}

/// Launches `kernel` on `stream` with `args` (pointers to each argument,
/// in order; see [`launch_kernel!`]), `grid` blocks of `block` threads.
///
/// # Safety
/// `stream` is a live stream of the kernel's context; `args` match the
/// kernel's parameters in number, order and type, and everything they
/// point to in device memory stays valid until the launch completes;
/// [`LaunchOrder::Overlapped`] only for a kernel that waits for the prior
/// grid before touching memory the prior kernel uses.
pub unsafe fn launch_raw(
    kernel: Kernel,
    grid: GridSize,
    block: u32,
    shared_bytes: u32,
    stream: CUstream,
    order: LaunchOrder,
    args: &[*mut c_void],
) -> Result<()> {
    let params = args.as_ptr() as *mut *mut c_void;
    let status = match order {
        // SAFETY: the caller's promises; the driver copies the argument
        // values before it returns.
        LaunchOrder::AfterPrevious => unsafe {
            cust::sys::cuLaunchKernel(
                kernel.raw(),
                grid.x,
                grid.y,
                grid.z,
                block,
                1,
                1,
                shared_bytes,
                stream,
                params,
                std::ptr::null_mut(),
            )
        },
        LaunchOrder::Overlapped => {
            let Some(launch_ex) = crate::driver::launch_kernel_ex() else {
                return Err(Error::Unsupported(NO_LAUNCH_EX.into()));
            };
            let mut attribute = LaunchAttribute {
                id: PROGRAMMATIC_STREAM_SERIALIZATION,
                pad: [0; 4],
                value: [0; 8],
            };
            attribute.value[0] = 1; // programmaticStreamSerializationAllowed
            let config = LaunchConfig {
                grid: [grid.x, grid.y, grid.z],
                block: [block, 1, 1],
                shared_mem_bytes: shared_bytes,
                stream,
                attrs: &mut attribute,
                num_attrs: 1,
            };
            // SAFETY: as above; `config` and its attribute outlive the call.
            unsafe { launch_ex(&config, kernel.raw(), params, std::ptr::null_mut()) }
        }
    };
    match status {
        cudaError_enum::CUDA_SUCCESS => Ok(()),
        other => Err(Error::Launch {
            kernel: kernel.name,
            code: other as i32,
        }),
    }
}

/// `launch_kernel!(kernel, grid, block, shared_bytes, stream, order, (args...))`:
/// [`launch_raw`] with each argument passed by address, every argument
/// checked to be `DeviceCopy` (plain data a kernel may receive by value).
/// Must be used inside `unsafe` with the safety of [`launch_raw`].
#[macro_export]
macro_rules! launch_kernel {
    ($kernel:expr, $grid:expr, $block:expr, $shared:expr, $stream:expr, $order:expr, ($($arg:expr),* $(,)?)) => {{
        #[allow(dead_code)]
        fn device_copy<T: ::cust::memory::DeviceCopy>(_: &T) {}
        if false {
            $(device_copy(&$arg);)*
        }
        $crate::launch::launch_raw(
            $kernel,
            ::cust::function::GridSize::from($grid),
            $block,
            $shared,
            $stream,
            $order,
            &[$(&$arg as *const _ as *mut ::std::ffi::c_void),*],
        )
    }};
}
pub use crate::launch_kernel;
