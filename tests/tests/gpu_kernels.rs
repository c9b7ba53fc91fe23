//! The compressed-matrix kernels on a real GPU: decompression bit-exact,
//! ZipGEMM against an f64 reference. Skipped (with a message) without a GPU.

use cust::memory::CopyDestination;
use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::{
    DeviceWeights, Fetch, GemmOutput, GemmPath, GemmWorkspace, Gpu, decompress, zipgemm,
};
use zipserv_tests::data::{
    activations, all_bit_patterns, gemm_reference, relative_error, weight_like,
};
use zipserv_tests::gpu_or_skip;

fn decompress_on_gpu(gpu: &Gpu, weights: &[bf16], rows: usize, cols: usize) -> Vec<bf16> {
    let matrix = CompressedMatrix::encode(weights, rows, cols).unwrap();
    let w = DeviceWeights::upload(gpu, &matrix).unwrap();
    // NaN poison: an element the kernel fails to write cannot match.
    let mut out = zipserv_tests::upload(&vec![bf16::from_bits(0x7FC1); rows * cols]);
    decompress(gpu, gpu.stream(), &w, &mut out).unwrap();
    gpu.synchronize().unwrap();
    let mut host = vec![bf16::ZERO; rows * cols];
    out.copy_to(&mut host[..]).unwrap();
    host
}

fn assert_bits_equal(got: &[bf16], want: &[bf16], what: &str) {
    if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i}: got {:#06x}, want {:#06x}",
            got[i].to_bits(),
            want[i].to_bits()
        );
    }
}

#[test]
fn decompress_is_bit_exact() {
    let Some(gpu) = gpu_or_skip("decompress_is_bit_exact") else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let shapes = [
        (1, 1),
        (1, 200),
        (15, 129),
        (16, 128),
        (17, 300),
        (100, 384),
        (257, 1000),
        (1024, 4096),
        (4096, 1544),
        // More tiles than one resident wave has warps (12288 and 7512 tiles
        // against 4224 warps on a 132-SM Hopper), so warps go round the
        // pipelined loop several times, the last of them ragged.
        (6144, 4096),
        (5000, 3000),
    ];
    for &(rows, cols) in &shapes {
        let w = weight_like(&mut rng, rows * cols, 0.05);
        let got = decompress_on_gpu(&gpu, &w, rows, cols);
        assert_bits_equal(&got, &w, &format!("seed {seed}, weight-like {rows}x{cols}"));
    }
    // Every bit pattern: NaN payloads, ±Inf, subnormals, ±0; mostly exceptions.
    for &(rows, cols) in &[(256, 256), (300, 513), (4096, 2200)] {
        let w = all_bit_patterns(&mut rng, rows * cols);
        let got = decompress_on_gpu(&gpu, &w, rows, cols);
        assert_bits_equal(
            &got,
            &w,
            &format!("seed {seed}, all patterns {rows}x{cols}"),
        );
    }
}

fn check_gemm(
    gpu: &Gpu,
    rng: &mut SplitMix64,
    seed: u64,
    (m, k, n): (usize, usize, usize),
    split_k: Option<u32>,
) {
    let w_host = weight_like(rng, m * k, 0.05);
    let x_host = activations(rng, n * k);
    let want = gemm_reference(&w_host, &x_host, m, k, n);
    let matrix = CompressedMatrix::encode(&w_host, m, k).unwrap();
    let w = DeviceWeights::upload(gpu, &matrix).unwrap();
    let x = zipserv_tests::upload(&x_host);
    let mut workspace = GemmWorkspace::default();
    let case = format!(
        "seed {seed}, M={m} K={k} N={n} split_k={split_k:?} path={:?} fetch={:?}",
        gpu.gemm_path(),
        gpu.gemm_fetch()
    );

    let mut y = zipserv_tests::upload(&vec![bf16::from_bits(0x7FC1); n * m]);
    zipgemm(
        gpu,
        gpu.stream(),
        &w,
        &x,
        n,
        GemmOutput::Bf16(&mut y),
        split_k,
        &mut workspace,
    )
    .unwrap();
    gpu.synchronize().unwrap_or_else(|e| panic!("{case}: {e}"));
    let mut got = vec![bf16::ZERO; n * m];
    y.copy_to(&mut got[..]).unwrap();
    let got: Vec<f64> = got.iter().map(|v| v.to_f64()).collect();
    let err = relative_error(&got, &want).unwrap_or_else(|e| panic!("{case}, bf16 out: {e}"));
    assert!(err <= 1e-2, "{case}, bf16 out: relative error {err:.3e}");

    let mut y32 = zipserv_tests::upload(&vec![f32::NAN; n * m]);
    zipgemm(
        gpu,
        gpu.stream(),
        &w,
        &x,
        n,
        GemmOutput::F32(&mut y32),
        split_k,
        &mut workspace,
    )
    .unwrap();
    gpu.synchronize().unwrap_or_else(|e| panic!("{case}: {e}"));
    let mut got32 = vec![0f32; n * m];
    y32.copy_to(&mut got32[..]).unwrap();
    let got32: Vec<f64> = got32.iter().map(|&v| f64::from(v)).collect();
    let err32 = relative_error(&got32, &want).unwrap_or_else(|e| panic!("{case}, f32 out: {e}"));
    assert!(err32 <= 1e-5, "{case}, f32 out: relative error {err32:.3e}");
    println!("{case}: relative error bf16 {err:.2e}, f32 {err32:.2e}");
}

