//! The Hopper ZipGEMM (`wgmma`, sm_90a image) on a real GPU: the one-tile
//! `wgmma` proof, then the kernel against an f64 reference and against the
//! `mma.sync` kernel on random and ragged shapes, N from 1 to 300, every
//! split, outputs poisoned with NaN. Skipped (with a message) without a
//! GPU, and on GPUs that are not Hopper — unless `ZIPSERV_REQUIRE_GPU=1`
//! on a compute-capability-9.0 card, where a missing Hopper image fails.

use cust::launch;
use cust::memory::{CopyDestination, DeviceBuffer};
use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::zipgemm_sm90::variant_for;
use zipserv_gpu::{
    DeviceWeights, GemmOptions, GemmOutput, GemmPath, GemmWorkspace, Gpu, WgmmaBlocks, zipgemm_with,
};
use zipserv_kernels::catalog::DEMO_WGMMA;
use zipserv_kernels::sm90::WGMMA_GEMM_VARIANTS;
use zipserv_tests::data::{activations, relative_error, weight_like};
use zipserv_tests::{REQUIRE_GPU_ENV, gpu_or_skip};

/// A device that runs the Hopper kernels, or `None` (reported) where there
/// is none.
fn hopper_or_skip(test: &str) -> Option<Gpu> {
    let gpu = gpu_or_skip(test)?;
    if gpu.has_wgmma() {
        return Some(gpu);
    }
    let info = gpu.info();
    let required = std::env::var(REQUIRE_GPU_ENV).as_deref() == Ok("1");
    if required && info.compute_capability == (9, 0) {
        panic!(
            "{test}: {} is Hopper but runs the {} image",
            info.name,
            gpu.ptx_image().image.arch
        );
    }
    println!(
        "{test}: skipped: {} (compute capability {}.{}) has no wgmma",
        info.name, info.compute_capability.0, info.compute_capability.1
    );
    None
}

#[test]
fn demo_wgmma_matches_cpu_reference() {
    let Some(gpu) = hopper_or_skip("demo_wgmma_matches_cpu_reference") else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let a = activations(&mut rng, 64 * 64);
    let b = activations(&mut rng, 64 * 64);
    let d_a = zipserv_tests::upload(&a);
    let d_b = zipserv_tests::upload(&b);
    let d_d = zipserv_tests::upload(&[f32::NAN; 64 * 64]);
    let function = gpu.module().get_function(DEMO_WGMMA).unwrap();
    let stream = gpu.stream();
    // SAFETY: one block of 128 threads; buffer sizes match the kernel's
    // contract (64 × 64 each).
    unsafe {
        launch!(function<<<1, 128, 0, stream>>>(
            d_a.as_device_ptr(),
            d_b.as_device_ptr(),
            d_d.as_device_ptr()
        ))
    }
    .unwrap();
    gpu.synchronize().unwrap();
    let mut d = vec![0f32; 64 * 64];
    d_d.copy_to(&mut d[..]).unwrap();
    let want: Vec<f64> = (0..64 * 64)
        .map(|i| {
            let (m, n) = (i / 64, i % 64);
            (0..64)
                .map(|k| a[m * 64 + k].to_f64() * b[n * 64 + k].to_f64())
                .sum()
        })
        .collect();
    let got: Vec<f64> = d.iter().map(|&v| f64::from(v)).collect();
    let err = relative_error(&got, &want).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    if err > 1e-5 {
        panic!(
            "seed {seed}: relative error {err:.3e}; {}",
            mismatches(&got, &want, 64, 64)
        );
    }
    println!("demo_wgmma: seed {seed}, relative error {err:.2e}");
}

/// `Y[n×m] = X[n×k] · W[m×k]ᵀ` in f64, on every core.
fn reference(w: &[f64], x: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0f64; n * m];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let rows_per = m.div_ceil(threads).max(1);
    // Computed as Yᵀ (m × n) so each thread owns whole rows of W.
    let mut yt = vec![0f64; m * n];
    std::thread::scope(|s| {
        for (c, chunk) in yt.chunks_mut(rows_per * n).enumerate() {
            s.spawn(move || {
                for (r, out) in chunk.chunks_mut(n).enumerate() {
                    let wr = &w[(c * rows_per + r) * k..][..k];
                    for (i, o) in out.iter_mut().enumerate() {
                        let xr = &x[i * k..][..k];
                        *o = wr.iter().zip(xr).map(|(a, b)| a * b).sum();
                    }
                }
            });
        }
    });
    for j in 0..m {
        for i in 0..n {
            y[i * m + j] = yt[j * n + i];
        }
    }
    y
}

