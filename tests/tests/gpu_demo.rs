//! The toolchain end to end: Rust kernel → PTX → cust launch → checked result.

use zipserv_format::rng::fresh_seed;
use zipserv_gpu::run_demo_mma;
use zipserv_tests::gpu_or_skip;

#[test]
fn demo_mma_matches_cpu_reference() {
    let Some(gpu) = gpu_or_skip("demo_mma_matches_cpu_reference") else {
        return;
    };
    for _ in 0..4 {
        let seed = fresh_seed();
        let report = run_demo_mma(&gpu, seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            report.rel_err <= 1e-5,
            "seed {seed}: relative error {}",
            report.rel_err
        );
    }
}
