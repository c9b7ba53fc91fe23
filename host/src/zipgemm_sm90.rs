//! Launch of the Hopper ZipGEMM (`zipserv_gemm_sm90_*`, `wgmma`): variant,
//! work split, activation tensor map and scratch, all checked before the
//! launch. Callers go through [`crate::zipgemm_with`] (shape checks there).

use cust::memory::{DeviceBuffer, DeviceCopy, DevicePointer};
use cust::module::Module;
use cust::sys::CUstream;
use half::bf16;
use zipserv_kernels::format::{TILE_COLS, tiles_for};
use zipserv_kernels::sm90::{
    BLOCK_THREADS, SmemLayout, UNIT_ROW_TILES, UNIT_ROWS, WGMMA_GEMM_VARIANTS, WgmmaGemmParams,
    WgmmaGemmVariant, X_PITCH_ELEMENTS, X_PITCH_THREADS, wgmma_variant_auto, wgmma_variant_for,
};
use zipserv_kernels::tile::MatrixView;

use crate::device::Gpu;
use crate::error::{CudaContext, Error, Result};
use crate::kernels::{GemmWorkspace, RawOutput, SplitK};
use crate::launch::{allow_shared_memory, launch_kernel, prefer_shared_carveout};
use crate::tensor_map;
use crate::weights::DeviceWeights;

/// The kernel's parameter block as a launch argument: the same bytes the
/// kernel reads (`#[repr(C)]`, defined once in `zipserv_kernels::sm90`).
#[repr(transparent)]
#[derive(Clone, Copy)]
struct Params(WgmmaGemmParams);

// SAFETY: plain data (device addresses and integers) with no host
// references; the kernel receives a byte copy.
unsafe impl DeviceCopy for Params {}

/// Which residency the Hopper ZipGEMM's variant is chosen for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WgmmaBlocks {
    /// The library's choice for the shape (`sm90::wgmma_variant_auto`):
    /// the narrowest variant covering N, the one-block n64 one for small
    /// products.
    #[default]
    Auto,
    /// Only variants of this many blocks per multiprocessor, where one
    /// covers N.
    Exactly(u32),
}

impl std::str::FromStr for WgmmaBlocks {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "1" => Ok(Self::Exactly(1)),
            "2" => Ok(Self::Exactly(2)),
            other => Err(Error::Unsupported(format!(
                "{}={other:?}: expected auto, 1 or 2",
                crate::device::WGMMA_BLOCKS_ENV
            ))),
        }
    }
}

/// Index into [`WGMMA_GEMM_VARIANTS`] of the variant `gpu` runs for an
/// `m × k` matrix and `n` activation rows.
pub fn variant_for(gpu: &Gpu, m: usize, k: usize, n: usize) -> usize {
    match gpu.wgmma_blocks() {
        WgmmaBlocks::Auto => wgmma_variant_auto(
            n,
            m,
            k,
            gpu.info().multiprocessors as usize,
            gpu.wgmma_blocks_per_sm(),
        ),
        WgmmaBlocks::Exactly(b) => wgmma_variant_for(n, Some(b)),
    }
}

/// Lets every Hopper variant use the dynamic shared memory its layout
/// needs, and returns how many blocks of each fit on one multiprocessor.
pub(crate) fn prepare(module: &Module) -> Result<[u32; WGMMA_GEMM_VARIANTS.len()]> {
    let mut blocks = [0u32; WGMMA_GEMM_VARIANTS.len()];
    for (variant, blocks) in WGMMA_GEMM_VARIANTS.iter().zip(&mut blocks) {
        let function = module
            .get_function(variant.name)
            .cuda("cuModuleGetFunction")?;
        let smem = SmemLayout::of(variant).request_bytes();
        if variant.blocks_per_sm > 1 {
            // Its blocks' layouts only fit side by side in the whole
            // carveout; leave no doubt about which configuration it wants.
            prefer_shared_carveout(function.to_raw(), variant.name, 100)?;
        }
        *blocks = allow_shared_memory(&function, smem, BLOCK_THREADS)?;
        if *blocks == 0 {
            return Err(Error::Unsupported(format!(
                "{} does not fit on a multiprocessor ({smem} bytes of shared memory)",
                variant.name
            )));
        }
    }
    Ok(blocks)
}

impl Gpu {
    /// The work split the Hopper ZipGEMM would use for an `m × k` matrix
    /// and `n` activation rows (`requested`: explicit K slices): one wave
    /// of resident blocks, whole K slices or stream-K shares as
    /// [`SplitK::choose`] decides, for units of `sm90::UNIT_ROWS` rows.
    pub fn wgmma_split(&self, m: usize, k: usize, n: usize, requested: Option<u32>) -> SplitK {
        let index = variant_for(self, m, k, n);
        let variant = &WGMMA_GEMM_VARIANTS[index];
        let chunks = n.div_ceil(variant.n_tile);
        let choose = |requested| {
            SplitK::choose_for_unit(
                UNIT_ROW_TILES as usize,
                m,
                k,
                chunks,
                self.wgmma_blocks_per_wave(index),
                requested,
            )
        };
        let split = choose(requested);
        if requested.is_some() {
            return split;
        }
        match halved_slices(&split, variant, self.info().multiprocessors as usize) {
            Some(slices) => choose(Some(slices)),
            None => split,
        }
    }
}

