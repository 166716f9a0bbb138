//! Seeded initialisation that does not depend on burn's global RNG, so a seed gives the same
//! weights on every backend and in parallel tests: Kaiming normal (fan-in, ReLU gain √2) for
//! convolution and linear weights as the lottery-ticket papers use, zero biases, batch norm γ = 1,
//! β = 0 (or the signed-constant weights of [`WeightInit::SignedConstant`], or the Early-Bird
//! reference's VGG init, [`WeightInit::EarlyBird`]). Each parameter draws from its own stream,
//! keyed by the seed and its name.

use burn::prelude::*;
use lottery_core::config::WeightInit;
use lottery_core::{FlatTensor, ParamKind, ParamValues};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use stream::stream_seed;

use crate::view::{self, TorchNaming, ViewError};

mod stream {
    /// A 64-bit FNV-1a hash of the seed and the name: a stable per-parameter stream id.
    pub fn stream_seed(seed: u64, name: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        h
    }
}

/// The initial value of one parameter under the seeded scheme (Kaiming-normal weights).
pub fn initial_value(seed: u64, name: &str, kind: ParamKind, shape: &[usize]) -> FlatTensor {
    initial_value_as(WeightInit::KaimingNormal, seed, name, kind, shape)
}

/// The standard deviation of a weight's normal draw under `init`: √(2/fan_in) (Kaiming), except
/// under [`WeightInit::EarlyBird`], where a convolution `[out, in, k, k]` uses √(2/(k·k·out))
/// (fan-out) and a linear layer 0.01.
pub fn weight_std(init: WeightInit, kind: ParamKind, shape: &[usize]) -> f64 {
    match (init, kind) {
        (WeightInit::EarlyBird, ParamKind::ConvWeight) => {
            let fan_out = shape[0] * shape[2..].iter().product::<usize>();
            (2.0 / fan_out.max(1) as f64).sqrt()
        }
        (WeightInit::EarlyBird, ParamKind::LinearWeight) => 0.01,
        _ => {
            let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
            (2.0 / fan_in as f64).sqrt()
        }
    }
}

/// The initial value of one parameter under the seeded scheme with weights drawn as `init` says.
/// A signed-constant weight is the sign of the Kaiming-normal draw times its std, so both inits of
/// a seed agree in sign; an Early-Bird weight is the same standard-normal draw as the Kaiming one,
/// scaled by [`weight_std`].
pub fn initial_value_as(
    init: WeightInit,
    seed: u64,
    name: &str,
    kind: ParamKind,
    shape: &[usize],
) -> FlatTensor {
    let n: usize = shape.iter().product();
    let values = match kind {
        ParamKind::ConvWeight | ParamKind::LinearWeight | ParamKind::Embedding => {
            let std = weight_std(init, kind, shape) as f32;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream_seed(seed, name));
            let normal = Normal::new(0.0f32, std).expect("finite std");
            let draws = (0..n).map(|_| normal.sample(&mut rng));
            match init {
                WeightInit::KaimingNormal | WeightInit::EarlyBird => draws.collect(),
                WeightInit::SignedConstant => {
                    draws.map(|w| if w < 0.0 { -std } else { std }).collect()
                }
            }
        }
        ParamKind::Norm if name.ends_with(".weight") => {
            let gamma = match init {
                WeightInit::EarlyBird => 0.5,
                WeightInit::KaimingNormal | WeightInit::SignedConstant => 1.0,
            };
            vec![gamma; n]
        }
        ParamKind::NormStatistic if name.ends_with("running_var") => vec![1.0; n],
        _ => vec![0.0; n],
    };
    FlatTensor::new(shape.to_vec(), values)
}

/// Initialises every parameter of `module` from `seed` (Kaiming-normal weights).
pub fn seeded_init<B: Backend, M: Module<B>>(
    module: M,
    naming: &dyn TorchNaming,
    seed: u64,
) -> Result<M, ViewError> {
    seeded_init_as(module, naming, seed, WeightInit::KaimingNormal)
}

