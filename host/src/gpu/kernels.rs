//! Launches of the compressed-matrix kernels, with every shape and size
//! checked before anything reaches the GPU.

use cust::function::BlockSize;
use cust::launch;
use cust::memory::{DeviceBuffer, DevicePointer, DeviceSlice};
use cust::module::Module;
use cust::stream::Stream;
use half::bf16;
use zipserv_kernels::format::{TILE_COLS, TILE_ROWS, tiles_for};
use zipserv_kernels::launch::{
    DECOMPRESS_WARPS, GEMM_NT, GEMM_WARPS, STORE_BF16, STORE_F32, gemm_smem_bytes,
};

use super::Gpu;
use super::weights::DeviceWeights;
use crate::error::{CudaContext, Error, Result, Shape};

/// Where ZipGEMM writes `Y` (N × M, row-major).
pub enum GemmOutput<'a> {
    Bf16(&'a mut DeviceSlice<bf16>),
    F32(&'a mut DeviceSlice<f32>),
}

/// Fewest 128-column tiles per automatic K slice (on an H200, 4096×4096 ran
/// 10% slower with 11 slices of 3 tiles than with 8 of 4).
pub const MIN_TILES_PER_SLICE: usize = 4;

/// Scratch memory for split K: f32 partial sums and arrival counters. Keep
/// one per stream and reuse it: it grows on demand and is never shrunk.
#[derive(Default)]
pub struct GemmWorkspace {
    partial: Option<DeviceBuffer<f32>>,
    counters: Option<DeviceBuffer<u32>>,
}

/// The split of K chosen for a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitK {
    /// Number of K slices (grid y).
    pub slices: u32,
    /// 128-column tiles per slice.
    pub tiles_per_slice: u32,
}

impl SplitK {
    /// `requested` slices (clamped to 1..=col_tiles), or, if `None`, as many
    /// slices as still fit the whole grid into one wave of resident blocks
    /// (`blocks_per_wave`): a second, partial wave left most of the GPU idle
    /// (up to 2× slower on an H200), while more slices shorten each warp's
    /// run and add partial sums; a slice keeps at least
    /// [`MIN_TILES_PER_SLICE`] tiles so the fetch pipeline fills.
    pub fn choose(
        rows: usize,
        cols: usize,
        n_chunks: usize,
        blocks_per_wave: usize,
        requested: Option<u32>,
    ) -> Self {
        let row_groups = tiles_for(rows, TILE_ROWS).div_ceil(GEMM_WARPS as usize) * n_chunks.max(1);
        let col_tiles = tiles_for(cols, TILE_COLS);
        let wanted = match requested {
            Some(s) => s as usize,
            None => blocks_per_wave / row_groups,
        };
        let wanted = match requested {
            Some(_) => wanted.clamp(1, col_tiles),
            None => wanted.clamp(1, col_tiles.div_ceil(MIN_TILES_PER_SLICE).max(1)),
        };
        let tiles_per_slice = col_tiles.div_ceil(wanted);
        Self {
            slices: col_tiles.div_ceil(tiles_per_slice) as u32,
            tiles_per_slice: tiles_per_slice as u32,
        }
    }
}

fn check_len(what: &'static str, have: usize, rows: usize, cols: usize) -> Result<()> {
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
    let col_tiles = tiles_for(w.cols(), TILE_COLS);
    let tile_count = tiles_for(w.rows(), TILE_ROWS) * col_tiles;
    let blocks = tile_count
        .div_ceil(DECOMPRESS_WARPS as usize)
        .min(gpu.info().multiprocessors as usize * 16) as u32;
    let out_ptr = out.as_device_ptr();
    let vector_stores =
        u32::from(w.cols().is_multiple_of(8) && out_ptr.as_raw().is_multiple_of(16));
    let module = gpu.module();
    // SAFETY: the matrix was validated before upload; `out` holds rows × cols
    // elements (checked above); block size matches DECOMPRESS_WARPS.
    unsafe {
        launch!(module.zipserv_decompress<<<blocks, 32 * DECOMPRESS_WARPS, 0, stream>>>(
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
        ))
    }
    .cuda("cuLaunchKernel(zipserv_decompress)")
}

