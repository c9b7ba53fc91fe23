//! The compressed GEMV (`zipserv_zipgemv`, `GemmPath::Gemv`) against an
//! f64 CPU product: ragged and Llama-sized shapes, every batch from 1 to 16 (both variants),
//! weights with table and far exceptions, fresh random inputs, BF16 and f32
//! outputs poisoned with NaN beforehand; each row of a batch bit-identical
//! to the same row alone; the library's own choice taking it; and what it
//! must refuse.

use cust::memory::{CopyDestination, DeviceSlice};
use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::{
    DeviceWeights, Error, GemmOptions, GemmOutput, GemmPath, GemmWorkspace, Gpu, zipgemm_with,
};
use zipserv_tests::data::{activations, gemm_reference, relative_error, weight_like};
use zipserv_tests::{gpu_or_skip, upload};

/// (m, k, n): one tile, one weight, ragged rows and columns (k not a whole
/// tile, fewer column tiles than warps), both variants (n ≤ 8, n ≤ 16),
/// more row tiles than one wave of blocks, and the Llama-3-8B decode
/// shapes.
const FIXED_SHAPES: [(usize, usize, usize); 17] = [
    (16, 128, 1),
    (1, 8, 1),
    (33, 296, 5),
    (257, 136, 3),
    (100, 1000, 8),
    (9000, 256, 2),
    (4096, 4096, 1),
    (4096, 4096, 8),
    (6144, 4096, 2),
    (4096, 14336, 1),
    (28672, 4096, 7),
    (1024, 4096, 4),
    (1, 8, 9),
    (33, 296, 13),
    (9000, 256, 16),
    (4096, 4096, 16),
    (6144, 4096, 12),
];

/// One product on `path`, its output as f64 (`f32_out` picks the type).
fn run(
    gpu: &Gpu,
    w: &DeviceWeights,
    x: &DeviceSlice<bf16>,
    n: usize,
    path: GemmPath,
    f32_out: bool,
) -> Result<Vec<f64>, Error> {
    let m = w.rows();
    let options = GemmOptions {
        path,
        ..GemmOptions::default()
    };
    let mut ws = GemmWorkspace::default();
    let stream = gpu.stream();
    if f32_out {
        let mut d_y = upload(&vec![f32::NAN; n * m]);
        zipgemm_with(
            gpu,
            stream,
            w,
            x,
            n,
            GemmOutput::F32(&mut d_y),
            options,
            &mut ws,
        )?;
        gpu.synchronize()?;
        let mut y = vec![0f32; n * m];
        d_y.copy_to(&mut y[..]).unwrap();
        Ok(y.into_iter().map(f64::from).collect())
    } else {
        let mut d_y = upload(&vec![bf16::from_bits(0x7FC1); n * m]);
        zipgemm_with(
            gpu,
            stream,
            w,
            x,
            n,
            GemmOutput::Bf16(&mut d_y),
            options,
            &mut ws,
        )?;
        gpu.synchronize()?;
        let mut y = vec![bf16::ZERO; n * m];
        d_y.copy_to(&mut y[..]).unwrap();
        Ok(y.into_iter().map(|v| v.to_f64()).collect())
    }
}

fn compress(gpu: &Gpu, w: &[bf16], m: usize, k: usize) -> DeviceWeights {
    DeviceWeights::upload(gpu, &CompressedMatrix::encode(w, m, k).unwrap()).unwrap()
}

#[test]
fn zipgemv_matches_f64_reference() {
    let test = "zipgemv_matches_f64_reference";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let mut shapes = FIXED_SHAPES.to_vec();
    for n in 1..=16 {
        let m = 1 + (rng.next_u64() % 700) as usize;
        let k = 8 * (1 + (rng.next_u64() % 300) as usize);
        shapes.push((m, k, n));
    }
    for (m, k, n) in shapes {
        let w = weight_like(&mut rng, m * k, 0.05);
        let x = activations(&mut rng, n * k);
        let d_w = compress(&gpu, &w, m, k);
        let d_x = upload(&x);
        let want = gemm_reference(&w, &x, m, k, n);
        for (f32_out, bound) in [(false, 1e-2), (true, 1e-5)] {
            let case = format!("seed {seed}, (m, k, n) = ({m}, {k}, {n}), f32 out {f32_out}");
            let got = run(&gpu, &d_w, &d_x, n, GemmPath::Gemv, f32_out)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let err = relative_error(&got, &want).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert!(err <= bound, "{case}: relative error {err:.3e}");
        }
    }
}

