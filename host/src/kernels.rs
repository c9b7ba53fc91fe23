//! Launches of the compressed-matrix kernels, with every shape and size
//! checked before anything reaches the GPU.

use cust::memory::{DeviceBuffer, DevicePointer, DeviceSlice};
use cust::module::Module;
use cust::stream::Stream;
use cust::sys::{CUdeviceptr, CUstream};
use half::bf16;
use zipserv_kernels::format::{TILE_COLS, TILE_ROWS, tiles_for};
use zipserv_kernels::launch::{
    DECOMPRESS_WARPS, GEMM_VARIANTS, GEMM_WARPS, MmaGemmVariant, STORE_BF16, STORE_F32,
    STORE_LATE_FIRST_COUNT, WorkSplit, ZIPGEMV_VARIANTS, gemm_smem_bytes,
};
use zipserv_kernels::sm90::UNIT_ROWS;

use crate::device::Gpu;
use crate::error::{CudaContext, Error, Result, Shape};
use crate::launch::{LaunchOrder, allow_shared_memory, launch_kernel};
use crate::weights::DeviceWeights;
use zipserv_kernels::zipgemv::zipgemv_unsupported;

/// Where ZipGEMM writes `Y` (N × M, row-major).
pub enum GemmOutput<'a> {
    Bf16(&'a mut DeviceSlice<bf16>),
    F32(&'a mut DeviceSlice<f32>),
}

impl GemmOutput<'_> {
    /// The output's device pointer, element type and length in elements,
    /// for the `_raw` launchers.
    pub(crate) fn raw(self) -> (CUdeviceptr, OutputType, usize) {
        match self {
            GemmOutput::Bf16(y) => (y.as_device_ptr().as_raw(), OutputType::Bf16, y.len()),
            GemmOutput::F32(y) => (y.as_device_ptr().as_raw(), OutputType::F32, y.len()),
        }
    }
}

/// Fewest 128-column tiles per block share when the split is automatic (on
/// an H200, 4096×4096 ran 10% slower with 11 K slices of 3 tiles than with 8
/// of 4).
pub const MIN_TILES_PER_SLICE: usize = 4;

/// Share of a wave that whole K slices per output tile must fill before
/// stream-K shares are used instead. Measured on an H200: 28672×4096 at
/// N ≤ 32 (448 output tiles on 528 slots, 85%) ran 2–6% faster with
/// stream-K; 4096×14336 (64 tiles × 8 or 16 slices, 97%) 6–7% slower, as
/// blocks whose share crosses an output tile restart their load pipeline
/// there; 6144×4096 at N = 32 (5 slices, 91%) was even.
pub const MIN_WAVE_FILL: f64 = 0.9;

/// Which ZipGEMM kernel a launch uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmPath {
    /// The library's choice: [`GemmPath::Gemv`] where [`gemv_auto`] says
    /// (up to [`ZIPGEMV_AUTO_MAX_N`] activation rows where one wave of its
    /// blocks holds every row tile, without launch overlap, X on a 16-byte
    /// boundary), [`GemmPath::Wgmma`] where the device runs it and N
    /// reaches [`WGMMA_MIN_N`], else [`GemmPath::MmaSync`].
    #[default]
    Auto,
    /// The `mma.sync` kernels (`zipserv_gemm_n8/n8_early/n16/n32`), any sm_80+ card.
    MmaSync,
    /// The Hopper kernel (`zipserv_gemm_sm90_*`, `wgmma`), compute
    /// capability 9.0 with the sm_90a image only.
    Wgmma,
    /// The compressed GEMV (`zipserv_zipgemv`, `zipserv_zipgemv_n16`), any
    /// sm_80+ card, for at most
    /// [`ZIPGEMV_MAX_N`](zipserv_kernels::launch::ZIPGEMV_MAX_N) activation
    /// rows ([`zipgemv_unsupported`] says which shapes).
    Gemv,
}

/// Most activation rows for which [`GemmPath::Auto`] takes the compressed
/// GEMV.
pub const ZIPGEMV_AUTO_MAX_N: usize = zipserv_kernels::launch::ZIPGEMV_MAX_N;

/// Smallest N for which [`GemmPath::Auto`] takes the Hopper kernel, if
/// any. Measured on an H200 (docs/PERFORMANCE.md, "Hopper ZipGEMM"), the
/// Llama-3-8B shapes: the `mma.sync` kernel is faster up to N = 16 (e.g.
/// 4096×4096 13.2 µs against the two-block Hopper n16/n32 variants' 15.1,
/// 28672×4096 56.6 against 59.1), the two-block Hopper n32 variant at
/// N = 32 on all four (16.7 / 21.3 / 62.5 / 35.8 µs against 17.0 / 22.2 /
/// 67.0 / 38.2); between, each kernel's time is its N = 32 time (both run
/// their 32-wide variant).
pub const WGMMA_MIN_N: Option<usize> = Some(17);

/// Below [`WGMMA_MIN_N`], from this N the Hopper kernel (its two-block n16
/// variant) is taken for products of at least
/// [`WGMMA_N16_MIN_PAIRS_PER_SLOT`] (unit, column tile) pairs per slot of a
/// two-block wave. Measured on an H200 at commit e1dd47a
/// (`mma.sync` / Hopper µs, N = 12 and 16): 4096×4096 (3.9 pairs per slot)
/// 12.7 / 13.6 and 13.0 / 13.7; 6144×4096 (5.8) 17.0 / 16.9 and 17.2 /
/// 17.1; 4096×14336 (13.6) 29.5 / 29.4 and 29.8 / 29.6; 28672×4096 (27)
/// 52.7 / 50.7 and 53.3 / 50.8. At N ≤ 8 the `mma.sync` kernel's n8
/// variant won on all four (28672×4096: 44.7 / 50.7).
pub const WGMMA_MIN_N_LARGE: usize = 9;
/// See [`WGMMA_MIN_N_LARGE`].
pub const WGMMA_N16_MIN_PAIRS_PER_SLOT: usize = 5;

