//! One device: its primary context, the embedded kernel module that fits
//! it, and a stream.

use cust::CudaFlags;
use cust::context::Context;
use cust::device::{Device, DeviceAttribute};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use zipserv_kernels::catalog::{self, PtxImage};
use zipserv_kernels::launch::ZIPGEMV_VARIANTS;
use zipserv_kernels::sm90::WGMMA_GEMM_VARIANTS;

use crate::error::{CudaContext, Error, Result};
use crate::gemv::{BF16_PATH_ENV, Bf16Path};
use crate::kernels::{Fetch, GemmPath, SplitK};
use crate::launch::{Kernel, Kernels, LaunchOrder, NO_LAUNCH_EX};
use crate::zipgemm_sm90::WgmmaBlocks;

/// One embedded PTX image: its catalog entry and its text (`build.rs`
/// builds every image of `catalog::IMAGES`).
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedPtx {
    pub image: &'static PtxImage,
    pub ptx: &'static str,
}

/// Every embedded image, in the order [`Gpu::new`] tries them: the first
/// whose compute capability matches and whose module the driver loads.
pub const PTX_IMAGES: [EmbeddedPtx; 2] = [
    EmbeddedPtx {
        image: &catalog::SM90A,
        ptx: include_str!(env!("ZIPSERV_PTX_SM_90A")),
    },
    EmbeddedPtx {
        image: &catalog::SM80,
        ptx: include_str!(env!("ZIPSERV_PTX_SM_80")),
    },
];
const _: () = assert!(PTX_IMAGES.len() == catalog::IMAGES.len());

/// The portable image (`sm_80`, every kernel but the Hopper-only ones): what
/// runs on any supported card. [`Gpu::ptx_image`] says which one a device
/// actually loaded.
pub const PTX: &str = PTX_IMAGES[1].ptx;
/// The `sm_XX` of [`PTX`].
pub const PTX_ARCH: &str = catalog::SM80.arch;

