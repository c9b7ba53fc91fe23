//! How the next token is chosen.

use crate::error::{Error, Result};

/// Greedy when `temperature` is 0; otherwise temperature + top-p sampling,
/// reproducible from `seed` (see `zipserv_kernels::engine::sample`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Self = Self {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    };

    /// Checked settings: temperature ≥ 0 and finite, top_p in (0, 1].
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Result<Self> {
        if !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature {temperature} must be a finite number ≥ 0 (0 = greedy)"
            )));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::Invalid(format!("top-p {top_p} must lie in (0, 1]")));
        }
        Ok(Self {
            temperature,
            top_p,
            seed,
        })
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert!(Sampling::new(0.0, 1.0, 1).unwrap().is_greedy());
        assert!(!Sampling::new(0.7, 0.9, 1).unwrap().is_greedy());
        assert!(Sampling::new(-1.0, 1.0, 1).is_err());
        assert!(Sampling::new(f32::NAN, 1.0, 1).is_err());
        assert!(Sampling::new(1.0, 0.0, 1).is_err());
        assert!(Sampling::new(1.0, 1.5, 1).is_err());
    }
}