/// Whether [`GemmPath::Auto`] takes the Hopper kernel for `n` activation
/// rows and an `m × k` matrix on a Hopper card of `multiprocessors`
/// multiprocessors.
pub fn wgmma_auto(n: usize, m: usize, k: usize, multiprocessors: usize) -> bool {
    if WGMMA_MIN_N.is_some_and(|min| n >= min) {
        return true;
    }
    let pairs = m.div_ceil(UNIT_ROWS as usize) * k.div_ceil(TILE_COLS);
    n >= WGMMA_MIN_N_LARGE && pairs >= WGMMA_N16_MIN_PAIRS_PER_SLOT * 2 * multiprocessors
}

impl GemmPath {
    /// The path a launch of `n` activation rows against an `m × k` matrix
    /// takes on `gpu`.
    pub fn resolve(self, gpu: &Gpu, m: usize, k: usize, n: usize) -> GemmPath {
        match self {
            GemmPath::Auto if gemv_auto(m, k, n, gpu.launch_order(), &gpu.zipgemv_waves()) => {
                GemmPath::Gemv
            }
            GemmPath::Auto
                if gpu.has_wgmma() && wgmma_auto(n, m, k, gpu.info().multiprocessors as usize) =>
            {
                GemmPath::Wgmma
            }
            GemmPath::Auto => GemmPath::MmaSync,
            p => p,
        }
    }
}

/// Whether [`GemmPath::Auto`] takes the compressed GEMV for `n`
/// activation rows and an `m × k` matrix (given X on a 16-byte boundary)
/// when the device launches in `order` and `waves[i]` blocks of GEMV
/// variant `i` (`launch::ZIPGEMV_VARIANTS`) fit on it at once.
///
/// The rule: launched one after another, and one wave of the variant's
/// blocks holds every row tile, so that no block takes a second row. Where
/// blocks take several rows in turn, the `mma.sync` kernel's even shares
/// win. Measured on an H200 (docs/PERFORMANCE.md, "A compressed GEMV" and
/// "Up to 16 rows"), alone, GEMV against the library's kernel before:
/// - n ≤ 8 (3 blocks per SM, 396 slots): 4096×4096 9.40 / 9.84 µs at N = 1
///   / 8 against 11.24 / 11.35, 6144×4096 (384 row tiles) 11.86 / 13.11
///   against 13.93 / 14.38, 4096×14336 24.68 / 25.91 against 25.20 /
///   25.69; 28672×4096 (1792 row tiles) 46.1 / 51.4 against 43.9 / 44.9;
/// - 9 ≤ n ≤ 16 (2 blocks per SM, 264 slots): 4096×4096 9.88 / 11.17 µs at
///   N = 9 / 16 against 12.41 / 12.93, 4096×14336 26.47 / 29.05 against
///   28.70 / 28.75; 6144×4096 (384 row tiles) 16.83 / 19.09 against 16.71
///   / 16.93.
///
/// With launch overlap, in the engine's decode step, the GEMV on the small
/// shapes gained nothing at batch 1 (3.654 against 3.661 ms a step) and
/// lost 1.6% at batch 8 (3.978 against 3.917): what it saves is the
/// `mma.sync` kernel's fixed cost per product, which overlap already
/// hides. So it is taken for products launched one after another only.
pub fn gemv_auto(
    m: usize,
    k: usize,
    n: usize,
    order: LaunchOrder,
    waves: &[usize; ZIPGEMV_VARIANTS.len()],
) -> bool {
    order == LaunchOrder::AfterPrevious
        && n <= ZIPGEMV_AUTO_MAX_N
        && zipgemv_unsupported(m, k, n).is_none()
        && tiles_for(m, TILE_ROWS) <= waves[crate::zipgemv::zipgemv_variant(n)]
}

impl std::str::FromStr for GemmPath {
    type Err = Error;

    /// `auto`, `mma`, `wgmma` or `gemv` (the values of `ZIPSERV_GEMM_PATH`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(GemmPath::Auto),
            "mma" => Ok(GemmPath::MmaSync),
            "wgmma" => Ok(GemmPath::Wgmma),
            "gemv" => Ok(GemmPath::Gemv),
            other => Err(Error::Unsupported(format!(
                "ZipGEMM path {other:?}: expected auto, mma, wgmma or gemv"
            ))),
        }
    }
}

/// Scratch memory of ZipGEMM launches: f32 partial sums and arrival
/// counters for shares that cut output tiles, and for the Hopper kernel
/// the blocks' tensor-map slots and, when the activations' rows are not
/// 16-byte aligned, a copy of them with a padded pitch. Keep one per stream
/// and reuse it: it grows on demand and is never shrunk.
#[derive(Default)]
pub struct GemmWorkspace {
    partial: Option<DeviceBuffer<f32>>,
    counters: Option<DeviceBuffer<u32>>,
    pub(crate) map_slots: Option<DeviceBuffer<u64>>,
    pub(crate) x_pitched: Option<DeviceBuffer<bf16>>,
}

/// How a ZipGEMM launch deals out its work ([`WorkSplit`]): the row groups
/// ("units", [`GEMM_WARPS`] row tiles) and their 128-column tiles, cut into
/// `work.blocks` equal shares; each share runs once per chunk of activation
/// rows, so the grid has `work.blocks × chunks` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitK {
    pub work: WorkSplit,
    pub chunks: u32,
}