/// `Y[n×M] = X[n×K] · Wᵀ` with `W` compressed (M × K), `X` BF16 row-major,
/// FP32 accumulation; asynchronous on `stream`. `split_k` overrides the
/// automatic choice of K slices. `workspace` holds the split-K partial sums;
/// use one workspace per stream (launches sharing one must not overlap).
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
    let (m, k) = (w.rows(), w.cols());
    if n == 0 {
        return Err(Error::ShapeMismatch {
            what: "activations",
            expected: Shape(vec![1, k]),
            got: Shape(vec![0, k]),
        });
    }
    check_len("activations", x.len(), n, k)?;
    let (y, y32, store) = match out {
        GemmOutput::Bf16(y) => {
            check_len("output", y.len(), n, m)?;
            (y.as_device_ptr(), DevicePointer::null(), STORE_BF16)
        }
        GemmOutput::F32(y) => {
            check_len("output", y.len(), n, m)?;
            (DevicePointer::null(), y.as_device_ptr(), STORE_F32)
        }
    };
    let variant = GemmVariant::for_n(n);
    let n_chunks = n.div_ceil(8 * variant.nt);
    let split = gpu.gemm_split(m, k, n, split_k);
    if u32::try_from(split.slices as usize * n * m.max(k)).is_err() {
        return Err(Error::Unsupported(format!(
            "{n} x {m} x {k} with {} K slices exceeds 32-bit indexing",
            split.slices
        )));
    }

    let x_ptr = x.as_device_ptr();
    let x_vector_loads = u32::from(k.is_multiple_of(8) && x_ptr.as_raw().is_multiple_of(16));
    let grid = (
        (tiles_for(m, TILE_ROWS).div_ceil(GEMM_WARPS as usize) * n_chunks) as u32,
        split.slices,
        1,
    );
    let (partial, counters) = if split.slices > 1 {
        workspace.reserve(split.slices as usize * n * m, grid.0 as usize)?
    } else {
        (DevicePointer::null(), DevicePointer::null())
    };
    let function = gpu
        .module()
        .get_function(variant.name)
        .cuda("cuModuleGetFunction")?;
    let smem = gemm_smem_bytes(variant.nt) as u32;
    // SAFETY: shapes and buffer sizes were checked above; the matrix was
    // validated before upload; the workspace holds slices × n × m partial
    // sums and zeroed counters for every block index x; block size
    // and dynamic shared memory match the kernel's layout.
    unsafe {
        launch!(function<<<grid, 32 * GEMM_WARPS, smem, stream>>>(
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
            split.tiles_per_slice,
            partial,
            counters
        ))
    }
    .cuda("cuLaunchKernel(zipserv_gemm)")
}

/// One compiled ZipGEMM variant: `nt` n-tiles of 8 activation rows.
pub(crate) struct GemmVariant {
    pub(crate) name: &'static str,
    pub(crate) nt: usize,
    pub(crate) index: usize,
}

impl GemmVariant {
    const ALL: [GemmVariant; 3] = [
        GemmVariant {
            name: "zipserv_gemm_n8",
            nt: GEMM_NT[0],
            index: 0,
        },
        GemmVariant {
            name: "zipserv_gemm_n16",
            nt: GEMM_NT[1],
            index: 1,
        },
        GemmVariant {
            name: "zipserv_gemm_n32",
            nt: GEMM_NT[2],
            index: 2,
        },
    ];

    /// The smallest variant covering `n` rows, or the widest for larger n
    /// (grid z then takes chunks of 32 rows).
    pub(crate) fn for_n(n: usize) -> &'static GemmVariant {
        Self::ALL
            .iter()
            .find(|v| n <= 8 * v.nt)
            .unwrap_or(&Self::ALL[2])
    }
}

/// Lets every ZipGEMM variant use the dynamic shared memory its layout
/// needs, and returns how many blocks of each fit on one multiprocessor.
pub(crate) fn prepare_gemm(module: &Module) -> Result<[u32; 3]> {
    let mut blocks = [0u32; 3];
    for (variant, blocks) in GemmVariant::ALL.iter().zip(&mut blocks) {
        let function = module
            .get_function(variant.name)
            .cuda("cuModuleGetFunction")?;
        let smem = gemm_smem_bytes(variant.nt);
        // SAFETY: a valid function handle and a plain integer attribute.
        let code = unsafe {
            cust::sys::cuFuncSetAttribute(
                function.to_raw(),
                cust::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
        };
        if code != cust::sys::cudaError_enum::CUDA_SUCCESS {
            return Err(Error::Driver {
                call: "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                code: code as i32,
            });
        }
        *blocks = function
            .max_active_blocks_per_multiprocessor(BlockSize::x(32 * GEMM_WARPS), smem)
            .cuda("cuOccupancyMaxActiveBlocksPerMultiprocessor")?
            .max(1);
    }
    Ok(blocks)
}

impl GemmWorkspace {
    /// Device pointers to at least `partial_len` f32 and `counters` zeroed
    /// u32, growing the buffers if needed.
    fn reserve(
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