/// Half the K slices of an automatic `split` of the two-block n32 variant
/// when that gives each block a multiprocessor of its own and the same
/// column tiles per multiprocessor: whole slices of the minimum length
/// (fewer than `2 × MIN_TILES_PER_SLICE` tiles each), an even number of
/// them, and half as many blocks still filling `MIN_WAVE_FILL` of the
/// multiprocessors. Each multiprocessor then does the same work with half
/// the shares, so half their fixed costs (ramp, partial sums, the last
/// reducer's loads). Measured on an H200 (commit 62c0ae4, a K-split scan of
/// the four Llama-3-8B shapes at N = 1–256): 4096×4096 at N = 32 took 14.60
/// µs with 8 slices of 4 tiles (256 blocks) and 13.57 with 4 of 8 (128);
/// at N = 16 (the n16 variant) the 4 slices were slower, 14.5 against 12.9,
/// and 4096×14336 at N = 32 (8 slices of 14 tiles) 33.1 against 30.0, so
/// the rule is kept to where it was measured to win.
fn halved_slices(
    split: &SplitK,
    variant: &WgmmaGemmVariant,
    multiprocessors: usize,
) -> Option<u32> {
    use crate::kernels::{MIN_TILES_PER_SLICE, MIN_WAVE_FILL};
    let w = &split.work;
    let aligned = split.chunks == 1 && w.blocks.is_multiple_of(w.units);
    let slices = w.blocks / w.units;
    let short = (w.col_tiles as usize) < 2 * MIN_TILES_PER_SLICE * slices as usize;
    let halved = (w.units * (slices / 2)) as usize;
    let fits = halved <= multiprocessors && halved as f64 >= MIN_WAVE_FILL * multiprocessors as f64;
    (variant.n_tile == 32
        && variant.blocks_per_sm == 2
        && aligned
        && slices.is_multiple_of(2)
        && short
        && fits)
        .then_some(slices / 2)
}

/// The Hopper ZipGEMM of a checked shape (see [`crate::zipgemm_with`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch(
    gpu: &Gpu,
    stream: CUstream,
    w: &DeviceWeights,
    x: DevicePointer<bf16>,
    n: usize,
    out: RawOutput,
    split_k: Option<u32>,
    workspace: &mut GemmWorkspace,
) -> Result<()> {
    if !gpu.has_wgmma() {
        return Err(Error::Unsupported(format!(
            "the wgmma ZipGEMM needs a Hopper GPU (compute capability 9.0) running the sm_90a image; this device runs {}",
            gpu.ptx_image().image.arch
        )));
    }
    let (m, k) = (w.rows(), w.cols());
    let index = variant_for(gpu, m, k, n);
    let variant: &WgmmaGemmVariant = &WGMMA_GEMM_VARIANTS[index];
    let split = gpu.wgmma_split(m, k, n, split_k);
    let work = split.work;
    if u32::try_from(u64::from(work.units) * u64::from(work.col_tiles)).is_err() {
        return Err(Error::Unsupported(format!(
            "{n} x {m} x {k} exceeds the kernels' 32-bit indexing"
        )));
    }
    let grid = split.grid();

    // TMA reads rows whose pitch is a multiple of 16 bytes from a 16-byte
    // aligned address; anything else goes through a padded copy first.
    let x_ptr = x.as_raw();
    let (x_src, pitch) = if k.is_multiple_of(X_PITCH_ELEMENTS) && x_ptr.is_multiple_of(16) {
        (x_ptr, k)
    } else {
        let pitch = k.next_multiple_of(X_PITCH_ELEMENTS);
        (pitched_copy(gpu, stream, x, n, k, pitch, workspace)?, pitch)
    };
    let x_map = tensor_map::activations(x_src, n, k, 2 * pitch, variant.n_tile)?;

    let map_slots = {
        let need = grid as usize * 16;
        if workspace.map_slots.as_ref().is_none_or(|b| b.len() < need) {
            // SAFETY: each block writes its slot before reading it.
            workspace.map_slots =
                Some(unsafe { DeviceBuffer::uninitialized(need) }.cuda("cuMemAlloc")?);
        }
        workspace.map_slots.as_ref().unwrap().as_device_ptr()
    };
    let (partial, counters) = if split.cuts_units() {
        let slot = UNIT_ROWS as usize * variant.n_tile;
        let counters = work.units as usize * split.chunks as usize;
        workspace.reserve(2 * grid as usize * slot, counters)?
    } else {
        (DevicePointer::null(), DevicePointer::null())
    };

    let params = Params(WgmmaGemmParams {
        x_map,
        matrix: MatrixView {
            tiles: w.tiles.as_device_ptr().as_raw() as *const u8,
            exception_starts: w.exception_starts.as_device_ptr().as_raw() as *const u32,
            exceptions: w.exceptions.as_device_ptr().as_raw() as *const u16,
            far_starts: w.far_starts.as_device_ptr().as_raw() as *const u32,
            far_exponents: w.far_exponents.as_device_ptr().as_raw() as *const u8,
            exception_table: w.exception_table.as_device_ptr().as_raw() as *const u8,
            base: u32::from(w.base),
            rows: m as u32,
            cols: k as u32,
            col_tiles: tiles_for(k, TILE_COLS) as u32,
        },
        y: out.y.as_raw() as *mut u16,
        y32: out.y32.as_raw() as *mut f32,
        partial: partial.as_raw() as *mut f32,
        counters: counters.as_raw() as *mut u32,
        map_slots: map_slots.as_raw() as *mut u64,
        work,
        n: n as u32,
        chunks: split.chunks,
        store: out.store,
    });
    let Some((kernels, _)) = gpu.kernels().wgmma else {
        unreachable!("has_wgmma was checked");
    };
    let smem = SmemLayout::of(variant).request_bytes() as u32;
    // SAFETY: shapes and buffer sizes were checked (here and by the
    // caller); the matrix was validated before upload; the tensor map
    // describes `x_src` (n rows of k BF16, `pitch` apart); the workspace
    // holds a map slot per block and, when shares cut units, two
    // partial-sum slots per block and a zeroed counter per unit and chunk;
    // block size and dynamic shared memory match the kernel's layout.
    unsafe {
        launch_kernel!(
            kernels[index],
            grid,
            BLOCK_THREADS,
            smem,
            stream,
            gpu.launch_order(),
            (params)
        )
    }
}

