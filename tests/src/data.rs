//! Test inputs: weight-like matrices, adversarial bit patterns, references.

use half::bf16;
use zipserv_format::rng::SplitMix64;

/// Weight-like values: uniform in ±scale with a sprinkling of much smaller
/// and larger magnitudes, so every exception path (table and far) is used.
pub fn weight_like(rng: &mut SplitMix64, len: usize, scale: f32) -> Vec<bf16> {
    (0..len)
        .map(|_| {
            let v = rng.next_f32_signed() * scale;
            let r = rng.next_u64() % 1000;
            let v = match r {
                0 => v * 1e-30, // far below the window
                1 => v * 1e3,   // above it
                2..=20 => v * 1e-4,
                _ => v,
            };
            bf16::from_f32(v)
        })
        .collect()
}

/// Uniform random activations in ±1.
pub fn activations(rng: &mut SplitMix64, len: usize) -> Vec<bf16> {
    (0..len)
        .map(|_| bf16::from_f32(rng.next_f32_signed()))
        .collect()
}

/// Every 16-bit pattern, repeated/truncated to `len`, shuffled.
pub fn all_bit_patterns(rng: &mut SplitMix64, len: usize) -> Vec<bf16> {
    let mut v: Vec<bf16> = (0..len).map(|i| bf16::from_bits(i as u16)).collect();
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    v
}

/// `Y[n×m] = X[n×k] · W[m×k]ᵀ` in f64.
pub fn gemm_reference(w: &[bf16], x: &[bf16], m: usize, k: usize, n: usize) -> Vec<f64> {
    let w: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
    let x: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let mut y = vec![0f64; n * m];
    for i in 0..n {
        let xr = &x[i * k..][..k];
        for j in 0..m {
            let wr = &w[j * k..][..k];
            y[i * m + j] = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
        }
    }
    y
}

/// ‖got − want‖ / ‖want‖, or an error naming the first non-finite output.
pub fn relative_error(got: &[f64], want: &[f64]) -> Result<f64, String> {
    let (mut e2, mut r2) = (0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() {
            return Err(format!("output {i} is {g} (reference {w})"));
        }
        e2 += (g - w) * (g - w);
        r2 += w * w;
    }
    Ok((e2 / r2.max(f64::MIN_POSITIVE)).sqrt())
}
