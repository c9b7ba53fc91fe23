//! The GPU paths on the Llama-3-8B layer shapes, timed with device events
//! (criterion's `iter_custom`), weights rotated past L2: cuBLAS `linear` on
//! BF16 weights and ZipGEMM on the compressed ones at N = 1 and 16, and the
//! decompression kernel. On a machine without a GPU (or without cuBLAS) it
//! says so and exits 0.
//!
//! Run with `cargo bench -p zipserv-benches --bench gpu`. The side-by-side
//! table with speedups is `zipserv bench --sweep`.

use std::time::Duration;

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};
use cust::memory::DeviceBuffer;
use half::bf16;
use zipserv_benches::{LLAMA3_8B_LAYERS, rotation_copies, time_op_batched, upload_rotated};
use zipserv_format::CompressedMatrix;
use zipserv_format::synth;
use zipserv_gpu::Error;
use zipserv_gpu::{Cublas, DeviceWeights, GemmOutput, GemmWorkspace, Gpu, decompress, zipgemm};

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
    if let Err(e) = run(&mut criterion, &gpu, &blas) {
        fail(e);
    }
    criterion.final_summary();
}

fn fail(e: Error) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}

/// Benchmarks `op(i)` (one launch; `i` picks the rotated buffers) with
/// device-event timing; `bytes` is what one launch must move.
fn bench_op(
    group: &mut BenchmarkGroup<'_, WallTime>,
    gpu: &Gpu,
    id: BenchmarkId,
    bytes: usize,
    mut op: impl FnMut(usize) -> zipserv_gpu::Result<()>,
) -> zipserv_gpu::Result<()> {
    let stream = gpu.stream();
    let mut error = None;
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let iters = usize::try_from(iters).unwrap_or(usize::MAX).max(1);
            match time_op_batched(stream, 0, 1, iters, &mut op) {
                Ok(t) => Duration::from_secs_f64(t.median_us * 1e-6 * iters as f64),
                Err(e) => {
                    error.get_or_insert(e);
                    Duration::ZERO
                }
            }
        })
    });
    error.map_or(Ok(()), Err)
}

fn run(c: &mut Criterion, gpu: &Gpu, blas: &Cublas<'_>) -> zipserv_gpu::Result<()> {
    let l2 = gpu.info().l2_bytes;
    let stream = gpu.stream();
    for layer in LLAMA3_8B_LAYERS {
        let (m, k) = (layer.m, layer.k);
        // Exponents distributed like trained weights' (synth), so that ZipGEMM
        // decodes as many exceptions as on a real model.
        let w = synth::trained_like(m, k, 1)?;
        let matrix = CompressedMatrix::encode(&w, m, k)?;
        let compressed = (0..rotation_copies(l2, matrix.compressed_bytes()).max(2))
            .map(|_| DeviceWeights::upload(gpu, &matrix))
            .collect::<zipserv_gpu::Result<Vec<_>>>()?;
        let plain = upload_rotated(&w[..], rotation_copies(l2, 2 * m * k).max(2))?;
        let mut out = DeviceBuffer::<bf16>::zeroed(m * k).map_err(|source| Error::Cuda {
            call: "cuMemAlloc",
            source,
        })?;

        let mut group = c.benchmark_group("decompress");
        bench_op(
            &mut group,
            gpu,
            BenchmarkId::from_parameter(format!("{m}x{k}")),
            matrix.compressed_bytes() + 2 * m * k,
            |i| decompress(gpu, stream, &compressed[i % compressed.len()], &mut out),
        )?;
        group.finish();

        for n in BATCHES {
            let x = DeviceBuffer::from_slice(&vec![bf16::ONE; n * k]).map_err(|source| {
                Error::Cuda {
                    call: "cuMemAlloc",
                    source,
                }
            })?;
            let mut y = DeviceBuffer::<bf16>::zeroed(n * m).map_err(|source| Error::Cuda {
                call: "cuMemAlloc",
                source,
            })?;
            let id = BenchmarkId::new(format!("{m}x{k}"), n);

            let mut group = c.benchmark_group("cublas_linear");
            bench_op(
                &mut group,
                gpu,
                id.clone(),
                2 * (m * k + n * k + n * m),
                |i| {
                    // SAFETY: the buffers outlive the GEMM: timing synchronizes
                    // before returning.
                    unsafe { blas.linear(stream, &plain[i % plain.len()], &x, &mut y, m, k, n) }
                },
            )?;
            group.finish();

            let mut group = c.benchmark_group("zipgemm");
            let mut workspace = GemmWorkspace::default();
            bench_op(
                &mut group,
                gpu,
                id,
                matrix.compressed_bytes() + 2 * (n * k + n * m),
                |i| {
                    let w = &compressed[i % compressed.len()];
                    zipgemm(
                        gpu,
                        stream,
                        w,
                        &x,
                        n,
                        GemmOutput::Bf16(&mut y),
                        None,
                        &mut workspace,
                    )
                },
            )?;
            group.finish();
        }
    }
    Ok(())
}