/// Copies `x` (n × k) into the workspace's pitched buffer with rows `pitch`
/// elements apart, on `stream`, and returns its device address.
fn pitched_copy(
    gpu: &Gpu,
    stream: CUstream,
    x: DevicePointer<bf16>,
    n: usize,
    k: usize,
    pitch: usize,
    workspace: &mut GemmWorkspace,
) -> Result<u64> {
    let need = n * pitch;
    if workspace.x_pitched.as_ref().is_none_or(|b| b.len() < need) {
        // SAFETY: the kernel writes every element TMA reads (the pad
        // columns lie outside the tensor map and are never read).
        workspace.x_pitched =
            Some(unsafe { DeviceBuffer::uninitialized(need) }.cuda("cuMemAlloc")?);
    }
    let dst = workspace.x_pitched.as_ref().unwrap().as_device_ptr();
    let blocks = (n * k)
        .div_ceil(X_PITCH_THREADS as usize)
        .clamp(1, gpu.info().multiprocessors as usize * 8) as u32;
    let Some((_, x_pitch)) = gpu.kernels().wgmma else {
        unreachable!("has_wgmma was checked");
    };
    // SAFETY: `x` holds n × k elements (checked by the caller), `dst`
    // n × pitch; n × pitch < 2^32 (checked by the caller).
    unsafe {
        launch_kernel!(
            x_pitch,
            blocks,
            X_PITCH_THREADS,
            0,
            stream,
            gpu.launch_order(),
            (x, n as u32, k as u32, dst, pitch as u32)
        )
    }?;
    Ok(dst.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The automatic split on an H200 (132 multiprocessors, two blocks of
    /// the variant each), then the halving rule.
    fn halved_on_h200(m: usize, k: usize, n: usize) -> Option<u32> {
        let variant = &WGMMA_GEMM_VARIANTS[wgmma_variant_for(n, Some(2))];
        let chunks = n.div_ceil(variant.n_tile);
        let split = SplitK::choose_for_unit(UNIT_ROW_TILES as usize, m, k, chunks, 264, None);
        halved_slices(&split, variant, 132)
    }

    #[test]
    fn only_short_even_slices_of_the_n32_variant_are_halved() {
        // 8 slices of 4 tiles, 256 blocks → 4 slices, 128 blocks.
        assert_eq!(halved_on_h200(4096, 4096, 32), Some(4));
        assert_eq!(halved_on_h200(4096, 4096, 17), Some(4));
        // The n16 variant: measured slower halved.
        assert_eq!(halved_on_h200(4096, 4096, 16), None);
        // 5 slices (odd); 8 slices of 14 tiles (long); stream-K shares.
        assert_eq!(halved_on_h200(6144, 4096, 32), None);
        assert_eq!(halved_on_h200(4096, 14336, 32), None);
        assert_eq!(halved_on_h200(28672, 4096, 32), None);
        // Halved, too few blocks to fill the multiprocessors.
        assert_eq!(halved_on_h200(2048, 4096, 32), None);
    }
}