impl SplitK {
    /// `requested` K slices per output tile (clamped to 1..=column tiles),
    /// or, if `None`, a split that fills one wave of resident blocks
    /// (`blocks_per_wave`, shared by the `n_chunks` chunks):
    /// - whole K slices per row group, as many as fit, each of at least
    ///   [`MIN_TILES_PER_SLICE`] tiles, when there are at most a wave's
    ///   worth of row groups and the slices fill at least
    ///   [`MIN_WAVE_FILL`] of the wave;
    /// - otherwise one share per slot, each of equal size (stream-K), which
    ///   may cut row groups anywhere. That also replaces a second, partial
    ///   wave when row groups outnumber the slots.
    pub fn choose(
        rows: usize,
        cols: usize,
        n_chunks: usize,
        blocks_per_wave: usize,
        requested: Option<u32>,
    ) -> Self {
        Self::choose_for_unit(
            GEMM_WARPS as usize,
            rows,
            cols,
            n_chunks,
            blocks_per_wave,
            requested,
        )
    }

    /// [`SplitK::choose`] for units of `unit_row_tiles` row tiles (the
    /// `mma.sync` kernel's are [`GEMM_WARPS`], the Hopper kernel's
    /// `sm90::UNIT_ROW_TILES`).
    pub fn choose_for_unit(
        unit_row_tiles: usize,
        rows: usize,
        cols: usize,
        n_chunks: usize,
        blocks_per_wave: usize,
        requested: Option<u32>,
    ) -> Self {
        let units = tiles_for(rows, TILE_ROWS).div_ceil(unit_row_tiles);
        let chunks = n_chunks.max(1);
        let col_tiles = tiles_for(cols, TILE_COLS);
        let pairs = units * col_tiles;
        let wave = (blocks_per_wave / chunks).max(1);
        let most_slices = col_tiles.div_ceil(MIN_TILES_PER_SLICE).max(1);
        let shares = match requested {
            Some(s) => units * (s as usize).clamp(1, col_tiles),
            None => {
                let aligned = units * (wave / units).clamp(1, most_slices);
                let filled = aligned as f64 >= MIN_WAVE_FILL * wave as f64;
                if units <= wave && filled {
                    aligned
                } else {
                    wave.min(pairs.div_ceil(MIN_TILES_PER_SLICE))
                }
            }
        };
        let max_shares = WorkSplit::MAX_BLOCKS as usize / chunks;
        Self {
            work: WorkSplit {
                units: units as u32,
                col_tiles: col_tiles as u32,
                blocks: shares.clamp(1, pairs.min(max_shares.max(1))) as u32,
            },
            chunks: chunks as u32,
        }
    }

    /// Blocks of the launch.
    pub fn grid(&self) -> u32 {
        self.work.blocks * self.chunks
    }

    /// The most shares one row group is cut into (1: no partial sums).
    pub fn slices(&self) -> u32 {
        let w = &self.work;
        let (pairs, blocks) = (u64::from(w.pairs()), u64::from(w.blocks));
        // The block covering pair q: ⌈(q + 1) · blocks / pairs⌉ − 1.
        let cover = |q: u64| ((q + 1) * blocks).div_ceil(pairs) - 1;
        (0..u64::from(w.units))
            .map(|u| {
                let c = u64::from(w.col_tiles);
                (cover((u + 1) * c - 1) - cover(u * c) + 1) as u32
            })
            .max()
            .unwrap_or(1)
    }

    /// Whether some share may cover only part of an output tile (exact
    /// unless an uneven split happens to land on unit boundaries, which
    /// only costs an unused workspace).
    pub(crate) fn cuts_units(&self) -> bool {
        !self.work.units.is_multiple_of(self.work.blocks)
    }
}

pub(crate) fn check_len(what: &'static str, have: usize, rows: usize, cols: usize) -> Result<()> {
    if have < rows * cols {
        return Err(Error::ShapeMismatch {
            what,
            expected: Shape(vec![rows, cols]),
            got: Shape(vec![have]),
        });
    }
    Ok(())
}

/// Writes the decompressed matrix (rows × cols BF16, row-major) to `out`,
/// bit-identical to the original, asynchronously on `stream`.
pub fn decompress(
    gpu: &Gpu,
    stream: &Stream,
    w: &DeviceWeights,
    out: &mut DeviceSlice<bf16>,
) -> Result<()> {
    check_len("decompress output", out.len(), w.rows(), w.cols())?;
    // SAFETY: `stream` is a live stream of the device's context; `out` holds
    // rows × cols elements (checked above) and is borrowed for the call.
    unsafe { decompress_raw(gpu, stream.as_inner(), w, out.as_device_ptr().as_raw()) }
}

/// [`decompress`] into a caller's buffer on a caller's stream.
///
/// # Safety
/// `stream` is a live stream of `gpu`'s device primary context (the one
/// cuBLAS, PyTorch and cudarc use by default), or null for its default
/// stream. `out` points to `w.rows() × w.cols()` writable BF16 elements of
/// device memory in that context, which stay valid, and are neither read
/// nor written by other work, until the launch completes.
pub unsafe fn decompress_raw(
    gpu: &Gpu,
    stream: CUstream,
    w: &DeviceWeights,
    out: CUdeviceptr,
) -> Result<()> {
    let col_tiles = tiles_for(w.cols(), TILE_COLS);
    let tile_count = tiles_for(w.rows(), TILE_ROWS) * col_tiles;
    // One wave of resident blocks, each striding over the tiles: a grid
    // larger than the wave (it was 16 blocks per SM against the 12 that
    // fit) leaves its last blocks running alone after the rest are done.
    let blocks = tile_count
        .div_ceil(DECOMPRESS_WARPS as usize)
        .min(gpu.decompress_blocks_per_wave()) as u32;
    let out_ptr = DevicePointer::<bf16>::from_raw(out);
    let vector_stores = u32::from(w.cols().is_multiple_of(8) && out.is_multiple_of(16));
    // SAFETY: the matrix was validated before upload; `out` holds rows ×
    // cols elements (the caller's promise); block size matches
    // DECOMPRESS_WARPS.
    unsafe {
        launch_kernel!(
            gpu.kernels().decompress,
            blocks,
            32 * DECOMPRESS_WARPS,
            0,
            stream,
            gpu.launch_order(),
            (
                w.tiles.as_device_ptr(),
                w.exception_starts.as_device_ptr(),
                w.exceptions.as_device_ptr(),
                w.far_starts.as_device_ptr(),
                w.far_exponents.as_device_ptr(),
                w.exception_table.as_device_ptr(),
                u32::from(w.base),
                w.rows() as u32,
                w.cols() as u32,
                col_tiles as u32,
                tile_count as u32,
                out_ptr,
                vector_stores
            )
        )
    }
}

