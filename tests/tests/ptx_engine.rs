//! The engine's kernels are in the embedded PTX (a missing one would fail
//! only when `zipserv generate` first launches it). ptx.rs's checks (no
//! local memory, no spills, no out-of-line calls) cover them with the rest.

use zipserv_gpu::PTX;

const ENGINE_KERNELS: &[&str] = &[
    "engine_embed",
    "engine_embed_compressed",
    "engine_add_rmsnorm",
    "engine_rope_kv",
    "engine_attention",
    "engine_swiglu",
    "engine_select",
    "engine_advance",
];

#[test]
fn engine_kernels_are_exported() {
    for name in ENGINE_KERNELS {
        assert!(
            PTX.contains(&format!(".visible .entry {name}(")),
            "kernel {name} missing from the embedded PTX"
        );
    }
}
