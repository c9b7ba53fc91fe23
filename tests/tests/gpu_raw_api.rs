//! The engine-facing entry points on a real GPU: `ZipGemm` handles and the
//! `_raw` calls over a caller's own buffers and streams (here cust's, as a
//! stand-in for cudarc's or PyTorch's), against the checked path and an
//! f64 reference. Skipped (with a message) without a GPU.

use cust::memory::CopyDestination;
use cust::stream::{Stream, StreamFlags};
use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::{DeviceWeights, GemmOutput, OutputType, ZipGemm, decompress_raw};
use zipserv_tests::data::{activations, gemm_reference, relative_error, weight_like};
use zipserv_tests::gpu_or_skip;

#[test]
fn raw_entry_points_match_the_checked_path() {
    let Some(gpu) = gpu_or_skip("raw_entry_points_match_the_checked_path") else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    // A stream of the caller's, in the same (primary) context.
    let theirs = Stream::new(StreamFlags::NON_BLOCKING, None).unwrap();
    for &(m, k, n) in &[(1000, 4104, 1), (4096, 4096, 16), (300, 257, 100)] {
        let w = weight_like(&mut rng, m * k, 0.05);
        let x = activations(&mut rng, n * k);
        let weights =
            DeviceWeights::upload(&gpu, &CompressedMatrix::encode(&w, m, k).unwrap()).unwrap();
        let d_x = zipserv_tests::upload(&x);
        let mut checked = zipserv_tests::upload(&vec![f32::NAN; n * m]);
        let raw = zipserv_tests::upload(&vec![f32::NAN; n * m]);
        let mut gemm = ZipGemm::new(&gpu);
        gemm.run(
            gpu.stream(),
            &weights,
            &d_x,
            n,
            GemmOutput::F32(&mut checked),
        )
        .unwrap();
        gpu.synchronize().unwrap();
        // SAFETY: buffers of the right sizes in the primary context, alive
        // until the stream is synchronized below; `raw` is written by this
        // launch alone.
        unsafe {
            gemm.run_raw(
                theirs.as_inner(),
                &weights,
                d_x.as_device_ptr().as_raw(),
                n,
                raw.as_device_ptr().as_raw(),
                OutputType::F32,
            )
        }
        .unwrap();
        theirs.synchronize().unwrap();
        let (mut a, mut b) = (vec![0f32; n * m], vec![0f32; n * m]);
        checked.copy_to(&mut a[..]).unwrap();
        raw.copy_to(&mut b[..]).unwrap();
        assert!(
            a == b,
            "seed {seed}, {m}x{k}x{n}: raw and checked results differ"
        );
        let want = gemm_reference(&w, &x, m, k, n);
        let got: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
        let err = relative_error(&got, &want).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        println!("seed {seed}, {m}x{k}x{n}: raw call, relative error {err:.2e}");
        assert!(err < 1e-5, "seed {seed}, {m}x{k}x{n}: relative error {err}");

        // Decompression on the default (null) stream.
        let out = zipserv_tests::upload(&vec![bf16::from_bits(0x7FC1); m * k]);
        // SAFETY: `out` holds m × k elements in the primary context; the
        // context is synchronized before it is read.
        unsafe {
            decompress_raw(
                &gpu,
                std::ptr::null_mut(),
                &weights,
                out.as_device_ptr().as_raw(),
            )
        }
        .unwrap();
        cust::context::CurrentContext::synchronize().unwrap();
        let mut back = vec![bf16::ZERO; m * k];
        out.copy_to(&mut back[..]).unwrap();
        assert!(
            back.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()),
            "seed {seed}, {m}x{k}: decompression is not bit-exact"
        );
    }
}