/// `Y[n×M] = X[n×K] · Wᵀ` with `W` compressed (M × K), `X` BF16 row-major,
/// FP32 accumulation; asynchronous on `stream`. `split_k` overrides the
/// automatic choice of K slices. `workspace` holds the split-K partial sums;
/// use one workspace per stream (launches sharing one must not overlap).
/// The kernel is the one [`Gpu::gemm_path`] picks (see [`GemmPath`]).
#[allow(clippy::too_many_arguments)]
pub fn zipgemm(
    gpu: &Gpu,
    stream: &Stream,
    w: &DeviceWeights,
    x: &DeviceSlice<bf16>,
    n: usize,
    out: GemmOutput<'_>,
    split_k: Option<u32>,
    workspace: &mut GemmWorkspace,
) -> Result<()> {
    zipgemm_with(
        gpu,
        stream,
        w,
        x,
        n,
        out,
        GemmOptions {
            split_k,
            path: gpu.gemm_path(),
            late_first_count: false,
        },
        workspace,
    )
}

/// How a ZipGEMM launch is made: the work split and the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemmOptions {
    /// K slices per output tile, or `None` for the automatic split.
    pub split_k: Option<u32>,
    pub path: GemmPath,
    /// Testing only: the Hopper kernel's rare deferred split-K reduction
    /// made the common case (`zipserv_kernels::launch::STORE_LATE_FIRST_COUNT`).
    #[doc(hidden)]
    pub late_first_count: bool,
}

/// [`zipgemm`] with the path given explicitly. [`GemmPath::Wgmma`] on a
/// device without the Hopper kernel is [`Error::Unsupported`].
#[allow(clippy::too_many_arguments)]
pub fn zipgemm_with(
    gpu: &Gpu,
    stream: &Stream,
    w: &DeviceWeights,
    x: &DeviceSlice<bf16>,
    n: usize,
    out: GemmOutput<'_>,
    options: GemmOptions,
    workspace: &mut GemmWorkspace,
) -> Result<()> {
    let (m, k) = (w.rows(), w.cols());
    if n == 0 {
        return Err(Error::ShapeMismatch {
            what: "activations",
            expected: Shape(vec![1, k]),
            got: Shape(vec![0, k]),
        });
    }
    check_len("activations", x.len(), n, k)?;
    let (y, kind, len) = out.raw();
    check_len("output", len, n, m)?;
    // SAFETY: `stream` is a live stream of the device's context; `x` and
    // the output hold n × K and n × M elements (checked above) and are
    // borrowed for the call.
    unsafe {
        zipgemm_raw(
            gpu,
            stream.as_inner(),
            w,
            x.as_device_ptr().as_raw(),
            n,
            y,
            kind,
            options,
            workspace,
        )
    }
}

/// The element type of a GEMM output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    Bf16,
    F32,
}

/// [`zipgemm_with`] over a caller's device buffers on a caller's stream,
/// for engines that own their memory (candle, cudarc, PyTorch): `x` is
/// `n × w.cols()` BF16 row-major, `y` `n × w.rows()` of `out` type.
///
/// # Safety
/// - `stream` is a live stream of `gpu`'s device primary context (the one
///   cuBLAS, PyTorch and cudarc use by default), or null for its default
///   stream;
/// - `x` points to `n × w.cols()` readable BF16 elements and `y` to
///   `n × w.rows()` writable elements of type `out`, in device memory of
///   that context, which stay valid until the launch completes; `y` does
///   not overlap `x` or `w`, and no other work writes `x` or touches `y`
///   meanwhile;
/// - `workspace` is not used by launches on other streams that may run at
///   the same time (one workspace per stream).
#[allow(clippy::too_many_arguments)]
pub unsafe fn zipgemm_raw(
    gpu: &Gpu,
    stream: CUstream,
    w: &DeviceWeights,
    x: CUdeviceptr,
    n: usize,
    y: CUdeviceptr,
    out: OutputType,
    options: GemmOptions,
    workspace: &mut GemmWorkspace,
) -> Result<()> {
    let (m, k) = (w.rows(), w.cols());
    if n == 0 {
        return Err(Error::ShapeMismatch {
            what: "activations",
            expected: Shape(vec![1, k]),
            got: Shape(vec![0, k]),
        });
    }
    // Kernel indices (Y, X) are 32-bit.
    if n.checked_mul(m.max(k.next_multiple_of(8)))
        .is_none_or(|e| u32::try_from(e).is_err())
    {
        return Err(Error::Unsupported(format!(
            "{n} x {m} x {k} exceeds the kernels' 32-bit indexing"
        )));
    }
    let out = match out {
        OutputType::Bf16 => RawOutput {
            y: DevicePointer::from_raw(y),
            y32: DevicePointer::null(),
            store: STORE_BF16,
        },
        OutputType::F32 => RawOutput {
            y: DevicePointer::null(),
            y32: DevicePointer::from_raw(y),
            store: STORE_F32,
        },
    };
    // The GEMV copies X in 16-byte units and never splits K: where X is not
    // on a 16-byte boundary, or a split is asked for, the library's choice
    // is the `mma.sync` kernel instead, and an explicit request for the
    // GEMV is refused.
    let path = match options.path.resolve(gpu, m, k, n) {
        GemmPath::Gemv
            if options.path == GemmPath::Auto
                && (!x.is_multiple_of(16) || options.split_k.is_some()) =>
        {
            GemmPath::MmaSync
        }
        GemmPath::Gemv if options.split_k.is_some() => {
            return Err(Error::Unsupported(format!(
                "the compressed GEMV does not split K (split_k {:?} asked for)",
                options.split_k
            )));
        }
        path => path,
    };
    let x = DevicePointer::<bf16>::from_raw(x);
    match path {
        GemmPath::Gemv => crate::zipgemv::launch(gpu, stream, w, x, n, out),
        GemmPath::Wgmma => {
            let mut out = out;
            if options.late_first_count {
                out.store |= STORE_LATE_FIRST_COUNT;
            }
            crate::zipgemm_sm90::launch(gpu, stream, w, x, n, out, options.split_k, workspace)
        }
        _ => launch_mma(gpu, stream, w, x, n, out, options.split_k, workspace),
    }
}