/// The first few outputs far from their reference, as (row of Y, column)
/// pairs, so a layout error shows its pattern in the failure message.
fn mismatches(got: &[f64], want: &[f64], rows: usize, cols: usize) -> String {
    let scale = want.iter().map(|v| v.abs()).fold(0f64, f64::max).max(1e-30);
    let bad: Vec<usize> = (0..rows * cols)
        .filter(|&i| !(got[i].is_finite() && (got[i] - want[i]).abs() <= 1e-2 * scale))
        .collect();
    let shown: Vec<String> = bad
        .iter()
        .take(12)
        .map(|&i| {
            format!(
                "[{}][{}] got {:.4} want {:.4}",
                i / cols,
                i % cols,
                got[i],
                want[i]
            )
        })
        .collect();
    format!(
        "{} of {} outputs off: {}",
        bad.len(),
        rows * cols,
        shown.join(", ")
    )
}

/// One matrix and its activations, uploaded, with the f64 reference.
struct Case<'a> {
    m: usize,
    n: usize,
    w: &'a DeviceWeights,
    x: DeviceBuffer<bf16>,
    want: Vec<f64>,
}

/// Fresh trained-like weights `m × k`, compressed and uploaded, and their
/// values in f64 for the reference.
fn weights(gpu: &Gpu, rng: &mut SplitMix64, m: usize, k: usize) -> (DeviceWeights, Vec<f64>) {
    let w_host = weight_like(rng, m * k, 0.05);
    let matrix = CompressedMatrix::encode(&w_host, m, k).unwrap();
    let w = DeviceWeights::upload(gpu, &matrix).unwrap();
    (w, w_host.iter().map(|v| v.to_f64()).collect())
}

/// Fresh activations (`n × k`) for `w` and the f64 product they must give.
fn case<'a>(
    rng: &mut SplitMix64,
    w: &'a DeviceWeights,
    w64: &[f64],
    m: usize,
    k: usize,
    n: usize,
) -> Case<'a> {
    let x_host = activations(rng, n * k);
    let x64: Vec<f64> = x_host.iter().map(|v| v.to_f64()).collect();
    Case {
        m,
        n,
        w,
        x: zipserv_tests::upload(&x_host),
        want: reference(w64, &x64, m, k, n),
    }
}

/// The first index where `bf16_out` is not `f32_out` rounded to BF16
/// (nearest even, as the kernel's `cvt.rn`), NaNs included.
fn first_unrounded(bf16_out: &[f64], f32_out: &[f64]) -> Option<usize> {
    (0..f32_out.len()).find(|&i| {
        let want = bf16::from_f32(f32_out[i] as f32).to_bits();
        bf16_out.get(i).map(|&v| bf16::from_f64(v).to_bits()) != Some(want)
    })
}