/// Environment variable that sets [`Gpu::gemm_path`] at [`Gpu::new`]:
/// `auto` (default), `mma` (the `mma.sync` kernel) or `wgmma` (the Hopper
/// kernel). It lets benchmarks and tests force a path without code changes.
pub const GEMM_PATH_ENV: &str = "ZIPSERV_GEMM_PATH";
/// Environment variable that sets [`Gpu::gemm_fetch`] at [`Gpu::new`]:
/// `auto` (default), `early` or `late`; for benchmarks comparing the two
/// `mma.sync` variants of one width without code changes.
pub const GEMM_FETCH_ENV: &str = "ZIPSERV_GEMM_FETCH";
/// Environment variable that sets [`Gpu::wgmma_blocks`] at [`Gpu::new`]:
/// `auto` (default), `1` or `2` blocks per multiprocessor; for benchmarks
/// comparing the Hopper ZipGEMM's residencies without code changes.
pub const WGMMA_BLOCKS_ENV: &str = "ZIPSERV_WGMMA_BLOCKS";
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
    /// The image `module` was loaded from.
    image: &'static EmbeddedPtx,
    /// Its kernels' handles, resolved once.
    kernels: Kernels,
    /// Resident blocks per multiprocessor of each `mma.sync` ZipGEMM variant.
    gemm_blocks_per_sm: [u32; zipserv_kernels::launch::GEMM_VARIANTS.len()],
    /// Resident blocks per multiprocessor of the decompression kernel.
    decompress_blocks_per_sm: u32,
    /// The same for the BF16 GEMV.
    gemv_blocks_per_sm: u32,
    /// The same for the compressed GEMV.
    zipgemv_blocks_per_sm: [u32; ZIPGEMV_VARIANTS.len()],
    /// The same for the Hopper variants (0 where the image lacks them).
    wgmma_blocks_per_sm: [u32; WGMMA_GEMM_VARIANTS.len()],
    gemm_path: GemmPath,
    bf16_path: Bf16Path,
    gemm_fetch: Fetch,
    wgmma_blocks: WgmmaBlocks,
    /// How zipserv's kernels are launched (see [`Gpu::set_launch_overlap`]).
    launch_order: LaunchOrder,
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
        let (image, module) = load_module(info.compute_capability)?;
        let gemm_blocks_per_sm = crate::kernels::prepare_gemm(&module)?;
        let decompress_blocks_per_sm = crate::kernels::prepare_decompress(&module)?;
        let gemv_blocks_per_sm = crate::kernels::resident_blocks(
            &module,
            zipserv_kernels::catalog::GEMV_BF16,
            32 * zipserv_kernels::launch::GEMV_WARPS,
        )?;
        let zipgemv_blocks_per_sm = crate::zipgemv::prepare(&module)?;
        let wgmma_blocks_per_sm = if image.image.has_wgmma() {
            crate::zipgemm_sm90::prepare(&module)?
        } else {
            [0; WGMMA_GEMM_VARIANTS.len()]
        };
        let kernels = Kernels::resolve(&module, image.image.has_wgmma())?;
        let stream = Stream::new(StreamFlags::NON_BLOCKING, None).cuda("cuStreamCreate")?;
        let gemm_path = choice_from_env(GEMM_PATH_ENV)?;
        let bf16_path = choice_from_env(BF16_PATH_ENV)?;
        let gemm_fetch = choice_from_env(GEMM_FETCH_ENV)?;
        let wgmma_blocks = choice_from_env(WGMMA_BLOCKS_ENV)?;
        Ok(Self {
            module,
            stream,
            info,
            image,
            kernels,
            gemm_blocks_per_sm,
            decompress_blocks_per_sm,
            gemv_blocks_per_sm,
            zipgemv_blocks_per_sm,
            wgmma_blocks_per_sm,
            gemm_path,
            bf16_path,
            gemm_fetch,
            wgmma_blocks,
            launch_order: LaunchOrder::AfterPrevious,
            _context: context,
        })
    }

    /// The PTX image this device runs (`sm_90a` on Hopper unless its driver
    /// refused it, else `sm_80`).
    pub fn ptx_image(&self) -> &'static EmbeddedPtx {
        self.image
    }

    /// Whether the Hopper ZipGEMM (`wgmma`) can run here.
    pub fn has_wgmma(&self) -> bool {
        self.image.image.has_wgmma()
    }

    /// The ZipGEMM path [`crate::zipgemm`] takes ([`GEMM_PATH_ENV`] at
    /// start, else [`GemmPath::Auto`]).
    pub fn gemm_path(&self) -> GemmPath {
        self.gemm_path
    }

    /// Sets the path [`crate::zipgemm`] takes from now on.
    pub fn set_gemm_path(&mut self, path: GemmPath) {
        self.gemm_path = path;
    }

    /// The kernel for BF16 weights of callers that leave it to the library
    /// ([`BF16_PATH_ENV`] at start, else [`Bf16Path::Auto`]).
    pub fn bf16_path(&self) -> Bf16Path {
        self.bf16_path
    }

    /// Sets [`Gpu::bf16_path`] from now on.
    pub fn set_bf16_path(&mut self, path: Bf16Path) {
        self.bf16_path = path;
    }

    /// How zipserv launches its kernels on this device:
    /// [`LaunchOrder::AfterPrevious`] unless [`Gpu::set_launch_overlap`]
    /// turned overlap on.
    pub fn launch_order(&self) -> LaunchOrder {
        self.launch_order
    }

    /// Lets each of zipserv's kernels start while the kernel before it on
    /// the stream still runs ([`LaunchOrder::Overlapped`]): a chain of
    /// dependent kernels (a decode step) then spends less time filling and
    /// draining the GPU between kernels. Every kernel of the `sm_90a` image
    /// waits for its predecessor before touching memory, so results are
    /// unchanged. Refused on an image without those waits (the `sm_80`
    /// image, on any card) and under a driver without `cuLaunchKernelEx`;
    /// turning it off always succeeds. Kernels of other libraries (cuBLAS)
    /// are unaffected: a kernel launched after one of them starts when it
    /// ends.
    pub fn set_launch_overlap(&mut self, on: bool) -> Result<()> {
        if !on {
            self.launch_order = LaunchOrder::AfterPrevious;
            return Ok(());
        }
        if !self.image.image.has_wgmma() {
            return Err(Error::Unsupported(format!(
                "overlapped launches need the sm_90a kernel image (Hopper); this device runs \
                 the {} image",
                self.image.image.arch
            )));
        }
        if crate::driver::launch_kernel_ex().is_none() {
            return Err(Error::Unsupported(NO_LAUNCH_EX.into()));
        }
        self.launch_order = LaunchOrder::Overlapped;
        Ok(())
    }

    /// The kernel `name` of the loaded image, for launches with
    /// [`crate::launch_kernel!`] (callers such as the engine that bring
    /// kernels of their own into the image).
    pub fn kernel(&self, name: &'static str) -> Result<Kernel> {
        Kernel::resolve(&self.module, name)
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    /// The handles of every kernel of the loaded image.
    pub(crate) fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Blocks of ZipGEMM variant `index` that run at once on the whole GPU.
    pub(crate) fn gemm_blocks_per_wave(&self, index: usize) -> usize {
        self.gemm_blocks_per_sm[index] as usize * self.info.multiprocessors as usize
    }

    /// Blocks of the BF16 GEMV that fit on the GPU at once.
    pub(crate) fn gemv_blocks_per_wave(&self) -> usize {
        self.gemv_blocks_per_sm as usize * self.info.multiprocessors as usize
    }

    /// Blocks of each compressed GEMV variant that fit on the GPU at once.
    pub(crate) fn zipgemv_waves(&self) -> [usize; ZIPGEMV_VARIANTS.len()] {
        std::array::from_fn(|i| self.zipgemv_blocks_per_wave(i))
    }

    /// Blocks of compressed GEMV variant `index` that fit on the GPU at
    /// once.
    pub(crate) fn zipgemv_blocks_per_wave(&self, index: usize) -> usize {
        self.zipgemv_blocks_per_sm[index] as usize * self.info.multiprocessors as usize
    }

    /// Blocks of the decompression kernel that run at once on the whole GPU.
    pub(crate) fn decompress_blocks_per_wave(&self) -> usize {
        self.decompress_blocks_per_sm as usize * self.info.multiprocessors as usize
    }

    /// Resident blocks per multiprocessor of each Hopper ZipGEMM variant
    /// (all 0 without the Hopper image).
    pub(crate) fn wgmma_blocks_per_sm(&self) -> &[u32; WGMMA_GEMM_VARIANTS.len()] {
        &self.wgmma_blocks_per_sm
    }

    /// The same for Hopper ZipGEMM variant `index`.
    pub(crate) fn wgmma_blocks_per_wave(&self, index: usize) -> usize {
        self.wgmma_blocks_per_sm[index] as usize * self.info.multiprocessors as usize
    }

    /// The K split ZipGEMM would use for an `m × k` matrix and `n`
    /// activation rows (`requested`: an explicit number of slices), in the
    /// kernel [`Gpu::gemm_path`] takes for them. (Until 2026-12-03 the
    /// `mma.sync` kernel's split was reported for every N, so benchmark
    /// records' `split_k` of rows run by the Hopper kernel are that one's.)
    pub fn gemm_split(&self, m: usize, k: usize, n: usize, requested: Option<u32>) -> SplitK {
        match self.gemm_path().resolve(self, m, k, n) {
            GemmPath::Wgmma => self.wgmma_split(m, k, n, requested),
            GemmPath::Gemv if requested.is_none() => crate::zipgemv::split(self, m, k, n),
            _ => crate::kernels::GemmVariant::choose(self, m, k, n, requested).1,
        }
    }

    /// When the `mma.sync` ZipGEMM fetches each warp's next tile
    /// ([`GEMM_FETCH_ENV`] at start, else [`Fetch::Auto`]).
    pub fn gemm_fetch(&self) -> Fetch {
        self.gemm_fetch
    }

    /// Sets [`Gpu::gemm_fetch`] from now on.
    pub fn set_gemm_fetch(&mut self, fetch: Fetch) {
        self.gemm_fetch = fetch;
    }

    /// How many blocks per multiprocessor the Hopper ZipGEMM variants are
    /// chosen for ([`WGMMA_BLOCKS_ENV`] at start, else
    /// [`WgmmaBlocks::Auto`]).
    pub fn wgmma_blocks(&self) -> WgmmaBlocks {
        self.wgmma_blocks
    }

    /// Sets [`Gpu::wgmma_blocks`] from now on.
    pub fn set_wgmma_blocks(&mut self, blocks: WgmmaBlocks) {
        self.wgmma_blocks = blocks;
    }

    /// Waits for all work on the stream and surfaces any asynchronous error.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().cuda("cuStreamSynchronize")
    }
}