/// A checked output buffer as kernel arguments.
#[derive(Clone, Copy)]
pub(crate) struct RawOutput {
    pub(crate) y: DevicePointer<bf16>,
    pub(crate) y32: DevicePointer<f32>,
    pub(crate) store: u32,
}

/// The `mma.sync` ZipGEMM, shapes already checked.
#[allow(clippy::too_many_arguments)]
fn launch_mma(
    gpu: &Gpu,
    stream: CUstream,
    w: &DeviceWeights,
    x: DevicePointer<bf16>,
    n: usize,
    out: RawOutput,
    split_k: Option<u32>,
    workspace: &mut GemmWorkspace,
) -> Result<()> {
    let (m, k) = (w.rows(), w.cols());
    let (variant, split) = GemmVariant::choose(gpu, m, k, n, split_k);
    let work = split.work;
    let pairs = u64::from(work.units) * u64::from(work.col_tiles);
    if u32::try_from(pairs).is_err() {
        return Err(Error::Unsupported(format!(
            "{n} x {m} x {k} exceeds the kernels' 32-bit indexing"
        )));
    }

    let x_ptr = x;
    let x_vector_loads = u32::from(k.is_multiple_of(8) && x_ptr.as_raw().is_multiple_of(16));
    let (partial, counters) = if split.cuts_units() {
        let slot = GEMM_WARPS as usize * TILE_ROWS * 8 * variant.nt;
        let counters = work.units as usize * split.chunks as usize;
        workspace.reserve(2 * split.grid() as usize * slot, counters)?
    } else {
        (DevicePointer::null(), DevicePointer::null())
    };
    let kernel = gpu.kernels().gemm[variant.index];
    let smem = gemm_smem_bytes(variant.nt) as u32;
    let RawOutput { y, y32, store } = out;
    // SAFETY: shapes and buffer sizes were checked above; the matrix was
    // validated before upload; when shares cut units, the workspace holds
    // two partial-sum slots per block and a zeroed counter per unit and
    // chunk; shares × chunks blocks with at most one share per (unit,
    // column tile) pair; block size and dynamic shared memory match the
    // kernel's layout.
    unsafe {
        launch_kernel!(
            kernel,
            split.grid(),
            32 * GEMM_WARPS,
            smem,
            stream,
            gpu.launch_order(),
            (
                w.tiles.as_device_ptr(),
                w.exception_starts.as_device_ptr(),
                w.exceptions.as_device_ptr(),
                w.far_starts.as_device_ptr(),
                w.far_exponents.as_device_ptr(),
                w.exception_table.as_device_ptr(),
                u32::from(w.base),
                m as u32,
                k as u32,
                tiles_for(k, TILE_COLS) as u32,
                x_ptr,
                n as u32,
                x_vector_loads,
                y,
                y32,
                store,
                partial,
                counters
            )
        )
    }
}

/// One compiled `mma.sync` ZipGEMM variant ([`GEMM_VARIANTS`]) and its index.
pub(crate) struct GemmVariant {
    pub(crate) nt: usize,
    pub(crate) index: usize,
}

impl GemmVariant {
    /// The first variant covering `n` rows, or the widest for larger n
    /// (which runs every share once per chunk of 32 rows; the narrower
    /// kernels assume a single chunk).
    pub(crate) fn for_n(n: usize) -> GemmVariant {
        let last = GEMM_VARIANTS.len() - 1;
        let index = GEMM_VARIANTS
            .iter()
            .position(|v| n <= 8 * v.nt)
            .unwrap_or(last);
        Self::at(index)
    }

    fn at(index: usize) -> GemmVariant {
        let MmaGemmVariant { nt, .. } = GEMM_VARIANTS[index];
        GemmVariant { nt, index }
    }

    /// The variant and split for an `m × k` product with `n` rows on `gpu`
    /// (`requested`: explicit K slices). Of two variants of one width, the
    /// late-fetching one, which fits more blocks, unless its split has no
    /// more blocks than one wave of the early-fetching one: then the
    /// blocks are few anyway and the early fetch hides each tile's memory
    /// round trip ([`Fetch::Auto`]; [`Gpu::gemm_fetch`] may force either).
    /// Measured on an H200 (commit dd73a6a, N = 1 and 8): early is 10%
    /// faster at 2048 × 4096 (256 blocks) and 4096 × 1024, 2% at 4096 ×
    /// 4096 (512 blocks, wave 528); late is 7–13% faster at 4096 × 14336
    /// (1024 blocks) and 6144 × 4096, which fill the late wave (1056) but
    /// not the early one.
    pub(crate) fn choose(
        gpu: &Gpu,
        m: usize,
        k: usize,
        n: usize,
        requested: Option<u32>,
    ) -> (GemmVariant, SplitK) {
        let waves = std::array::from_fn(|i| gpu.gemm_blocks_per_wave(i));
        Self::choose_for_waves(&waves, gpu.gemm_fetch(), m, k, n, requested)
    }