/// Lists every failing case, then fails if there was one: one run shows
/// the whole pattern of a layout error.
fn assert_no_failures(failures: &[String]) {
    for f in failures {
        println!("FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} failing cases (listed above)",
        failures.len()
    );
}

fn run(
    gpu: &Gpu,
    c: &Case,
    path: GemmPath,
    split_k: Option<u32>,
    bf16_out: bool,
    ws: &mut GemmWorkspace,
) -> Vec<f64> {
    run_with(gpu, c, path, split_k, bf16_out, false, ws)
}

fn run_with(
    gpu: &Gpu,
    c: &Case,
    path: GemmPath,
    split_k: Option<u32>,
    bf16_out: bool,
    late_first_count: bool,
    ws: &mut GemmWorkspace,
) -> Vec<f64> {
    let options = GemmOptions {
        split_k,
        path,
        late_first_count,
    };
    let len = c.n * c.m;
    if bf16_out {
        // NaN poison: an element the kernel fails to write cannot match.
        let mut y = zipserv_tests::upload(&vec![bf16::from_bits(0x7FC1); len]);
        zipgemm_with(
            gpu,
            gpu.stream(),
            c.w,
            &c.x,
            c.n,
            GemmOutput::Bf16(&mut y),
            options,
            ws,
        )
        .unwrap();
        gpu.synchronize().unwrap();
        let mut host = vec![bf16::ZERO; len];
        y.copy_to(&mut host[..]).unwrap();
        host.iter().map(|v| v.to_f64()).collect()
    } else {
        let mut y = zipserv_tests::upload(&vec![f32::NAN; len]);
        zipgemm_with(
            gpu,
            gpu.stream(),
            c.w,
            &c.x,
            c.n,
            GemmOutput::F32(&mut y),
            options,
            ws,
        )
        .unwrap();
        gpu.synchronize().unwrap();
        let mut host = vec![0f32; len];
        y.copy_to(&mut host[..]).unwrap();
        host.iter().map(|&v| f64::from(v)).collect()
    }
}

#[test]
fn zipgemm_sm90_matches_f64_reference_and_mma_sync() {
    let Some(mut gpu) = hopper_or_skip("zipgemm_sm90_matches_f64_reference_and_mma_sync") else {
        return;
    };
    let seed = fresh_seed();
    println!("seed {seed}");
    let mut rng = SplitMix64::new(seed);
    let all_n = [1usize, 7, 8, 16, 24, 32, 33, 64, 100, 128, 256, 300];
    // (M, K): tiny, ragged in every dimension (K % 8 ≠ 0 goes through the
    // pitched copy), a K tail shorter than a TMA box, a square layer, and
    // more units than one wave of blocks.
    let shapes = [
        (1usize, 1usize),
        (65, 300),
        (130, 200),
        (1000, 4104),
        (257, 1000),
        (4096, 4096),
        (34000, 300),
    ];
    let mut ws = GemmWorkspace::default();
    let mut ws_mma = GemmWorkspace::default();
    let mut failures = Vec::new();
    for &(m, k) in &shapes {
        let (w, w64) = weights(&gpu, &mut rng, m, k);
        for &n in &all_n {
            let c = case(&mut rng, &w, &w64, m, k, n);
            let mma = run(&gpu, &c, GemmPath::MmaSync, None, false, &mut ws_mma);
            let mut worst = (0f64, 0f64, 0f64);
            // Every variant covering N, of each residency.
            let residencies = [
                WgmmaBlocks::Auto,
                WgmmaBlocks::Exactly(2),
                WgmmaBlocks::Exactly(1),
            ];
            let variants: Vec<usize> = residencies
                .iter()
                .map(|&r| {
                    gpu.set_wgmma_blocks(r);
                    variant_for(&gpu, m, k, n)
                })
                .collect();
            for (i, &residency) in residencies.iter().enumerate() {
                if variants[..i].contains(&variants[i]) {
                    continue;
                }
                gpu.set_wgmma_blocks(residency);
                for split_k in [None, Some(1), Some(3)] {
                    let split = gpu.wgmma_split(m, k, n, split_k);
                    let variant = WGMMA_GEMM_VARIANTS[variants[i]].name;
                    let case = format!(
                        "seed {seed}, M={m} K={k} N={n} {variant} split_k={split_k:?} ({split:?})"
                    );
                    let mut got_bf16 = Vec::new();
                    for bf16_out in [true, false] {
                        let got = run(&gpu, &c, GemmPath::Wgmma, split_k, bf16_out, &mut ws);
                        let (what, tol) = if bf16_out {
                            ("bf16", 1e-2)
                        } else {
                            ("f32", 1e-5)
                        };
                        // Every case runs; failures are listed at the end, so
                        // one run shows the whole pattern of a layout error.
                        let err = match relative_error(&got, &c.want) {
                            Ok(err) => err,
                            Err(e) => {
                                failures.push(format!(
                                    "{case}, {what} out: {e}; {}",
                                    mismatches(&got, &c.want, n, m)
                                ));
                                continue;
                            }
                        };
                        if err > tol {
                            failures.push(format!(
                                "{case}, {what} out: relative error {err:.3e}; {}",
                                mismatches(&got, &c.want, n, m)
                            ));
                        }
                        if bf16_out {
                            worst.0 = worst.0.max(err);
                            got_bf16 = got;
                        } else {
                            // The same sums: the BF16 store (staged or
                            // direct) must be the f32 result rounded, bit
                            // for bit, in every place.
                            if let Some(at) = first_unrounded(&got_bf16, &got) {
                                failures.push(format!(
                                    "{case}: bf16 out at {at} is not the f32 out rounded"
                                ));
                            }
                            worst.1 = worst.1.max(err);
                            // Same inputs, f32 sums in another order.
                            let diff = relative_error(&got, &mma).unwrap_or(f64::INFINITY);
                            if diff > 1e-5 {
                                failures
                                    .push(format!("{case}: differs from mma.sync by {diff:.3e}"));
                            }
                            worst.2 = worst.2.max(diff);
                        }
                    }
                }
            }
            println!(
                "M={m} K={k} N={n}: relative error bf16 {:.2e}, f32 {:.2e}; vs mma.sync {:.2e}",
                worst.0, worst.1, worst.2
            );
        }
    }
    assert_no_failures(&failures);
}

/// The reduction a share makes after its last segment when its first
/// segment, a unit's tail counted late by the finisher warp, completed that
/// unit: rare on its own (the unit's head is another share's last
/// segment), made the common case here by `late_first_count`.
#[test]
fn deferred_first_arrival_reduction_matches_f64_reference() {
    let Some(mut gpu) = hopper_or_skip("deferred_first_arrival_reduction_matches_f64_reference")
    else {
        return;
    };
    let seed = fresh_seed();
    println!("seed {seed}");
    let mut rng = SplitMix64::new(seed);
    // (M, K, N, split, residency): the attention projection at N = 64 in
    // both residencies, ragged shapes, an explicit split (whole slices of a
    // unit: no share defers, the other paths still checked).
    let cases = [
        (6144usize, 4096usize, 64usize, None, WgmmaBlocks::Exactly(1)),
        (6144, 4096, 48, None, WgmmaBlocks::Exactly(2)),
        (1000, 4104, 48, Some(3), WgmmaBlocks::Exactly(2)),
        (34000, 300, 100, None, WgmmaBlocks::Exactly(1)),
        (2900, 1500, 256, None, WgmmaBlocks::Auto),
    ];
    let mut ws = GemmWorkspace::default();
    let mut failures = Vec::new();
    let mut total_deferring = 0;
    for &(m, k, n, split_k, residency) in &cases {
        gpu.set_wgmma_blocks(residency);
        let split = gpu.wgmma_split(m, k, n, split_k);
        let deferring = (0..split.work.blocks)
            .filter(|&b| split.work.defers_first_arrival(b))
            .count();
        total_deferring += deferring;
        let (w, w64) = weights(&gpu, &mut rng, m, k);
        let c = case(&mut rng, &w, &w64, m, k, n);
        for bf16_out in [true, false] {
            let got = run_with(&gpu, &c, GemmPath::Wgmma, split_k, bf16_out, true, &mut ws);
            let tol = if bf16_out { 1e-2 } else { 1e-5 };
            let case =
                format!("seed {seed}, M={m} K={k} N={n} split_k={split_k:?}, bf16 out {bf16_out}");
            match relative_error(&got, &c.want) {
                Ok(err) if err <= tol => {
                    println!("{case}: {deferring} deferring shares, relative error {err:.2e}")
                }
                Ok(err) => failures.push(format!(
                    "{case}: relative error {err:.3e}; {}",
                    mismatches(&got, &c.want, n, m)
                )),
                Err(e) => {
                    failures.push(format!("{case}: {e}; {}", mismatches(&got, &c.want, n, m)))
                }
            }
        }
    }
    gpu.set_wgmma_blocks(WgmmaBlocks::Auto);
    assert!(total_deferring > 0, "no case exercised a deferred arrival");
    assert_no_failures(&failures);
}

/// BF16 results into a slice of a larger buffer: at an offset of one
/// element `Y`'s columns are not 16-byte aligned, so the store stage
/// writes element by element instead of staging (`unit_store`); at an
/// offset of 8 it stages. Either way the result is right and the guard
/// elements on both sides keep their poison.
#[test]
fn bf16_output_into_an_offset_slice_matches_and_stays_inside() {
    let Some(gpu) = hopper_or_skip("bf16_output_into_an_offset_slice_matches_and_stays_inside")
    else {
        return;
    };
    let seed = fresh_seed();
    println!("seed {seed}");
    let mut rng = SplitMix64::new(seed);
    let mut ws = GemmWorkspace::default();
    let mut failures = Vec::new();
    const GUARD: usize = 64;
    let poison = bf16::from_bits(0x7FC1);
    for &(m, k, n) in &[
        (1000usize, 4104usize, 48usize),
        (4096, 4096, 256),
        (136, 520, 100),
    ] {
        let (w, w64) = weights(&gpu, &mut rng, m, k);
        let c = case(&mut rng, &w, &w64, m, k, n);
        for offset in [1usize, 8] {
            let len = n * m;
            let buf = zipserv_tests::upload(&vec![poison; offset + len + GUARD]);
            let mut y = buf.index(offset..offset + len);
            zipgemm_with(
                &gpu,
                gpu.stream(),
                c.w,
                &c.x,
                n,
                GemmOutput::Bf16(&mut y),
                GemmOptions {
                    path: GemmPath::Wgmma,
                    ..GemmOptions::default()
                },
                &mut ws,
            )
            .unwrap();
            gpu.synchronize().unwrap();
            let mut host = vec![bf16::ZERO; buf.len()];
            buf.copy_to(&mut host[..]).unwrap();
            let case = format!("seed {seed}, M={m} K={k} N={n}, offset {offset}");
            let outside = host[..offset]
                .iter()
                .chain(&host[offset + len..])
                .filter(|v| v.to_bits() != poison.to_bits())
                .count();
            if outside > 0 {
                failures.push(format!("{case}: {outside} elements written outside"));
            }
            let got: Vec<f64> = host[offset..offset + len]
                .iter()
                .map(|v| v.to_f64())
                .collect();
            match relative_error(&got, &c.want) {
                Ok(err) if err <= 1e-2 => println!("{case}: relative error {err:.2e}"),
                Ok(err) => failures.push(format!("{case}: relative error {err:.3e}")),
                Err(e) => failures.push(format!("{case}: {e}")),
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn wgmma_path_is_refused_without_the_hopper_image_and_shapes_are_checked() {
    let Some(gpu) = gpu_or_skip("wgmma_path_is_refused_without_the_hopper_image") else {
        return;
    };
    let mut rng = SplitMix64::new(fresh_seed());
    let (m, k, n) = (64, 256, 8);
    let w_host = weight_like(&mut rng, m * k, 0.05);
    let matrix = CompressedMatrix::encode(&w_host, m, k).unwrap();
    let w = DeviceWeights::upload(&gpu, &matrix).unwrap();
    let x = zipserv_tests::upload(&activations(&mut rng, n * k));
    let mut ws = GemmWorkspace::default();
    let options = GemmOptions {
        late_first_count: false,
        split_k: None,
        path: GemmPath::Wgmma,
    };
    // An output one element short.
    let mut short = zipserv_tests::upload(&vec![0f32; n * m - 1]);
    let e = zipgemm_with(
        &gpu,
        gpu.stream(),
        &w,
        &x,
        n,
        GemmOutput::F32(&mut short),
        options,
        &mut ws,
    )
    .unwrap_err();
    assert!(matches!(e, zipserv_gpu::Error::ShapeMismatch { .. }), "{e}");
    let mut y = zipserv_tests::upload(&vec![0f32; n * m]);
    let r = zipgemm_with(
        &gpu,
        gpu.stream(),
        &w,
        &x,
        n,
        GemmOutput::F32(&mut y),
        options,
        &mut ws,
    );
    if gpu.has_wgmma() {
        r.unwrap();
        gpu.synchronize().unwrap();
    } else {
        assert!(
            matches!(r, Err(zipserv_gpu::Error::Unsupported(_))),
            "{r:?}"
        );
    }
}