/// Initialises every parameter of `module` from `seed`, weights drawn as `init` says.
pub fn seeded_init_as<B: Backend, M: Module<B>>(
    module: M,
    naming: &dyn TorchNaming,
    seed: u64,
    init: WeightInit,
) -> Result<M, ViewError> {
    let values: ParamValues = view::entries::<B, M>(&module, naming)
        .into_iter()
        .map(|e| {
            (
                e.info.name.clone(),
                initial_value_as(init, seed, &e.info.name, e.info.kind, &e.info.shape),
            )
        })
        .collect();
    view::set_values::<B, M>(module, naming, &values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_std(v: &[f32]) -> f64 {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    }

    fn early_bird(name: &str, kind: ParamKind, shape: &[usize]) -> FlatTensor {
        initial_value_as(WeightInit::EarlyBird, 7, name, kind, shape)
    }

    #[test]
    fn early_bird_convolutions_draw_with_the_fan_out_std() {
        // [out 128, in 64, 3, 3]: fan-out 9·128 = 1152 (fan-in would be 576, twice as wide).
        let shape = [128, 64, 3, 3];
        let w = early_bird("features.3.weight", ParamKind::ConvWeight, &shape);
        let want = (2.0f64 / 1152.0).sqrt();
        assert_eq!(
            weight_std(WeightInit::EarlyBird, ParamKind::ConvWeight, &shape),
            want
        );
        let got = sample_std(&w.values);
        // 73,728 draws: the sample std is within 1 % of σ with overwhelming probability.
        assert!((got / want - 1.0).abs() < 0.01, "std {got} against {want}");
        let mean = w.values.iter().map(|&x| x as f64).sum::<f64>() / w.values.len() as f64;
        assert!(mean.abs() < 0.01 * want, "mean {mean}");
    }

    #[test]
    fn early_bird_linear_weights_draw_with_std_one_hundredth_and_biases_are_zero() {
        let w = early_bird("classifier.weight", ParamKind::LinearWeight, &[512, 256]);
        let got = sample_std(&w.values);
        assert!((got / 0.01 - 1.0).abs() < 0.01, "std {got}");
        for (name, kind) in [
            ("classifier.bias", ParamKind::Bias),
            ("features.0.bias", ParamKind::Bias),
        ] {
            let b = early_bird(name, kind, &[512]);
            assert!(b.values.iter().all(|&x| x == 0.0), "{name}");
        }
    }

    #[test]
    fn early_bird_batch_norm_starts_at_gamma_one_half_beta_zero_and_unit_statistics() {
        let gamma = early_bird("features.1.weight", ParamKind::Norm, &[64]);
        assert!(gamma.values.iter().all(|&x| x == 0.5));
        let beta = early_bird("features.1.bias", ParamKind::Norm, &[64]);
        assert!(beta.values.iter().all(|&x| x == 0.0));
        let mean = early_bird("features.1.running_mean", ParamKind::NormStatistic, &[64]);
        assert!(mean.values.iter().all(|&x| x == 0.0));
        let var = early_bird("features.1.running_var", ParamKind::NormStatistic, &[64]);
        assert!(var.values.iter().all(|&x| x == 1.0));
        // The other schemes keep γ = 1.
        for init in [WeightInit::KaimingNormal, WeightInit::SignedConstant] {
            let g = initial_value_as(init, 7, "features.1.weight", ParamKind::Norm, &[64]);
            assert!(g.values.iter().all(|&x| x == 1.0));
        }
    }

    #[test]
    fn early_bird_draws_are_reproducible_per_seed_and_share_the_kaiming_stream() {
        let shape = [32, 16, 3, 3];
        let a = early_bird("features.0.weight", ParamKind::ConvWeight, &shape);
        let b = early_bird("features.0.weight", ParamKind::ConvWeight, &shape);
        assert_eq!(a, b);
        let other = initial_value_as(
            WeightInit::EarlyBird,
            8,
            "features.0.weight",
            ParamKind::ConvWeight,
            &shape,
        );
        assert_ne!(a, other);
        // The same standard-normal draws as Kaiming, scaled from fan-in to fan-out.
        let kaiming = initial_value(7, "features.0.weight", ParamKind::ConvWeight, &shape);
        let ratio = (weight_std(WeightInit::EarlyBird, ParamKind::ConvWeight, &shape)
            / weight_std(WeightInit::KaimingNormal, ParamKind::ConvWeight, &shape))
            as f32;
        for (e, k) in a.values.iter().zip(&kaiming.values) {
            assert!((e - k * ratio).abs() <= 1e-6 * k.abs().max(1.0));
        }
    }
}