    /// [`GemmVariant::choose`] for a device whose waves hold `waves[i]`
    /// blocks of variant `i`.
    fn choose_for_waves(
        waves: &[usize; GEMM_VARIANTS.len()],
        fetch: Fetch,
        m: usize,
        k: usize,
        n: usize,
        requested: Option<u32>,
    ) -> (GemmVariant, SplitK) {
        let split_for =
            |v: &GemmVariant| SplitK::choose(m, k, n.div_ceil(8 * v.nt), waves[v.index], requested);
        let first = Self::for_n(n);
        let split = split_for(&first);
        let twin = GEMM_VARIANTS
            .get(first.index + 1)
            .filter(|t| t.nt == first.nt && t.fetch_early != GEMM_VARIANTS[first.index].fetch_early)
            .map(|_| Self::at(first.index + 1));
        let Some(twin) = twin else {
            return (first, split);
        };
        let want_early = match fetch {
            Fetch::Early => true,
            Fetch::Late => false,
            Fetch::Auto => split.grid() as usize <= waves[twin.index],
        };
        if want_early == GEMM_VARIANTS[twin.index].fetch_early {
            let split = split_for(&twin);
            (twin, split)
        } else {
            (first, split)
        }
    }
}

/// When the `mma.sync` ZipGEMM fetches a warp's next tile
/// (`launch::MmaGemmVariant::fetch_early`), where both variants exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fetch {
    /// Early when the late variant's automatic split fits one wave of the early
    /// one (measured on an H200; see the launcher), late otherwise.
    #[default]
    Auto,
    Early,
    Late,
}

impl std::str::FromStr for Fetch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "early" => Ok(Self::Early),
            "late" => Ok(Self::Late),
            other => Err(Error::Unsupported(format!(
                "{}={other:?}: expected auto, early or late",
                crate::device::GEMM_FETCH_ENV
            ))),
        }
    }
}

/// Blocks of the decompression kernel that fit on one multiprocessor.
pub(crate) fn prepare_decompress(module: &Module) -> Result<u32> {
    resident_blocks(module, "zipserv_decompress", 32 * DECOMPRESS_WARPS)
}

/// Blocks of `threads` of kernel `name` (no dynamic shared memory) that
/// fit on one multiprocessor, at least 1.
pub(crate) fn resident_blocks(module: &Module, name: &str, threads: u32) -> Result<u32> {
    let function = module.get_function(name).cuda("cuModuleGetFunction")?;
    let blocks = function
        .max_active_blocks_per_multiprocessor(cust::function::BlockSize::x(threads), 0)
        .cuda("cuOccupancyMaxActiveBlocksPerMultiprocessor")?;
    Ok(blocks.max(1))
}

/// Lets every ZipGEMM variant use the dynamic shared memory its layout
/// needs, and returns how many blocks of each fit on one multiprocessor.
pub(crate) fn prepare_gemm(module: &Module) -> Result<[u32; GEMM_VARIANTS.len()]> {
    let mut blocks = [0u32; GEMM_VARIANTS.len()];
    for (variant, blocks) in GEMM_VARIANTS.iter().zip(&mut blocks) {
        let function = module
            .get_function(variant.name)
            .cuda("cuModuleGetFunction")?;
        let smem = gemm_smem_bytes(variant.nt);
        *blocks = allow_shared_memory(&function, smem, 32 * GEMM_WARPS)?.max(1);
    }
    Ok(blocks)
}

impl GemmWorkspace {
    /// Device pointers to at least `partial_len` f32 and `counters` zeroed
    /// u32, growing the buffers if needed.
    pub(crate) fn reserve(
        &mut self,
        partial_len: usize,
        counters: usize,
    ) -> Result<(DevicePointer<f32>, DevicePointer<u32>)> {
        if self.partial.as_ref().is_none_or(|b| b.len() < partial_len) {
            // SAFETY: every element a launch reads was written earlier in the
            // same launch (each slice writes its partial sums first).
            self.partial =
                Some(unsafe { DeviceBuffer::uninitialized(partial_len) }.cuda("cuMemAlloc")?);
        }
        if self.counters.as_ref().is_none_or(|b| b.len() < counters) {
            // Zeroed once; each launch leaves them zero again.
            self.counters = Some(DeviceBuffer::zeroed(counters).cuda("cuMemAlloc")?);
        }
        Ok((
            self.partial.as_ref().unwrap().as_device_ptr(),
            self.counters.as_ref().unwrap().as_device_ptr(),
        ))
    }
}

/// How a product with compressed weights is computed best.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressedPath {
    /// ZipGEMM: the weights decoded in registers, fused with the product.
    Fused,
    /// The decompression kernel into a BF16 scratch matrix, then the BF16
    /// GEMM (`Cublas::linear`).
    DecompressThenBlas,
}

/// Weight matrices of at least this many elements count as large in
/// [`compressed_path`] (28672×4096 and 4096×14336 are; 6144×4096 and
/// 4096×4096 are not).
pub const LARGE_MATRIX_ELEMENTS: usize = 48 << 20;

/// The path for an `m × k` compressed matrix and `n` activation rows, on a
/// card with (`wgmma`) or without the Hopper ZipGEMM. From the H200 sweep
/// at commit 8a56f57 (docs/PERFORMANCE.md, "Where it stands"), where each
/// column is the better path's speed against the best BF16 GEMM:
/// - with `wgmma`, fused beats decompress + cuBLAS up to N = 128 on every
///   Llama-3-8B shape (N = 128: 0.51–0.68 against 0.36–0.44), up to
///   N = 512 on the large ones (N = 512: 0.65–0.66 against 0.62), and
///   loses from there (N = 2048: 0.73–0.76 against 0.90–0.94; small
///   shapes from N = 256: 0.46–0.47 against 0.48–0.51);
/// - without it (the `mma.sync` kernel alone, which re-decodes per 32
///   rows), fused wins up to N = 32 and the two are even at N = 64
///   (0.2–0.6 each, H200 sweeps of 2026-11-27), so 32 is the limit.
pub fn compressed_path(wgmma: bool, m: usize, k: usize, n: usize) -> CompressedPath {
    let large = m.saturating_mul(k) >= LARGE_MATRIX_ELEMENTS;
    let fused_max = match (wgmma, large) {
        (false, _) => 32,
        (true, false) => 128,
        (true, true) => 512,
    };
    if n <= fused_max {
        CompressedPath::Fused
    } else {
        CompressedPath::DecompressThenBlas
    }
}