/// The engine's batches give each sequence what it gets alone: row `i` of
/// an n-row product is bit-identical to the one-row product of row `i`.
#[test]
fn zipgemv_rows_of_a_batch_equal_each_row_alone() {
    let test = "zipgemv_rows_of_a_batch_equal_each_row_alone";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let (m, k) = (1000, 4096);
    let w = weight_like(&mut rng, m * k, 0.05);
    let d_w = compress(&gpu, &w, m, k);
    // Both variants: 8 rows, and 16 (rows 8..16 in the second n-tile).
    for n in [8, 16] {
        let x = activations(&mut rng, n * k);
        let batch = run(&gpu, &d_w, &upload(&x), n, GemmPath::Gemv, true).unwrap();
        for i in 0..n {
            let row = upload(&x[i * k..][..k]);
            let alone = run(&gpu, &d_w, &row, 1, GemmPath::Gemv, true).unwrap();
            let same = batch[i * m..][..m]
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "seed {seed}: row {i} of a batch of {n} differs from it alone"
            );
        }
    }
}

/// `GemmPath::Auto` takes the GEMV up to 16 rows where one wave of its
/// blocks holds the row tiles (the results are the GEMV's, bit for bit)
/// and not beyond, nor with launch overlap on; where X is not on a 16-byte
/// boundary it takes the `mma.sync` kernel, which is still right.
#[test]
fn library_choice_takes_the_zipgemv_for_decode_batches() {
    let test = "library_choice_takes_the_zipgemv_for_decode_batches";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let (m, k) = (512, 1024);
    assert_eq!(GemmPath::Auto.resolve(&gpu, m, k, 8), GemmPath::Gemv);
    assert_eq!(GemmPath::Auto.resolve(&gpu, m, k, 16), GemmPath::Gemv);
    assert_ne!(GemmPath::Auto.resolve(&gpu, m, k, 17), GemmPath::Gemv);
    assert_ne!(GemmPath::Auto.resolve(&gpu, 28672, 4096, 1), GemmPath::Gemv);
    let w = weight_like(&mut rng, m * k, 0.05);
    let d_w = compress(&gpu, &w, m, k);
    let n = 3;
    let x = activations(&mut rng, n * k + 1);
    let d_x = upload(&x);
    let auto = run(&gpu, &d_w, &d_x.index(..n * k), n, GemmPath::Auto, true).unwrap();
    let gemv = run(&gpu, &d_w, &d_x.index(..n * k), n, GemmPath::Gemv, true).unwrap();
    assert!(
        auto.iter()
            .zip(&gemv)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    // One element in: 2-byte aligned only.
    let shifted = d_x.index(1..);
    let got = run(&gpu, &d_w, &shifted, n, GemmPath::Auto, true).unwrap();
    let want = gemm_reference(&w, &x[1..], m, k, n);
    let err = relative_error(&got, &want).unwrap();
    assert!(
        err <= 1e-5,
        "seed {seed}: misaligned X through Auto: {err:.3e}"
    );
    let mut overlapped = Gpu::new(0).unwrap();
    if overlapped.set_launch_overlap(true).is_ok() {
        assert_ne!(GemmPath::Auto.resolve(&overlapped, m, k, 1), GemmPath::Gemv);
    }
    match run(&gpu, &d_w, &shifted, n, GemmPath::Gemv, true) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("16-byte"), "{msg}"),
        other => panic!("expected a refusal of the misaligned X, got {other:?}"),
    }
}

#[test]
fn zipgemv_refuses_what_it_cannot_run() {
    let test = "zipgemv_refuses_what_it_cannot_run";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    let unsupported = |r: Result<Vec<f64>, Error>, what: &str| match r {
        Err(Error::Unsupported(msg)) => assert!(msg.contains(what), "{msg}"),
        other => panic!("expected Unsupported ({what}), got {other:?}"),
    };
    let even = compress(&gpu, &vec![bf16::ONE; 64 * 64], 64, 64);
    let x = upload(&vec![bf16::ONE; 17 * 64]);
    unsupported(run(&gpu, &even, &x, 17, GemmPath::Gemv, true), "16");
    let ragged = compress(&gpu, &vec![bf16::ONE; 64 * 60], 64, 60);
    unsupported(
        run(&gpu, &ragged, &x, 1, GemmPath::Gemv, true),
        "multiple of 8",
    );
    // Short activations are a shape error, before any kernel.
    let r = run(&gpu, &even, &x.index(..63), 1, GemmPath::Gemv, true);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    gpu.synchronize().unwrap();
}
