//! Keeping the weights out of L2 between iterations.
//!
//! Decode-time GEMM streams its weights from HBM once per call. Timing the
//! same buffers in a loop would let the next iteration find part of them in
//! L2 and report a speed no model sees. We do not flush L2 (that needs an
//! extra kernel between iterations, whose tail overlaps the timed one);
//! we *rotate*: keep several copies of every buffer an iteration touches
//! and use copy `i % copies` in iteration `i`, with enough copies that the
//! whole rotated set is at least twice the L2. By the time a copy comes
//! round again, at least one L2's worth of other data has passed through.

use cust::memory::{DeviceBuffer, DeviceCopy};

use zipserv_gpu::error::{CudaContext, Result};

/// How many copies of a `bytes_per_copy` buffer set to rotate so that the
/// rotated set is at least `2 × l2_bytes` (at least one copy; a single
/// copy already that large rotates with itself).
pub fn rotation_copies(l2_bytes: usize, bytes_per_copy: usize) -> usize {
    if bytes_per_copy == 0 {
        return 1;
    }
    l2_bytes.saturating_mul(2).div_ceil(bytes_per_copy).max(1)
}

/// Uploads `copies` device copies of `host` (at least one).
pub fn upload_rotated<T: DeviceCopy>(host: &[T], copies: usize) -> Result<Vec<DeviceBuffer<T>>> {
    (0..copies.max(1))
        .map(|_| DeviceBuffer::from_slice(host).cuda("cuMemAlloc/cuMemcpyHtoD"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn rotated_set_covers_twice_l2() {
        // H100 (50 MiB L2): 4096x4096 bf16 is 32 MiB, 4 copies = 128 MiB.
        assert_eq!(rotation_copies(50 * MIB, 32 * MIB), 4);
        // Exactly 2x L2 needs no extra copy.
        assert_eq!(rotation_copies(50 * MIB, 25 * MIB), 4);
        assert_eq!(rotation_copies(50 * MIB, 100 * MIB), 1);
        // 28672x4096 bf16 (224 MiB) is already past 2x L2.
        assert_eq!(rotation_copies(60 * MIB, 224 * MIB), 1);
        for (l2, bytes) in [(50 * MIB, 3 * MIB + 17), (60 * MIB, 7), (1, 1)] {
            let copies = rotation_copies(l2, bytes);
            assert!(copies * bytes >= 2 * l2);
            assert!((copies - 1) * bytes < 2 * l2);
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert_eq!(rotation_copies(50 * MIB, 0), 1);
        assert_eq!(rotation_copies(0, 10), 1);
        assert_eq!(rotation_copies(usize::MAX, 1), usize::MAX);
    }
}
