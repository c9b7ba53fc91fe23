//! How fast back-to-back launches go, seen from the host and from the GPU:
//! 1000 enqueues of one product without synchronization between them, for
//! ZipGEMM and for cuBLAS, at a tiny shape (where the kernel itself takes
//! well under a microsecond) and at 4096 × 4096. Prints, per launch, the
//! host's enqueue time and the GPU's time (events around all 1000). When
//! the host takes longer per enqueue than the GPU per kernel, a benchmark
//! of back-to-back launches measures the host.
//!
//!     cargo run --release -p zipserv-benches --example launch_rate

use std::time::Instant;

use cust::event::{Event, EventFlags};
use cust::memory::DeviceBuffer;
use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::SplitMix64;
use zipserv_gpu::{Cublas, DeviceWeights, GemmOutput, GemmWorkspace, Gpu, zipgemm};

const LAUNCHES: usize = 1000;

/// (host µs per enqueue, GPU µs per launch) of `LAUNCHES` calls of `op`.
fn rate(gpu: &Gpu, mut op: impl FnMut()) -> (f64, f64) {
    for _ in 0..20 {
        op();
    }
    gpu.synchronize().expect("warm-up");
    let (start, end) = (
        Event::new(EventFlags::DEFAULT).expect("event"),
        Event::new(EventFlags::DEFAULT).expect("event"),
    );
    start.record(gpu.stream()).expect("record");
    let t0 = Instant::now();
    for _ in 0..LAUNCHES {
        op();
    }
    let host = t0.elapsed().as_secs_f64() * 1e6 / LAUNCHES as f64;
    end.record(gpu.stream()).expect("record");
    gpu.synchronize().expect("sync");
    let gpu_ms = end.elapsed_time_f32(&start).expect("elapsed");
    (host, f64::from(gpu_ms) * 1e3 / LAUNCHES as f64)
}

fn main() {
    let gpu = Gpu::new(0).expect("a CUDA device");
    let blas = Cublas::new(&gpu).expect("cuBLAS");
    let mut rng = SplitMix64::new(7);
    println!(
        "| M × K | N | ZipGEMM host µs/launch | ZipGEMM GPU µs/launch | cuBLAS host µs/launch | cuBLAS GPU µs/launch |"
    );
    println!("|---|---|---|---|---|---|");
    for (m, k, n) in [(4096, 128, 1), (4096, 4096, 1), (28672, 4096, 1)] {
        let w: Vec<bf16> = (0..m * k)
            .map(|_| bf16::from_f32(rng.next_f32_signed() * 0.02))
            .collect();
        let matrix = CompressedMatrix::encode(&w, m, k).expect("encode");
        let dw = DeviceWeights::upload(&gpu, &matrix).expect("upload");
        let w_dev = DeviceBuffer::from_slice(&w).expect("upload");
        let x = DeviceBuffer::from_slice(&vec![bf16::from_f32(0.5); n * k]).expect("upload");
        let mut y = DeviceBuffer::from_slice(&vec![bf16::ZERO; n * m]).expect("upload");
        // The uploads above go through the legacy stream.
        cust::context::CurrentContext::synchronize().expect("sync");
        let mut workspace = GemmWorkspace::default();
        let zip = rate(&gpu, || {
            zipgemm(
                &gpu,
                gpu.stream(),
                &dw,
                &x,
                n,
                GemmOutput::Bf16(&mut y),
                None,
                &mut workspace,
            )
            .expect("zipgemm")
        });
        // SAFETY: the buffers hold m × k, n × k and n × m and outlive the
        // launches (`rate` synchronizes).
        let cublas = rate(&gpu, || unsafe {
            blas.linear(gpu.stream(), &w_dev, &x, &mut y, m, k, n)
                .expect("cuBLAS")
        });
        println!(
            "| {m}×{k} | {n} | {:.2} | {:.2} | {:.2} | {:.2} |",
            zip.0, zip.1, cublas.0, cublas.1
        );
    }
}
