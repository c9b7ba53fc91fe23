//! Launches of the compressed matrix-vector product of decode batches
//! (`zipserv_zipgemv`; the kernel and why it exists are described in
//! `zipserv_kernels::zipgemv`), [`GemmPath::Gemv`](crate::GemmPath::Gemv)
//! of [`crate::zipgemm`].

use cust::memory::DevicePointer;
use cust::module::Module;
use cust::sys::CUstream;
use half::bf16;
use zipserv_kernels::format::{TILE_COLS, TILE_ROWS, tiles_for};
use zipserv_kernels::gemv::gemv_grid;
use zipserv_kernels::launch::{GEMV_WARPS, WorkSplit, ZIPGEMV_VARIANTS, zipgemv_smem_bytes};
use zipserv_kernels::zipgemv::zipgemv_unsupported;

use crate::device::Gpu;
use crate::error::{CudaContext, Error, Result};
use crate::kernels::{RawOutput, SplitK};
use crate::launch::{allow_shared_memory, launch_kernel};
use crate::weights::DeviceWeights;

/// Lets each variant use its dynamic shared memory (the most it asks for)
/// and returns how many blocks of that fit on one multiprocessor.
pub(crate) fn prepare(module: &Module) -> Result<[u32; ZIPGEMV_VARIANTS.len()]> {
    let mut blocks = [0; ZIPGEMV_VARIANTS.len()];
    for (slot, v) in blocks.iter_mut().zip(ZIPGEMV_VARIANTS) {
        let function = module.get_function(v.name).cuda("cuModuleGetFunction")?;
        *slot = allow_shared_memory(&function, v.max_smem_bytes(), 32 * GEMV_WARPS)?.max(1);
    }
    Ok(blocks)
}

/// Index into [`ZIPGEMV_VARIANTS`] of the narrowest variant that takes
/// `n` activation rows (the widest past them all; the launch refuses).
pub(crate) fn zipgemv_variant(n: usize) -> usize {
    ZIPGEMV_VARIANTS
        .iter()
        .position(|v| n <= v.max_n())
        .unwrap_or(ZIPGEMV_VARIANTS.len() - 1)
}

/// Blocks of a launch of variant `variant` over `m` rows: as few as one
/// wave holds, the row tiles dealt evenly (as the BF16 GEMV's).
fn blocks(gpu: &Gpu, variant: usize, m: usize) -> usize {
    gemv_grid(
        tiles_for(m, TILE_ROWS),
        gpu.zipgemv_blocks_per_wave(variant),
    )
}

/// How the GEMV deals out an `m × k` product with `n` activation rows, in
/// [`SplitK`]'s terms for reports: its units are single row tiles, none is
/// cut (one slice each), and `blocks` is the grid.
pub(crate) fn split(gpu: &Gpu, m: usize, k: usize, n: usize) -> SplitK {
    let units = tiles_for(m, TILE_ROWS);
    SplitK {
        work: WorkSplit {
            units: units as u32,
            col_tiles: tiles_for(k, TILE_COLS) as u32,
            blocks: blocks(gpu, zipgemv_variant(n), m).clamp(1, units.max(1)) as u32,
        },
        chunks: 1,
    }
}

/// The compressed GEMV on checked buffers (`x`: n × k, `out`: n × m).
/// Refuses, with the reason, the shapes the kernel does not take and an X
/// that does not start on a 16-byte boundary.
pub(crate) fn launch(
    gpu: &Gpu,
    stream: CUstream,
    w: &DeviceWeights,
    x: DevicePointer<bf16>,
    n: usize,
    out: RawOutput,
) -> Result<()> {
    let (m, k) = (w.rows(), w.cols());
    if let Some(why) = zipgemv_unsupported(m, k, n) {
        return Err(Error::Unsupported(format!(
            "compressed GEMV of {n} x {m} x {k}: {why}"
        )));
    }
    if !x.as_raw().is_multiple_of(16) {
        return Err(Error::Unsupported(format!(
            "compressed GEMV: the activations start at {:#x}, not on a 16-byte boundary",
            x.as_raw()
        )));
    }
    let variant = zipgemv_variant(n);
    let grid = u32::try_from(blocks(gpu, variant, m)).map_err(|_| {
        Error::Unsupported(format!("compressed GEMV: {m} rows need too many blocks"))
    })?;
    let RawOutput { y, y32, store } = out;
    // SAFETY: the matrix was validated before upload; the shape is one the
    // kernel takes (checked above) and the caller checked that `x` and the
    // output hold n × k and n × m elements; at most one block per row tile,
    // each of 32 · GEMV_WARPS threads with the dynamic shared memory
    // `prepare` allowed.
    unsafe {
        launch_kernel!(
            gpu.kernels().zipgemv[variant],
            grid,
            32 * GEMV_WARPS,
            zipgemv_smem_bytes(n) as u32,
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
                x,
                n as u32,
                y,
                y32,
                store
            )
        )
    }
}
