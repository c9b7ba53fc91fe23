//! Per-element math shared by the engine kernels and their CPU tests: BF16
//! conversions, `exp`, `1/sqrt`, SiLU.
//!
//! `core` has no `exp` or `sqrt` without `std`, and the kernels must not call
//! out-of-line functions (the PTX checks reject `.func`), so both are written
//! here from bit manipulation, a polynomial and Newton steps. The same code
//! runs on the CPU in the tests, so its accuracy is measured, not assumed
//! (relative error below 3e-7 over the range the kernels use; see tests).

/// The f32 a BF16 bit pattern stands for (exact).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// An f32 rounded to BF16, nearest even; NaN stays NaN (quiet).
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> u16 {
    #[cfg(target_arch = "nvptx64")]
    {
        crate::ptx::f32_to_bf16(v)
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        let bits = v.to_bits();
        if v.is_nan() {
            return ((bits >> 16) as u16) | 0x0040;
        }
        let round = 0x7FFF + ((bits >> 16) & 1);
        (bits.wrapping_add(round) >> 16) as u16
    }
}

/// `v` rounded to the nearest BF16, as an f32: where the reference model
/// keeps an intermediate in BF16, the kernels round there too.
#[inline(always)]
pub fn round_bf16(v: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(v))
}

/// ⌊x⌋ for |x| < 2^31, without `core`'s missing `floor`.
#[inline(always)]
fn floor_i32(x: f32) -> i32 {
    let t = x as i32; // truncates toward zero
    if (t as f32) > x { t - 1 } else { t }
}

/// e^x. Underflows to 0 below about e^-87 (the engine only takes `exp` of
/// values ≤ 0 relative to a maximum, where such terms do not matter),
/// overflows to +inf above ln(f32::MAX) ≈ 88.72, NaN stays NaN.
///
/// e^x = 2^i · e^f with i the integer nearest x / ln 2 and f = x − i·ln 2 ∈
/// [−½ ln 2, ½ ln 2], the product i·ln 2 in two parts (Cody and Waite) so f
/// is exact to f32; e^f is the degree-6 Taylor polynomial, whose truncation
/// error is below (½ ln 2)^7 / 7! ≈ 1.2e-7. (Going through 2^(x·log2 e)
/// instead lost 2.6e-6 near |x| = 87 to the rounding of the product.)
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    /// ln 2 with its low 12 bits cleared: i · LN2_HI is exact for |i| < 2^12.
    const LN2_HI: f32 = f32::from_bits(0x3F31_7200); // 0.693145751953125
    const LN2_LO: f32 = f32::from_bits(0x35BF_BE8E); // 1.4286068e-6, ln 2 − LN2_HI
    if x.is_nan() {
        return x;
    }
    if x < -87.0 {
        return 0.0;
    }
    let x = x.min(89.0);
    let i = floor_i32(x * core::f32::consts::LOG2_E + 0.5);
    let f = (x - i as f32 * LN2_HI) - i as f32 * LN2_LO;
    // Horner form of Σ f^n / n!, n = 0..=6.
    let mut p = 1.0 / 720.0;
    p = p * f + 1.0 / 120.0;
    p = p * f + 1.0 / 24.0;
    p = p * f + 1.0 / 6.0;
    p = p * f + 0.5;
    p = p * f + 1.0;
    p = p * f + 1.0;
    // i ∈ [-126, 128]: 2^i as 2^(i−1) · 2 keeps the exponent field in
    // [0, 254]; i = 128 gives +inf, i = −126 (x within 1 of −87) gives 0.
    p * f32::from_bits(((i + 126) as u32) << 23) * 2.0
}

/// 2^x for softmax weights, where speed matters more than the last bits:
/// on the GPU one `ex2.approx.ftz.f32` (PTX ISA §9.7.3.19; maximum relative
/// error 2^-22 over its range, subnormal results flushed to zero, 2^-inf =
/// 0), on the CPU `exp(x · ln 2)` from this module. Attention takes one per
/// key and query head; [`exp`] is ~20 instructions on the FMA pipe, which
/// made the online softmax most of the decode attention loop.
#[inline(always)]
pub fn exp2_fast(x: f32) -> f32 {
    #[cfg(target_arch = "nvptx64")]
    {
        let r: f32;
        // SAFETY: arithmetic on registers only.
        unsafe {
            core::arch::asm!(
                "ex2.approx.ftz.f32 {r}, {x};",
                r = out(reg32) r,
                x = in(reg32) x,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        r
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        if x == f32::NEG_INFINITY {
            return 0.0;
        }
        exp(x * core::f32::consts::LN_2)
    }
}

/// 1/√x for x > 0 (normal or subnormal is not needed: callers add ε > 0).
/// The classic bit-level first guess (relative error ≤ 3.5%) and three
/// Newton steps, each of which squares the error: 3.5% → 1.8e-3 → 5e-6 →
/// f32 rounding. Returns +inf for x ≤ 0 and 0 for +inf.
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    if x <= 0.0 {
        return f32::INFINITY;
    }
    if x == f32::INFINITY {
        return 0.0;
    }
    let mut y = f32::from_bits(0x5f37_59df - (x.to_bits() >> 1));
    let half = 0.5 * x;
    y *= 1.5 - half * y * y;
    y *= 1.5 - half * y * y;
    y *= 1.5 - half * y * y;
    y
}

/// SiLU, x·σ(x) = x / (1 + e^-x); → 0 for large negative x, x for large
/// positive x.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        // Halfway between 1.0 (0x3F80) and the next BF16 (0x3F81): to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(f32_to_bf16(-2.5), 0xC020);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        // Rounding up past the largest finite BF16 overflows to inf.
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80);
        for bits in [0u16, 0x0001, 0x3F80, 0x7F7F, 0x8000, 0xC2F7] {
            assert_eq!(f32_to_bf16(bf16_to_f32(bits)), bits);
        }
    }

    #[test]
    fn exp_matches_f64_to_single_precision() {
        let mut worst = 0f64;
        let mut x = -86.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(88.8), f32::INFINITY);
        assert_eq!(exp(1000.0), f32::INFINITY);
        assert!(exp(88.7) > 3.3e38 && exp(88.7).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn exp2_fast_matches_f64_on_softmax_arguments() {
        let mut worst = 0f64;
        for i in 0..=4000 {
            let x = -40.0 + i as f32 * 0.01; // scores minus their maximum, and a little above
            let want = (x as f64).exp2();
            let got = exp2_fast(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        // The CPU's exp(x · ln 2) rounds the product: 1.0e-6 at x = −40.
        assert!(worst < 2e-6, "{worst}");
        assert_eq!(exp2_fast(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn rsqrt_matches_f64() {
        let mut worst = 0f64;
        let mut x = 1e-6f32;
        while x < 1e7 {
            let want = 1.0 / (x as f64).sqrt();
            let got = rsqrt(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x *= 1.013;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(rsqrt(0.0), f32::INFINITY);
        assert_eq!(rsqrt(f32::INFINITY), 0.0);
    }

    #[test]
    fn silu_matches_f64() {
        for i in -400..400 {
            let x = i as f32 * 0.05;
            let want = x as f64 / (1.0 + (-(x as f64)).exp());
            let got = silu(x) as f64;
            assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-3), "{x}");
        }
        assert_eq!(silu(-200.0), 0.0);
        assert_eq!(silu(200.0), 200.0);
    }
}
