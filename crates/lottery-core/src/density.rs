//! One vocabulary for how much of a network is kept.
//!
//! *density* is the fraction of weights kept, *sparsity* = 1 − density, and
//! *compression* = 1 / density = 10^x, the quantity the SynFlow paper puts on its log axis.

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrorKind};

/// A fraction of weights kept, in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Density(f64);

impl Density {
    /// A density, checked to lie in (0, 1].
    pub fn new(value: f64) -> Result<Self, String> {
        if value.is_finite() && value > 0.0 && value <= 1.0 {
            Ok(Self(value))
        } else {
            Err(format!(
                "density must be in (0, 1] (fraction of weights kept), got {value}"
            ))
        }
    }

    /// The density `10^-x` of compression `10^x`.
    pub fn from_compression_exponent(x: f64) -> Result<Self, String> {
        Self::new(10f64.powf(-x))
    }

    /// Fraction of weights kept.
    pub fn value(self) -> f64 {
        self.0
    }

    /// Fraction of weights removed, 1 − density.
    pub fn sparsity(self) -> f64 {
        1.0 - self.0
    }

    /// Compression ratio 1 / density.
    pub fn compression(self) -> f64 {
        1.0 / self.0
    }

    /// The exponent x of compression 10^x.
    pub fn compression_exponent(self) -> f64 {
        -self.0.log10()
    }

    /// The number of entries out of `total` that this density keeps: `round(density · total)`,
    /// the one place where a density becomes a count.
    pub fn keep_count(self, total: usize) -> usize {
        ((self.0 * total as f64).round() as usize).min(total)
    }

    /// Checks a density coming from configuration, naming the key on failure.
    pub fn from_config(value: f64, key: &str) -> Result<Self, ConfigError> {
        Self::new(value)
            .map_err(|why| ConfigError::new(ConfigErrorKind::Invalid, key, value.to_string(), why))
    }
}

impl TryFrom<f64> for Density {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<Density> for f64 {
    fn from(d: Density) -> f64 {
        d.0
    }
}

/// The density after step `step` (1-based) of `steps` of an exponential schedule towards `target`:
/// `target^(step/steps)`, as in SynFlow's iterative pruning.
pub fn exponential_schedule(target: Density, step: usize, steps: usize) -> Density {
    assert!(
        steps > 0 && step >= 1 && step <= steps,
        "step {step} of {steps}"
    );
    if step == steps {
        return target;
    }
    Density(target.0.powf(step as f64 / steps as f64))
}

/// The density after step `step` of `steps` of a linear schedule from 1 to `target`.
pub fn linear_schedule(target: Density, step: usize, steps: usize) -> Density {
    assert!(
        steps > 0 && step >= 1 && step <= steps,
        "step {step} of {steps}"
    );
    if step == steps {
        return target;
    }
    Density(1.0 - (1.0 - target.0) * step as f64 / steps as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_consistent() {
        let d = Density::new(0.01).unwrap();
        assert!((d.sparsity() - 0.99).abs() < 1e-12);
        assert!((d.compression() - 100.0).abs() < 1e-9);
        assert!((d.compression_exponent() - 2.0).abs() < 1e-12);
        let e = Density::from_compression_exponent(2.0).unwrap();
        assert!((e.value() - 0.01).abs() < 1e-15);
    }

    #[test]
    fn rejects_out_of_range() {
        for bad in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(Density::new(bad).is_err(), "{bad}");
        }
        assert!(Density::new(1.0).is_ok());
    }

    #[test]
    fn exponential_schedule_ends_on_target() {
        let t = Density::new(0.001).unwrap();
        let mut last = 1.0;
        for s in 1..=100 {
            let d = exponential_schedule(t, s, 100).value();
            assert!(d < last);
            last = d;
        }
        assert_eq!(last, 0.001);
        assert!((exponential_schedule(t, 50, 100).value() - 0.001f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn keep_count_rounds() {
        let d = Density::new(0.1).unwrap();
        assert_eq!(d.keep_count(1005), 101);
        assert_eq!(d.keep_count(0), 0);
    }
}
