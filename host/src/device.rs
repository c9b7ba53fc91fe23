//! One device: its primary context, the embedded kernel module and a stream.

use cust::CudaFlags;
use cust::context::Context;
use cust::device::{Device, DeviceAttribute};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};

use crate::error::{CudaContext, Error, Result};
use crate::kernels::SplitK;

/// PTX for every kernel in `kernels-gpu`, built by `build.rs`.
pub const PTX: &str = include_str!(env!("ZIPSERV_PTX_FILE"));
/// The `sm_XX` the embedded PTX was generated for.
pub const PTX_ARCH: &str = env!("ZIPSERV_PTX_ARCH");
/// The short commit hash this crate was built from (`"unknown"` outside a
/// git checkout), for benchmark records.
pub const BUILD_COMMIT: &str = env!("ZIPSERV_BUILD_COMMIT");

/// What the user (and benchmark records) need to know about the card.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub multiprocessors: u32,
    pub l2_bytes: usize,
    pub total_memory: usize,
    /// CUDA version the driver supports, e.g. (13, 0).
    pub cuda_driver_version: (i32, i32),
}

/// An initialised device: its (primary) context, the loaded kernels and a
/// stream. The context is the device's primary context, so cuBLAS calls made
/// through the runtime API in the same process share it.
pub struct Gpu {
    // Field order is drop order: the module and stream must go before the
    // context that owns them.
    module: Module,
    stream: Stream,
    info: DeviceInfo,
    /// Resident blocks per multiprocessor of each ZipGEMM variant.
    gemm_blocks_per_sm: [u32; 3],
    _context: Context,
}

impl Gpu {
    /// Opens device `ordinal`. Fails with [`Error::NoDriver`] when there is no
    /// driver library and [`Error::NoDevice`] when the driver has no such
    /// device ([`Error::is_no_gpu`] covers both), so callers can tell "no GPU
    /// here" apart from a real CUDA failure.
    pub fn new(ordinal: u32) -> Result<Self> {
        crate::driver::load()?;
        cust::init(CudaFlags::empty()).map_err(|e| Error::NoDevice {
            reason: format!("cuInit failed: {e}"),
        })?;
        let count = Device::num_devices().cuda("cuDeviceGetCount")?;
        if ordinal >= count {
            return Err(Error::NoDevice {
                reason: format!("device {ordinal} requested, {count} present"),
            });
        }
        let device = Device::get_device(ordinal).cuda("cuDeviceGet")?;
        let context = Context::new(device).cuda("cuDevicePrimaryCtxRetain")?;
        let info = device_info(device)?;
        let module = Module::from_ptx(PTX, &[]).cuda("cuModuleLoadData")?;
        let gemm_blocks_per_sm = crate::kernels::prepare_gemm(&module)?;
        let stream = Stream::new(StreamFlags::NON_BLOCKING, None).cuda("cuStreamCreate")?;
        Ok(Self {
            module,
            stream,
            info,
            gemm_blocks_per_sm,
            _context: context,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Blocks of ZipGEMM variant `index` that run at once on the whole GPU.
    pub(crate) fn gemm_blocks_per_wave(&self, index: usize) -> usize {
        self.gemm_blocks_per_sm[index] as usize * self.info.multiprocessors as usize
    }

    /// The K split ZipGEMM would use for an `m × k` matrix and `n`
    /// activation rows (`requested`: an explicit number of slices).
    pub fn gemm_split(&self, m: usize, k: usize, n: usize, requested: Option<u32>) -> SplitK {
        let variant = crate::kernels::GemmVariant::for_n(n);
        SplitK::choose(
            m,
            k,
            n.div_ceil(8 * variant.nt),
            self.gemm_blocks_per_wave(variant.index),
            requested,
        )
    }

    /// Waits for all work on the stream and surfaces any asynchronous error.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().cuda("cuStreamSynchronize")
    }
}

fn device_info(device: Device) -> Result<DeviceInfo> {
    let attr = |a| device.get_attribute(a).cuda("cuDeviceGetAttribute");
    let version = cust::CudaApiVersion::get().cuda("cuDriverGetVersion")?;
    Ok(DeviceInfo {
        name: device.name().cuda("cuDeviceGetName")?,
        compute_capability: (
            attr(DeviceAttribute::ComputeCapabilityMajor)?,
            attr(DeviceAttribute::ComputeCapabilityMinor)?,
        ),
        multiprocessors: attr(DeviceAttribute::MultiprocessorCount)? as u32,
        l2_bytes: attr(DeviceAttribute::L2CacheSize)? as usize,
        total_memory: device.total_memory().cuda("cuDeviceTotalMem")?,
        cuda_driver_version: (version.major(), version.minor()),
    })
}