#[test]
fn zipgemm_matches_f64_reference() {
    let Some(mut gpu) = gpu_or_skip("zipgemm_matches_f64_reference") else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let shapes = [
        (16, 128, 1),
        (1, 1, 1),
        (33, 300, 5),
        (100, 1000, 17),
        (257, 129, 33),
        (130, 200, 70),
        (1024, 4096, 8),
        (4096, 4096, 16),
        // More output tiles (2 chunks × 532 row groups) than one wave of
        // blocks: automatic shares span several units and cut some.
        (34000, 300, 40),
    ];
    for &shape in &shapes {
        // The `mma.sync` path pinned up to 16 rows (both n8 variants, late
        // and early fetch, where N allows them): the library's own choice
        // there may be the compressed GEMV (`gpu_zipgemv.rs`), which it
        // also runs.
        let runs: &[(GemmPath, Fetch)] = if shape.2 <= 16 {
            &[
                (GemmPath::MmaSync, Fetch::Late),
                (GemmPath::MmaSync, Fetch::Early),
                (GemmPath::Auto, Fetch::Auto),
            ]
        } else {
            &[(GemmPath::Auto, Fetch::Auto)]
        };
        for &(path, fetch) in runs {
            gpu.set_gemm_path(path);
            gpu.set_gemm_fetch(fetch);
            for split_k in [None, Some(1), Some(3)] {
                check_gemm(&gpu, &mut rng, seed, shape, split_k);
            }
        }
    }
}

/// With launch overlap on, each product of a chain `x[i+1] = W·x[i]`,
/// enqueued back to back with no synchronization, must still read the
/// finished output of the one before (its `griddepcontrol.wait`), for
/// both ZipGEMM kernels and with a decompression in the chain.
#[test]
fn overlapped_launches_see_the_previous_kernels_output() {
    let Some(mut gpu) = gpu_or_skip("overlapped_launches_see_the_previous_kernels_output") else {
        return;
    };
    if let Err(e) = gpu.set_launch_overlap(true) {
        eprintln!("overlapped_launches_see_the_previous_kernels_output: skipped: {e}");
        return;
    }
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let d = 1024;
    let w_host = weight_like(&mut rng, d * d, 0.02);
    let matrix = CompressedMatrix::encode(&w_host, d, d).unwrap();
    let w = DeviceWeights::upload(&gpu, &matrix).unwrap();
    let mut workspace = GemmWorkspace::default();
    const STEPS: usize = 6;
    for n in [1, 8, 16, 64] {
        let case = format!("seed {seed}, {d}x{d}, N={n}");
        let mut xs: Vec<_> = (0..=STEPS)
            .map(|i| {
                let init = if i == 0 {
                    activations(&mut rng, n * d)
                } else {
                    vec![bf16::from_bits(0x7FC1); n * d]
                };
                zipserv_tests::upload(&init)
            })
            .collect();
        let mut decoded = zipserv_tests::upload(&vec![bf16::from_bits(0x7FC1); d * d]);
        for i in 0..STEPS {
            let (done, rest) = xs.split_at_mut(i + 1);
            zipgemm(
                &gpu,
                gpu.stream(),
                &w,
                &done[i],
                n,
                GemmOutput::Bf16(&mut rest[0]),
                None,
                &mut workspace,
            )
            .unwrap_or_else(|e| panic!("{case}, step {i}: {e}"));
            if i == STEPS / 2 {
                decompress(&gpu, gpu.stream(), &w, &mut decoded)
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
            }
        }
        gpu.synchronize().unwrap_or_else(|e| panic!("{case}: {e}"));
        let mut got = vec![bf16::ZERO; d * d];
        decoded.copy_to(&mut got[..]).unwrap();
        assert_bits_equal(&got, &w_host, &format!("{case}, decompress in the chain"));
        let host: Vec<Vec<bf16>> = xs
            .iter()
            .map(|x| {
                let mut v = vec![bf16::ZERO; n * d];
                x.copy_to(&mut v[..]).unwrap();
                v
            })
            .collect();
        for i in 0..STEPS {
            let want = gemm_reference(&w_host, &host[i], d, d, n);
            let got: Vec<f64> = host[i + 1].iter().map(|v| v.to_f64()).collect();
            let err =
                relative_error(&got, &want).unwrap_or_else(|e| panic!("{case}, step {i}: {e}"));
            assert!(err <= 1e-2, "{case}, step {i}: relative error {err:.3e}");
        }
        println!("{case}: {STEPS} chained products and a decompression, overlapped, correct");
    }
}
