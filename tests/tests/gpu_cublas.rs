//! cuBLAS `linear` (`Y = X·Wᵀ`) against an f64 CPU product, on random
//! shapes (odd ones included) and fresh random inputs, for bf16 and f32
//! outputs poisoned with NaN beforehand.

use cust::memory::{CopyDestination, DeviceBuffer};
use half::bf16;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::Error;
use zipserv_gpu::{BlasOutput, Cublas, Gpu};
use zipserv_tests::{cublas_or_skip, gpu_or_skip};

/// Shapes every run covers: tile-aligned, odd, one row, and a Llama layer.
const FIXED_SHAPES: [(usize, usize, usize); 5] = [
    (64, 64, 16),
    (1, 1, 1),
    (33, 17, 5),
    (257, 129, 3),
    (4096, 4096, 8),
];

fn random_bf16(rng: &mut SplitMix64, len: usize) -> Vec<bf16> {
    (0..len)
        .map(|_| bf16::from_f32(rng.next_f32_signed()))
        .collect()
}

/// Row-major `Y[N×M] = X[N×K] · W[M×K]ᵀ` in f64.
fn reference(w: &[bf16], x: &[bf16], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0f64; n * m];
    for r in 0..n {
        for c in 0..m {
            y[r * m + c] = (0..k)
                .map(|i| x[r * k + i].to_f64() * w[c * k + i].to_f64())
                .sum();
        }
    }
    y
}

/// Runs one GEMM with output type `Y` and returns ‖gpu − ref‖ / ‖ref‖.
fn relative_error<Y: BlasOutput + Copy>(
    gpu: &Gpu,
    blas: &Cublas<'_>,
    rng: &mut SplitMix64,
    (m, k, n): (usize, usize, usize),
    poison: Y,
    to_f64: impl Fn(Y) -> f64,
) -> f64 {
    let w = random_bf16(rng, m * k);
    let x = random_bf16(rng, n * k);
    let d_w = zipserv_tests::upload(&w);
    let d_x = zipserv_tests::upload(&x);
    let mut d_y = zipserv_tests::upload(&vec![poison; n * m]);
    // SAFETY: the buffers live until after the synchronize below.
    unsafe { blas.linear(gpu.stream(), &d_w, &d_x, &mut d_y, m, k, n) }.unwrap();
    gpu.synchronize().unwrap();
    let mut y = vec![poison; n * m];
    d_y.copy_to(&mut y[..]).unwrap();

    let want = reference(&w, &x, m, k, n);
    let (mut err2, mut ref2) = (0f64, 0f64);
    for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
        let got = to_f64(got);
        assert!(got.is_finite(), "output {i} is {got}: not written");
        err2 += (got - want).powi(2);
        ref2 += want.powi(2);
    }
    (err2 / ref2.max(f64::MIN_POSITIVE)).sqrt()
}

fn shapes(rng: &mut SplitMix64) -> Vec<(usize, usize, usize)> {
    let mut dim = |max: u64| 1 + (rng.next_u64() % max) as usize;
    let mut shapes = FIXED_SHAPES.to_vec();
    for _ in 0..6 {
        shapes.push((dim(400), dim(400), dim(48)));
    }
    shapes
}

#[test]
fn cublas_linear_matches_cpu_reference() {
    let test = "cublas_linear_matches_cpu_reference";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let Some(blas) = cublas_or_skip(&gpu, test) else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    for shape in shapes(&mut rng) {
        let bf16_err = relative_error(&gpu, &blas, &mut rng, shape, bf16::NAN, |y| y.to_f64());
        assert!(
            bf16_err <= 1e-2,
            "seed {seed}, (M, K, N) = {shape:?}, bf16 out: relative error {bf16_err:.3e}"
        );
        let f32_err = relative_error(&gpu, &blas, &mut rng, shape, f32::NAN, f64::from);
        assert!(
            f32_err <= 1e-5,
            "seed {seed}, (M, K, N) = {shape:?}, f32 out: relative error {f32_err:.3e}"
        );
    }
}

#[test]
fn cublas_linear_rejects_wrong_buffer_sizes() {
    let test = "cublas_linear_rejects_wrong_buffer_sizes";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let Some(blas) = cublas_or_skip(&gpu, test) else {
        return;
    };
    let (m, k, n) = (16, 32, 4);
    let w = DeviceBuffer::<bf16>::zeroed(m * k - 1).unwrap();
    let x = DeviceBuffer::<bf16>::zeroed(n * k).unwrap();
    let mut y = DeviceBuffer::<f32>::zeroed(n * m).unwrap();
    // SAFETY: the call is rejected before anything is enqueued.
    let result = unsafe { blas.linear(gpu.stream(), &w, &x, &mut y, m, k, n) };
    assert!(
        matches!(result, Err(Error::ShapeMismatch { .. })),
        "{result:?}"
    );
}
