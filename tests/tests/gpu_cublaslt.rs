//! cuBLASLt `linear` (`Y = X·Wᵀ`, BF16 in and out, FP32 accumulation)
//! against an f64 CPU product, with every algorithm its heuristics propose,
//! on fixed and random shapes (odd ones included) and fresh random inputs,
//! outputs poisoned with NaN beforehand.

use cust::memory::{CopyDestination, DeviceBuffer};
use half::bf16;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::Error;
use zipserv_tests::data::{activations, gemm_reference, relative_error};
use zipserv_tests::{cublaslt_or_skip, gpu_or_skip};

/// Tile-aligned, odd, one row, a decode-sized and a prefill-sized layer.
const FIXED_SHAPES: [(usize, usize, usize); 5] = [
    (64, 64, 16),
    (1, 1, 1),
    (33, 17, 5),
    (257, 129, 3),
    (4096, 4096, 8),
];

/// Algorithms tried per shape.
const ALGORITHMS: usize = 8;

#[test]
fn cublaslt_linear_matches_cpu_reference_with_every_algorithm() {
    let test = "cublaslt_linear_matches_cpu_reference_with_every_algorithm";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let Some(lt) = cublaslt_or_skip(&gpu, test) else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let mut shapes = FIXED_SHAPES.to_vec();
    for _ in 0..4 {
        let mut dim = |max: u64| 1 + (rng.next_u64() % max) as usize;
        shapes.push((dim(400), dim(400), dim(48)));
    }
    for (m, k, n) in shapes {
        let w = activations(&mut rng, m * k);
        let x = activations(&mut rng, n * k);
        let want = gemm_reference(&w, &x, m, k, n);
        let d_w = zipserv_tests::upload(&w);
        let d_x = zipserv_tests::upload(&x);
        let plan = lt.linear_plan(m, k, n).unwrap();
        let algorithms = plan.algorithms(ALGORITHMS).unwrap();
        assert!(
            !algorithms.is_empty(),
            "no cuBLASLt algorithm for {m}x{k}x{n}"
        );
        for (i, algorithm) in algorithms.iter().enumerate() {
            let mut d_y = zipserv_tests::upload(&vec![bf16::NAN; n * m]);
            // SAFETY: the buffers live until after the synchronize below.
            unsafe { plan.linear(gpu.stream(), algorithm, &d_w, &d_x, &mut d_y) }.unwrap();
            gpu.synchronize().unwrap();
            let mut y = vec![bf16::NAN; n * m];
            d_y.copy_to(&mut y[..]).unwrap();
            let got: Vec<f64> = y.iter().map(|v| v.to_f64()).collect();
            let err = relative_error(&got, &want)
                .unwrap_or_else(|e| panic!("seed {seed}, {m}x{k}x{n}, algorithm {i}: {e}"));
            assert!(
                err <= 1e-2,
                "seed {seed}, (M, K, N) = ({m}, {k}, {n}), algorithm {i}: relative error {err:.3e}"
            );
        }
    }
}

#[test]
fn cublaslt_linear_rejects_wrong_buffer_sizes() {
    let test = "cublaslt_linear_rejects_wrong_buffer_sizes";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let Some(lt) = cublaslt_or_skip(&gpu, test) else {
        return;
    };
    let (m, k, n) = (16, 32, 4);
    let plan = lt.linear_plan(m, k, n).unwrap();
    let algorithm = plan.algorithms(1).unwrap()[0];
    let w = DeviceBuffer::<bf16>::zeroed(m * k).unwrap();
    let x = DeviceBuffer::<bf16>::zeroed(n * k + 1).unwrap();
    let mut y = DeviceBuffer::<bf16>::zeroed(n * m).unwrap();
    // SAFETY: the call is rejected before anything is enqueued.
    let result = unsafe { plan.linear(gpu.stream(), &algorithm, &w, &x, &mut y) };
    assert!(
        matches!(result, Err(Error::ShapeMismatch { .. })),
        "{result:?}"
    );
    assert!(matches!(
        lt.linear_plan(0, k, n),
        Err(Error::Unsupported(_))
    ));
}
