//! Launches of the compressed-matrix kernels, with every shape and size
//! checked before anything reaches the GPU.

use cust::launch;
use cust::memory::{DeviceBuffer, DevicePointer, DeviceSlice};
use cust::stream::Stream;
use half::bf16;
use zipserv_kernels::format::{TILE_COLS, TILE_ROWS, tiles_for};
use zipserv_kernels::launch::{
    CONVERT_THREADS, DECOMPRESS_WARPS, GEMM_WARPS, STORE_BF16, STORE_F32, STORE_F32_ATOMIC,
};

use super::Gpu;
use super::weights::DeviceWeights;
use crate::error::{CudaContext, Error, Result, Shape};

/// Largest activation chunk one ZipGEMM launch covers along N; larger N is
/// split across grid z (each chunk re-reads the weights, so large batches are
/// better served by decompress + cuBLAS).
pub const MAX_FUSED_N: usize = 32;

/// Where ZipGEMM writes `Y` (N × M, row-major).
pub enum GemmOutput<'a> {
    Bf16(&'a mut DeviceSlice<bf16>),
    F32(&'a mut DeviceSlice<f32>),
}

/// Scratch memory for split-K with BF16 output (f32 partial sums). Keep one
/// per stream and reuse it: it grows on demand and is never shrunk.
#[derive(Default)]
pub struct GemmWorkspace {
    partial: Option<DeviceBuffer<f32>>,
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
    /// `requested` slices (clamped to 1..=col_tiles), or, if `None`, enough
    /// slices that the grid holds about 12 warps per multiprocessor (at 94
    /// registers about 20 fit; on an H200, 28672×4096 ran 8% faster with one
    /// slice (14 warps/SM) than with two, and 4096×14336 4× faster with nine
    /// than with one).
    pub fn choose(rows: usize, cols: usize, multiprocessors: u32, requested: Option<u32>) -> Self {
        let row_tiles = tiles_for(rows, TILE_ROWS) as u64;
        let col_tiles = tiles_for(cols, TILE_COLS) as u64;
        let wanted = match requested {
            Some(s) => u64::from(s),
            None => (u64::from(multiprocessors) * 12).div_ceil(row_tiles),
        };
        let wanted = wanted.clamp(1, col_tiles);
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
/// automatic choice of K slices. `workspace` is only used for split K with
/// BF16 output.
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
    match &out {
        GemmOutput::Bf16(y) => check_len("output", y.len(), n, m)?,
        GemmOutput::F32(y) => check_len("output", y.len(), n, m)?,
    }
    if u32::try_from(n * m.max(k)).is_err() {
        return Err(Error::Unsupported(format!(
            "{n} x {m} x {k} exceeds 32-bit indexing"
        )));
    }
    let split = SplitK::choose(m, k, gpu.info().multiprocessors, split_k);

    let (y, y32, store): (DevicePointer<bf16>, DevicePointer<f32>, u32) = match out {
        GemmOutput::Bf16(y) if split.slices == 1 => {
            (y.as_device_ptr(), DevicePointer::null(), STORE_BF16)
        }
        GemmOutput::F32(y) if split.slices == 1 => {
            (DevicePointer::null(), y.as_device_ptr(), STORE_F32)
        }
        GemmOutput::F32(y) => {
            // SAFETY: y is a live allocation of at least n × m f32.
            unsafe { y.set_32_async(0, stream) }.cuda("cuMemsetD32Async")?;
            (DevicePointer::null(), y.as_device_ptr(), STORE_F32_ATOMIC)
        }
        GemmOutput::Bf16(y) => {
            let partial = workspace.partial_for(n * m)?;
            // SAFETY: the workspace holds at least n × m f32.
            unsafe { partial.set_32_async(0, stream) }.cuda("cuMemsetD32Async")?;
            let partial_ptr = partial.as_device_ptr();
            launch_gemm(
                gpu,
                stream,
                w,
                x,
                n,
                DevicePointer::null(),
                partial_ptr,
                STORE_F32_ATOMIC,
                split,
            )?;
            return convert_to_bf16(gpu, stream, partial_ptr, y, n * m);
        }
    };
    launch_gemm(gpu, stream, w, x, n, y, y32, store, split)
}

#[allow(clippy::too_many_arguments)]
fn launch_gemm(
    gpu: &Gpu,
    stream: &Stream,
    w: &DeviceWeights,
    x: &DeviceSlice<bf16>,
    n: usize,
    y: DevicePointer<bf16>,
    y32: DevicePointer<f32>,
    store: u32,
    split: SplitK,
) -> Result<()> {
    let (m, k) = (w.rows(), w.cols());
    let x_ptr = x.as_device_ptr();
    let x_vector_loads = u32::from(k.is_multiple_of(8) && x_ptr.as_raw().is_multiple_of(16));
    let chunk = if n <= 8 {
        8
    } else if n <= 16 {
        16
    } else {
        MAX_FUSED_N
    };
    let grid = (
        tiles_for(m, TILE_ROWS).div_ceil(GEMM_WARPS as usize) as u32,
        split.slices,
        n.div_ceil(chunk) as u32,
    );
    let function = match chunk {
        8 => "zipserv_gemm_n8",
        16 => "zipserv_gemm_n16",
        _ => "zipserv_gemm_n32",
    };
    let function = gpu
        .module()
        .get_function(function)
        .cuda("cuModuleGetFunction")?;
    // SAFETY: shapes and buffer sizes were checked by `zipgemm`; the matrix
    // was validated before upload; block size matches GEMM_WARPS.
    unsafe {
        launch!(function<<<grid, 32 * GEMM_WARPS, 0, stream>>>(
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
            split.tiles_per_slice
        ))
    }
    .cuda("cuLaunchKernel(zipserv_gemm)")
}

fn convert_to_bf16(
    gpu: &Gpu,
    stream: &Stream,
    src: DevicePointer<f32>,
    dst: &mut DeviceSlice<bf16>,
    len: usize,
) -> Result<()> {
    let blocks = len
        .div_ceil(CONVERT_THREADS as usize)
        .min(gpu.info().multiprocessors as usize * 8) as u32;
    let module = gpu.module();
    let dst = dst.as_device_ptr();
    // SAFETY: src and dst hold at least len elements (checked by the caller).
    unsafe { launch!(module.zipserv_f32_to_bf16<<<blocks, CONVERT_THREADS, 0, stream>>>(src, dst, len as u32)) }
        .cuda("cuLaunchKernel(zipserv_f32_to_bf16)")
}

impl GemmWorkspace {
    fn partial_for(&mut self, len: usize) -> Result<&mut DeviceBuffer<f32>> {
        if self.partial.as_ref().is_none_or(|b| b.len() < len) {
            // SAFETY: every element is zeroed before use (memset in zipgemm).
            self.partial = Some(unsafe { DeviceBuffer::uninitialized(len) }.cuda("cuMemAlloc")?);
        }
        Ok(self.partial.as_mut().unwrap())
    }
}
