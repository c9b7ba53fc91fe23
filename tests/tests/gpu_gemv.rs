//! The BF16 GEMV (`zipserv_gemv_bf16`) against an f64 CPU product: ragged
//! and Llama-sized shapes, every batch from 1 to 8, fresh random inputs,
//! BF16 and f32 outputs poisoned with NaN beforehand; each row of a batch
//! bit-identical to the same row alone; and the shapes it must refuse.

use cust::memory::{CopyDestination, DeviceSlice};
use half::bf16;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::{Error, GemmOutput, Gpu, bf16_gemv};
use zipserv_tests::data::{activations, gemm_reference, relative_error, weight_like};
use zipserv_tests::{gpu_or_skip, upload};

/// (m, k, n): one block, ragged rows, a k that is not a whole column block
/// or step, every n, and the Llama-3-8B decode shapes.
const FIXED_SHAPES: [(usize, usize, usize); 10] = [
    (16, 32, 1),
    (1, 8, 1),
    (33, 24, 5),
    (257, 136, 3),
    (100, 520, 8),
    (4096, 4096, 1),
    (4096, 4096, 8),
    (6144, 4096, 2),
    (4096, 14336, 1),
    (28672, 4096, 7),
];

/// Runs one product and returns its output as f64 (`f32_out` picks the
/// output type).
fn run(
    gpu: &Gpu,
    w: &DeviceSlice<bf16>,
    x: &DeviceSlice<bf16>,
    (m, k, n): (usize, usize, usize),
    f32_out: bool,
) -> Vec<f64> {
    if f32_out {
        let mut d_y = upload(&vec![f32::NAN; n * m]);
        bf16_gemv(gpu, gpu.stream(), w, m, k, x, n, GemmOutput::F32(&mut d_y)).unwrap();
        gpu.synchronize().unwrap();
        let mut y = vec![0f32; n * m];
        d_y.copy_to(&mut y[..]).unwrap();
        y.into_iter().map(f64::from).collect()
    } else {
        let mut d_y = upload(&vec![bf16::NAN; n * m]);
        bf16_gemv(gpu, gpu.stream(), w, m, k, x, n, GemmOutput::Bf16(&mut d_y)).unwrap();
        gpu.synchronize().unwrap();
        let mut y = vec![bf16::ZERO; n * m];
        d_y.copy_to(&mut y[..]).unwrap();
        y.into_iter().map(|v| v.to_f64()).collect()
    }
}

#[test]
fn gemv_matches_f64_reference() {
    let test = "gemv_matches_f64_reference";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let mut shapes = FIXED_SHAPES.to_vec();
    for n in 1..=8 {
        let m = 1 + (rng.next_u64() % 700) as usize;
        let k = 8 * (1 + (rng.next_u64() % 300) as usize);
        shapes.push((m, k, n));
    }
    for (m, k, n) in shapes {
        let w = weight_like(&mut rng, m * k, 0.05);
        let x = activations(&mut rng, n * k);
        let (d_w, d_x) = (upload(&w), upload(&x));
        let want = gemm_reference(&w, &x, m, k, n);
        for (f32_out, bound) in [(false, 1e-2), (true, 1e-5)] {
            let got = run(&gpu, &d_w, &d_x, (m, k, n), f32_out);
            let err = relative_error(&got, &want)
                .unwrap_or_else(|e| panic!("seed {seed}, {m}x{k}x{n}, f32 {f32_out}: {e}"));
            assert!(
                err <= bound,
                "seed {seed}, (m, k, n) = ({m}, {k}, {n}), f32 out {f32_out}: relative error {err:.3e}"
            );
        }
    }
}

/// The engine's batches give each sequence what it gets alone: row `i` of an
/// n-row product is bit-identical to the one-row product of row `i`.
#[test]
fn gemv_rows_of_a_batch_equal_each_row_alone() {
    let test = "gemv_rows_of_a_batch_equal_each_row_alone";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let (m, k, n) = (1000, 4096, 8);
    let w = weight_like(&mut rng, m * k, 0.05);
    let x = activations(&mut rng, n * k);
    let d_w = upload(&w);
    let batch = run(&gpu, &d_w, &upload(&x), (m, k, n), true);
    for i in 0..n {
        let alone = run(&gpu, &d_w, &upload(&x[i * k..][..k]), (m, k, 1), true);
        let same = batch[i * m..][..m]
            .iter()
            .zip(&alone)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "seed {seed}: row {i} of the batch differs from it alone"
        );
    }
}

#[test]
fn gemv_refuses_what_it_cannot_run() {
    let test = "gemv_refuses_what_it_cannot_run";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let w = upload(&vec![bf16::ZERO; 64 * 64]);
    let x = upload(&vec![bf16::ZERO; 16 * 64]);
    let mut y = upload(&vec![0f32; 16 * 64]);
    let mut attempt = |w: &DeviceSlice<bf16>, x: &DeviceSlice<bf16>, m, k, n| {
        bf16_gemv(&gpu, gpu.stream(), w, m, k, x, n, GemmOutput::F32(&mut y))
    };
    let unsupported = |r: Result<(), Error>, what: &str| match r {
        Err(Error::Unsupported(msg)) => assert!(msg.contains(what), "{msg}"),
        other => panic!("expected Unsupported ({what}), got {other:?}"),
    };
    unsupported(attempt(&w, &x, 64, 64, 9), "8");
    unsupported(attempt(&w, &x, 64, 60, 1), "multiple of 8");
    unsupported(attempt(&w, &x, 64, 64, 0), "empty");
    // A slice one element in: its start is not 16-byte aligned.
    unsupported(attempt(&w, &x.index(1..), 64, 56, 1), "16-byte");
    assert!(matches!(
        attempt(&w, &x, 65, 64, 1),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        attempt(&w, &x, 64, 64, 17),
        Err(Error::Unsupported(_))
    ));
    let mut small = upload(&vec![0f32; 63]);
    let r = bf16_gemv(
        &gpu,
        gpu.stream(),
        &w,
        64,
        64,
        &x,
        1,
        GemmOutput::F32(&mut small),
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    gpu.synchronize().unwrap();
}
