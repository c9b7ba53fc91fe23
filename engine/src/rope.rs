//! The rotary table: `(cos, sin)` of every angle `pos · inv_freq[i]`, built
//! on the host once per run in f32 as transformers builds it (inverse
//! frequencies `1 / θ^(2i/d)` in f32, with the config's scaling; angles as
//! one f32 product), uploaded for the RoPE kernel.

use crate::config::{ModelConfig, RopeScaling};

/// The `head_dim / 2` inverse frequencies, scaled as the config says.
pub fn inverse_frequencies(config: &ModelConfig) -> Vec<f32> {
    let d = config.head_dim;
    let base: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f32 / d as f32))
        .collect();
    match config.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: context,
        } => {
            // Wavelengths longer than context / low_freq_factor are slowed by
            // `factor`, those shorter than context / high_freq_factor kept,
            // and those between blended linearly in context / wavelength.
            let long = context / low_freq_factor;
            let short = context / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelength = 2.0 * std::f32::consts::PI / f;
                    if wavelength > long {
                        f / factor
                    } else if wavelength < short {
                        f
                    } else {
                        let s = (context / wavelength - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - s) * f / factor + s * f
                    }
                })
                .collect()
        }
    }
}

/// `(cos, sin)` for positions `0..positions`, laid out as the kernel reads
/// it ([`zipserv_kernels::engine::rope::table_offset`]).
pub fn table(inv_freq: &[f32], positions: usize) -> Vec<f32> {
    let half = inv_freq.len();
    let mut out = vec![0f32; positions * half * 2];
    for pos in 0..positions {
        for (i, &f) in inv_freq.iter().enumerate() {
            // The angle is the f32 product the reference computes; its
            // cosine and sine are taken in f64 and rounded once.
            let angle = (pos as f32 * f) as f64;
            let at = zipserv_kernels::engine::rope::table_offset(pos, i, half);
            out[at] = angle.cos() as f32;
            out[at + 1] = angle.sin() as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> ModelConfig {
        let json = format!(
            r#"{{"hidden_size": 1024, "intermediate_size": 512, "num_attention_heads": 8,
            "num_hidden_layers": 1, "vocab_size": 10, "rope_theta": 500000.0 {extra}}}"#
        );
        ModelConfig::from_json(json.as_bytes(), Path::new("c.json")).unwrap()
    }

    #[test]
    fn default_frequencies_fall_geometrically() {
        let f = inverse_frequencies(&config(""));
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        let ratio = 500000f64.powf(-2.0 / 128.0);
        for w in f.windows(2) {
            assert!(((w[1] / w[0]) as f64 - ratio).abs() < 1e-5);
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_slows_low_and_blends_between() {
        let plain = inverse_frequencies(&config(""));
        let scaled = inverse_frequencies(&config(
            r#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#,
        ));
        let mut kinds = [0; 3];
        for (&p, &s) in plain.iter().zip(&scaled) {
            let wavelength = 2.0 * std::f32::consts::PI / p;
            if wavelength < 2048.0 {
                assert_eq!(s, p);
                kinds[0] += 1;
            } else if wavelength > 8192.0 {
                assert_eq!(s, p / 8.0);
                kinds[1] += 1;
            } else {
                assert!(s < p && s > p / 8.0);
                kinds[2] += 1;
            }
        }
        assert!(kinds.iter().all(|&k| k > 0), "{kinds:?}");
        let linear = inverse_frequencies(&config(
            r#", "rope_scaling": {"type": "linear", "factor": 2.0}"#,
        ));
        assert_eq!(linear[3], plain[3] / 2.0);
    }

    #[test]
    fn table_holds_cos_and_sin_of_each_angle() {
        let f = [1.0f32, 0.5];
        let t = table(&f, 3);
        assert_eq!(t.len(), 12);
        assert_eq!((t[0], t[1]), (1.0, 0.0));
        assert!((t[4] - 1f32.cos()).abs() < 1e-7 && (t[5] - 1f32.sin()).abs() < 1e-7);
        assert!((t[10] - 1f32.cos()).abs() < 1e-7); // pos 2, i 1: angle 1
    }
}