/// The value of environment variable `name` parsed, or the default when it
/// is unset; a value that does not parse is an error.
fn choice_from_env<T>(name: &str) -> Result<T>
where
    T: std::str::FromStr<Err = Error> + Default,
{
    match std::env::var(name) {
        Ok(v) => v.parse(),
        Err(_) => Ok(T::default()),
    }
}

/// Loads the first embedded image that runs on compute capability `cc`.
/// An image the driver refuses (an `sm_90a` image under a driver too old
/// for its PTX version) falls back to the next one; only when none loads is
/// that an error.
fn load_module(cc: (i32, i32)) -> Result<(&'static EmbeddedPtx, Module)> {
    let cc = (cc.0.max(0) as u32, cc.1.max(0) as u32);
    let mut refused = None;
    for image in PTX_IMAGES.iter().filter(|i| i.image.runs_on(cc)) {
        match Module::from_ptx(image.ptx, &[]) {
            Ok(module) => return Ok((image, module)),
            Err(e) => refused = Some(e),
        }
    }
    match refused {
        Some(e) => Err(e).cuda("cuModuleLoadData"),
        None => Err(Error::Unsupported(format!(
            "compute capability {}.{}: zipserv's kernels need 8.0 or newer",
            cc.0, cc.1
        ))),
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
