//! Activations whose rows TMA cannot address (a row pitch that is not a
//! multiple of 16 bytes, i.e. K % 8 ≠ 0, or a misaligned buffer) are first
//! copied, element by element, into a buffer with a padded pitch. The pad
//! columns stay unwritten: the tensor map's width is K, so TMA never reads
//! them.

use crate::launch::nonzero;
use crate::ptx::{block_idx, grid_dim_x, thread_idx};
use crate::sm90::X_PITCH_THREADS;

/// `dst[r · pitch + c] = src[r · cols + c]` for every r < rows, c < cols.
///
/// # Safety
/// `src` holds rows × cols BF16, `dst` rows × pitch (pitch ≥ cols, the
/// product below 2^32); a one-dimensional grid of `X_PITCH_THREADS`-thread
/// blocks.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn zipserv_x_pitch(
    src: *const u16,
    rows: u32,
    cols: u32,
    dst: *mut u16,
    pitch: u32,
) {
    // Inputs may come from the kernel before (launch overlap).
    crate::ptx::start_after_prior_grids();
    let total = rows * cols;
    let stride = grid_dim_x() * X_PITCH_THREADS;
    let mut i = block_idx().0 * X_PITCH_THREADS + thread_idx();
    let cols_nz = nonzero(cols);
    while i < total {
        let (r, c) = (i / cols_nz, i % cols_nz);
        // SAFETY: r < rows and c < cols (the caller's sizes).
        unsafe { *dst.add((r * pitch + c) as usize) = *src.add(i as usize) };
        i += stride;
    }
}
