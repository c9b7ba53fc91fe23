//! The engine's kernels are in the embedded PTX (a missing one would fail
//! only when `zipserv generate` first launches it). ptx.rs's checks (no
//! local memory, no spills, no out-of-line calls) cover them with the rest.

use zipserv_gpu::PTX_IMAGES;
use zipserv_kernels::catalog::ENGINE;

#[test]
fn engine_kernels_are_exported() {
    for image in PTX_IMAGES {
        for name in ENGINE {
            assert!(
                image.ptx.contains(&format!(".visible .entry {name}(")),
                "kernel {name} missing from the embedded {} PTX",
                image.image.arch
            );
        }
    }
}
