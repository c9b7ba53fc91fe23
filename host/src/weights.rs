//! A compressed matrix in device memory.

use cust::memory::{DeviceBuffer, DeviceCopy, DevicePointer};
use zipserv_kernels::format::{EXC_TABLE_LEN, device_entry};
use zipserv_kernels::sm90::EXCEPTION_TAIL_ENTRIES;

use crate::device::Gpu;
use crate::error::{CudaContext, Result};
use zipserv_format::CompressedMatrix;

/// Every section of a [`CompressedMatrix`], uploaded. Only matrices that
/// passed validation (every `CompressedMatrix` did) can be uploaded, so the
/// kernels can trust offsets and positions.
pub struct DeviceWeights {
    pub(crate) tiles: DeviceBuffer<u8>,
    pub(crate) exception_starts: DeviceBuffer<u32>,
    pub(crate) exceptions: DeviceBuffer<u16>,
    pub(crate) far_starts: DeviceBuffer<u32>,
    pub(crate) far_exponents: DeviceBuffer<u8>,
    pub(crate) exception_table: DeviceBuffer<u8>,
    pub(crate) base: u8,
    rows: usize,
    cols: usize,
    device_bytes: usize,
}

/// The exception entries as the kernels read them: positions turned into
/// fragment slots, the address the GEMM kernels patch
/// (`format::device_entry`), and [`EXCEPTION_TAIL_ENTRIES`] zero entries
/// after the last, so the Hopper kernel's 16-byte staging copies never
/// leave the array (`sm90::entry_window`).
fn device_exceptions(entries: &[u16]) -> Vec<u16> {
    let mut out: Vec<u16> = entries.iter().map(|&e| device_entry(e)).collect();
    out.resize(entries.len() + EXCEPTION_TAIL_ENTRIES, 0);
    out
}

impl DeviceWeights {
    /// Copies every section to the device and waits until the copies are
    /// complete, so that kernels on any stream may read them at once.
    pub fn upload(_gpu: &Gpu, matrix: &CompressedMatrix) -> Result<Self> {
        let p = matrix.parts();
        // Kernels read the table with the raw index; pad it so any index in
        // 0..32 is a valid address.
        let mut table = p.exception_table.clone();
        table.resize(EXC_TABLE_LEN + 1, 0);
        let weights = Self {
            tiles: upload(&p.tiles)?,
            exception_starts: upload(&p.exception_starts)?,
            exceptions: upload(&device_exceptions(&p.exceptions))?,
            far_starts: upload(&p.far_starts)?,
            far_exponents: upload(&p.far_exponents)?,
            exception_table: upload(&table)?,
            base: p.base,
            rows: matrix.rows(),
            cols: matrix.cols(),
            device_bytes: matrix.compressed_bytes(),
        };
        // A copy from pageable host memory returns once the data is staged,
        // possibly before it reaches the device, and it is ordered on the
        // legacy stream only, not before work on the device's non-blocking
        // stream: wait for it here, once per matrix.
        cust::context::CurrentContext::synchronize().cuda("cuCtxSynchronize")?;
        Ok(weights)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of compressed data a kernel streams (all sections).
    pub fn device_bytes(&self) -> usize {
        self.device_bytes
    }

    /// The sections' device pointers, for kernels outside this crate that
    /// read the format (the engine's embedding gather), in the order the
    /// format's kernels take them.
    pub fn sections(&self) -> Sections {
        Sections {
            tiles: self.tiles.as_device_ptr(),
            exception_starts: self.exception_starts.as_device_ptr(),
            exceptions: self.exceptions.as_device_ptr(),
            far_starts: self.far_starts.as_device_ptr(),
            far_exponents: self.far_exponents.as_device_ptr(),
            exception_table: self.exception_table.as_device_ptr(),
            base: self.base,
        }
    }
}

/// Device pointers of a [`DeviceWeights`]' sections; valid while it lives.
#[derive(Debug, Clone, Copy)]
pub struct Sections {
    pub tiles: DevicePointer<u8>,
    pub exception_starts: DevicePointer<u32>,
    pub exceptions: DevicePointer<u16>,
    pub far_starts: DevicePointer<u32>,
    pub far_exponents: DevicePointer<u8>,
    /// The exception table, padded so that any 5-bit index is readable.
    pub exception_table: DevicePointer<u8>,
    pub base: u8,
}

/// Uploads a slice; an empty section becomes a one-element buffer so that
/// every kernel argument is a valid pointer (its contents are never read).
fn upload<T: DeviceCopy + Default + Clone>(data: &[T]) -> Result<DeviceBuffer<T>> {
    if data.is_empty() {
        DeviceBuffer::from_slice(&[T::default()]).cuda("cuMemAlloc")
    } else {
        DeviceBuffer::from_slice(data).cuda("cuMemAlloc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zipserv_kernels::format::{EXC_INDEX_BITS, TILE_COLS, slot_position};

    /// Every entry keeps its index and names the same weight by slot; the
    /// tail is zeros (an empty list too gets it, so the array exists).
    #[test]
    fn device_exceptions_move_positions_to_slots_and_pad_the_tail() {
        for entries in [
            vec![],
            vec![
                3 << EXC_INDEX_BITS | 31,
                2047 << EXC_INDEX_BITS | 7,
                130 << EXC_INDEX_BITS,
            ],
        ] {
            let d = device_exceptions(&entries);
            assert_eq!(d.len(), entries.len() + EXCEPTION_TAIL_ENTRIES);
            for (&file, &dev) in entries.iter().zip(&d) {
                let mask = (1 << EXC_INDEX_BITS) - 1;
                assert_eq!(dev & mask, file & mask);
                let (row, col) = slot_position(usize::from(dev >> EXC_INDEX_BITS));
                assert_eq!(row * TILE_COLS + col, usize::from(file >> EXC_INDEX_BITS));
            }
            assert!(d[entries.len()..].iter().all(|&e| e == 0));
        }
    }
}
