//! cuBLAS `linear` on the Llama-3-8B layer shapes at N = 1 and 16, timed
//! with device events (criterion's `iter_custom`) and weights rotated past
//! L2. On a machine without a GPU (or without cuBLAS) it says so and exits 0.
//!
//! Run with `cargo bench -p zipserv-benches --bench gpu`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use half::bf16;
use zipserv::Error;
use zipserv::bench::{LLAMA3_8B_LAYERS, rotation_copies, time_op_batched, upload_rotated};
use zipserv::gpu::{Cublas, Gpu};
use zipserv::rng::SplitMix64;

const BATCHES: [usize; 2] = [1, 16];

fn main() {
    let gpu = match Gpu::new(0) {
        Ok(gpu) => gpu,
        Err(Error::NoDevice { reason }) => {
            println!("skipped: no CUDA device ({reason})");
            return;
        }
        Err(e) => fail(e),
    };
    let blas = match Cublas::new(&gpu) {
        Ok(blas) => blas,
        Err(e @ Error::CublasUnavailable { .. }) => {
            println!("skipped: {e}");
            return;
        }
        Err(e) => fail(e),
    };
    let mut criterion = Criterion::default().configure_from_args();
    if let Err(e) = cublas_linear(&mut criterion, &gpu, &blas) {
        fail(e);
    }
    criterion.final_summary();
}

fn fail(e: Error) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}

fn cublas_linear(c: &mut Criterion, gpu: &Gpu, blas: &Cublas<'_>) -> zipserv::Result<()> {
    let mut group = c.benchmark_group("cublas_linear");
    let mut rng = SplitMix64::new(1);
    for layer in LLAMA3_8B_LAYERS {
        let (m, k) = (layer.m, layer.k);
        let w: Vec<bf16> = (0..m * k)
            .map(|_| bf16::from_f32(rng.next_f32_signed()))
            .collect();
        for n in BATCHES {
            let x = vec![bf16::ONE; n * k];
            let bytes = 2 * (m * k + n * k + n * m);
            let copies = rotation_copies(gpu.info().l2_bytes, bytes);
            let d_w = upload_rotated(&w[..], copies)?;
            let d_x = upload_rotated(&x[..], copies)?;
            let mut d_y = upload_rotated(&vec![bf16::ZERO; n * m], copies)?;
            let stream = gpu.stream();
            let mut error = None;
            group.throughput(Throughput::Bytes(bytes as u64));
            group.bench_function(BenchmarkId::new(format!("{m}x{k}"), n), |b| {
                b.iter_custom(|iters| {
                    let iters = usize::try_from(iters).unwrap_or(usize::MAX);
                    let timed = time_op_batched(stream, 0, 1, iters.max(1), |i| {
                        let c = i % copies;
                        // SAFETY: the buffers outlive the GEMM, since
                        // `time_op_batched` synchronizes before returning.
                        unsafe { blas.linear(stream, &d_w[c], &d_x[c], &mut d_y[c], m, k, n) }
                    });
                    match timed {
                        Ok(t) => Duration::from_secs_f64(t.median_us * 1e-6 * iters as f64),
                        Err(e) => {
                            error.get_or_insert(e);
                            Duration::ZERO
                        }
                    }
                })
            });
            if let Some(e) = error {
                return Err(e);
            }
        }
    }
    group.finish();
    Ok(())
}