impl Gpu {
    /// [`compressed_path`] for this device.
    pub fn compressed_path(&self, m: usize, k: usize, n: usize) -> CompressedPath {
        compressed_path(self.has_wgmma(), m, k, n)
    }
}

/// What repeated ZipGEMM calls on one stream need, owned once: the device
/// (whose kernel handles were resolved when it was opened), the options,
/// and the split-K workspace. A call looks nothing up and allocates only
/// when a larger shape needs more workspace than before.
///
/// Use one handle per stream: the workspace must not be shared by launches
/// that may run at the same time.
pub struct ZipGemm<'gpu> {
    gpu: &'gpu Gpu,
    options: GemmOptions,
    workspace: GemmWorkspace,
}

impl<'gpu> ZipGemm<'gpu> {
    /// A handle with the automatic split and the device's path
    /// ([`Gpu::gemm_path`]).
    pub fn new(gpu: &'gpu Gpu) -> Self {
        Self::with_options(
            gpu,
            GemmOptions {
                split_k: None,
                path: gpu.gemm_path(),
                late_first_count: false,
            },
        )
    }

    pub fn with_options(gpu: &'gpu Gpu, options: GemmOptions) -> Self {
        Self {
            gpu,
            options,
            workspace: GemmWorkspace::default(),
        }
    }

    pub fn gpu(&self) -> &'gpu Gpu {
        self.gpu
    }

    /// `out = x · wᵀ` on `stream`, every size checked ([`zipgemm_with`]).
    pub fn run(
        &mut self,
        stream: &Stream,
        w: &DeviceWeights,
        x: &DeviceSlice<bf16>,
        n: usize,
        out: GemmOutput<'_>,
    ) -> Result<()> {
        zipgemm_with(
            self.gpu,
            stream,
            w,
            x,
            n,
            out,
            self.options,
            &mut self.workspace,
        )
    }

    /// `y = x · wᵀ` over a caller's buffers on a caller's stream.
    ///
    /// # Safety
    /// As for [`zipgemm_raw`]: `stream` belongs to the device's primary
    /// context (or is null); `x` holds `n × w.cols()` BF16 and `y`
    /// `n × w.rows()` elements of type `out`, valid until the launch
    /// completes, `y` written by nothing else meanwhile; this handle is not
    /// used on another stream while the launch may run.
    pub unsafe fn run_raw(
        &mut self,
        stream: CUstream,
        w: &DeviceWeights,
        x: CUdeviceptr,
        n: usize,
        y: CUdeviceptr,
        out: OutputType,
    ) -> Result<()> {
        // SAFETY: the caller's promises, passed on.
        unsafe {
            zipgemm_raw(
                self.gpu,
                stream,
                w,
                x,
                n,
                y,
                out,
                self.options,
                &mut self.workspace,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compressed GEMV takes decode batches of up to 16 rows where one
    /// wave of its blocks holds every row tile (an H200's: 396 blocks of
    /// the n ≤ 8 variant, 264 of the n ≤ 16 one), launched one after
    /// another.
    #[test]
    fn gemv_takes_decode_batches_one_row_tile_per_block() {
        let (after, waves) = (LaunchOrder::AfterPrevious, [396, 264]);
        for (m, k, most) in [
            (4096, 4096, 16),
            (4096, 14336, 16),
            (6144, 4096, 8),
            (576, 576, 16),
            (4224, 64, 16),
            (4240, 64, 8),
        ] {
            for n in 1..=16 {
                assert_eq!(
                    gemv_auto(m, k, n, after, &waves),
                    n <= most,
                    "{m}x{k} at N = {n}"
                );
                assert!(
                    !gemv_auto(m, k, n, LaunchOrder::Overlapped, &waves),
                    "{m}x{k} at N = {n}"
                );
            }
            assert!(!gemv_auto(m, k, 17, after, &waves), "{m}x{k} at N = 17");
        }
        for (m, k) in [(28672, 4096), (128256, 4096), (49152, 576)] {
            assert!(!gemv_auto(m, k, 1, after, &waves), "{m}x{k}");
        }
        assert!(!gemv_auto(4096, 4095, 1, after, &waves));
        assert!(!gemv_auto(4096, 4092, 1, after, &waves));
        assert!(!gemv_auto(0, 4096, 1, after, &waves));
        assert_eq!("gemv".parse::<GemmPath>().unwrap(), GemmPath::Gemv);
        let err = "fused".parse::<GemmPath>().unwrap_err().to_string();
        assert!(err.contains("gemv"), "{err}");
    }

    /// The path choice on an H200 (132 multiprocessors) for the measured
    /// shapes of [`WGMMA_MIN_N_LARGE`].
    #[test]
    fn hopper_kernel_takes_n9_to_16_on_the_larger_products_only() {
        let auto = |n, m, k| wgmma_auto(n, m, k, 132);
        for n in [1, 8] {
            assert!(!auto(n, 28672, 4096), "N = {n}");
        }
        for n in [9, 12, 16] {
            assert!(!auto(n, 4096, 4096), "N = {n}");
            assert!(auto(n, 6144, 4096) && auto(n, 4096, 14336) && auto(n, 28672, 4096));
        }
        for n in [17, 32, 64, 300] {
            assert!(auto(n, 4096, 4096) && auto(n, 1, 1), "N = {n}");
        }
    }

    /// Automatic splits on an H200-sized wave (132 multiprocessors × 4 blocks).
    #[test]
    fn automatic_split_fills_one_wave() {
        let wave = 528;
        // 448 row groups fill 85% of the wave whole: stream-K shares.
        let s = SplitK::choose(28672, 4096, 1, wave, None);
        assert_eq!((s.work.units, s.work.blocks, s.grid()), (448, 528, 528));
        assert_eq!(s.slices(), 3);
        assert!(s.cuts_units());
        // 64 row groups × 8 slices fill 97%: whole slices.
        let s = SplitK::choose(4096, 14336, 1, wave, None);
        assert_eq!((s.work.units, s.work.blocks, s.slices()), (64, 512, 8));
        // Two chunks share the wave; more row groups than its 264 slots:
        // one wave of shares of 1.7 row groups, each run for both chunks.
        let s = SplitK::choose(28672, 4096, 2, wave, None);
        assert_eq!(
            (s.work.units, s.work.blocks, s.grid(), s.slices()),
            (448, 264, 528, 2)
        );
        // Few row groups, few columns: one block per row group and chunk.
        let s = SplitK::choose(4096, 512, 1, wave, None);
        assert_eq!((s.work.units, s.work.blocks, s.slices()), (64, 64, 1));
        assert!(!s.cuts_units());
        // Few tiles: every block keeps at least MIN_TILES_PER_SLICE.
        let s = SplitK::choose(64, 1024, 1, wave, None);
        assert_eq!((s.work.units, s.work.blocks), (1, 2));
        let s = SplitK::choose(1, 1, 1, wave, None);
        assert_eq!((s.work.units, s.work.col_tiles, s.work.blocks), (1, 1, 1));
    }

    #[test]
    fn compressed_path_follows_the_measured_crossovers() {
        use CompressedPath::{DecompressThenBlas as Dec, Fused};
        // (m, k, n, with wgmma, without)
        for (m, k, n, hopper, other) in [
            (28672, 4096, 1, Fused, Fused),
            (28672, 4096, 32, Fused, Fused),
            (28672, 4096, 64, Fused, Dec),
            (28672, 4096, 256, Fused, Dec),
            (28672, 4096, 512, Fused, Dec),
            (28672, 4096, 2048, Dec, Dec),
            (4096, 14336, 512, Fused, Dec),
            (4096, 14336, 513, Dec, Dec),
            (4096, 4096, 128, Fused, Dec),
            (4096, 4096, 256, Dec, Dec),
            (6144, 4096, 129, Dec, Dec),
            (1, 1, 1, Fused, Fused),
        ] {
            assert_eq!(
                compressed_path(true, m, k, n),
                hopper,
                "{m}x{k} N={n} with wgmma"
            );
            assert_eq!(
                compressed_path(false, m, k, n),
                other,
                "{m}x{k} N={n} without"
            );
        }
    }

    #[test]
    fn requested_slices_cut_every_tile_alike() {
        let s = SplitK::choose(1000, 3000, 3, 528, Some(5));
        assert_eq!((s.work.units, s.chunks), (16, 3));
        assert_eq!(
            (s.work.blocks, s.grid(), s.slices()),
            (16 * 5, 16 * 5 * 3, 5)
        );
        // More slices than column tiles: one tile per block.
        let s = SplitK::choose(64, 300, 1, 528, Some(9));
        assert_eq!((s.work.blocks, s.slices()), (3, 3));
    }
}

#[cfg(test)]
mod variant_tests {
    use super::*;

    /// An H200's waves (132 SMs): 8 blocks per SM of the late n8 variant,
    /// 4 of the others.
    const H200: [usize; 4] = [1056, 528, 528, 528];

    fn name(m: usize, k: usize, n: usize, fetch: Fetch) -> &'static str {
        let (v, split) = GemmVariant::choose_for_waves(&H200, fetch, m, k, n, None);
        assert!(split.grid() as usize <= H200[v.index] * n.div_ceil(8 * v.nt));
        GEMM_VARIANTS[v.index].name
    }

    #[test]
    fn early_fetch_only_for_products_that_fit_one_early_wave() {
        // Measured faster with the early fetch (H200, N = 1 and 8).
        for (m, k) in [(2048, 4096), (4096, 1024), (4096, 4096)] {
            for n in [1, 8] {
                assert_eq!(
                    name(m, k, n, Fetch::Auto),
                    "zipserv_gemm_n8_early",
                    "{m}x{k} N={n}"
                );
            }
        }
        // Measured faster with the late fetch.
        for (m, k) in [(6144, 4096), (4096, 14336), (28672, 4096)] {
            for n in [1, 8] {
                assert_eq!(
                    name(m, k, n, Fetch::Auto),
                    "zipserv_gemm_n8",
                    "{m}x{k} N={n}"
                );
            }
        }
    }

    #[test]
    fn a_forced_fetch_is_honoured_and_wider_n_takes_the_wider_kernels() {
        assert_eq!(name(28672, 4096, 1, Fetch::Early), "zipserv_gemm_n8_early");
        assert_eq!(name(2048, 4096, 8, Fetch::Late), "zipserv_gemm_n8");
        for fetch in [Fetch::Auto, Fetch::Early, Fetch::Late] {
            assert_eq!(name(4096, 4096, 9, fetch), "zipserv_gemm_n16");
            assert_eq!(name(4096, 4096, 32, fetch), "zipserv_gemm_n32");
            assert_eq!(name(4096, 4096, 300, fetch), "zipserv_gemm_n32");
        }
    }

    #[test]
    fn fetch_names_parse() {
        assert_eq!("early".parse::<Fetch>().unwrap(), Fetch::Early);
        assert_eq!("late".parse::<Fetch>().unwrap(), Fetch::Late);
        assert_eq!("auto".parse::<Fetch>().unwrap(), Fetch::Auto);
        let err = "soon".parse::<Fetch>().unwrap_err().to_string();
        assert!(err.contains("ZIPSERV_GEMM_FETCH"), "{err}");
    }
}
