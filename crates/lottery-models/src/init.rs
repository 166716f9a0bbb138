//! Seeded initialisation that does not depend on burn's global RNG, so a seed gives the same
//! weights on every backend and in parallel tests: Kaiming normal (fan-in, ReLU gain √2) for
//! convolution and linear weights as the lottery-ticket papers use, zero biases, batch norm γ = 1,
//! β = 0 (or the signed-constant weights of [`WeightInit::SignedConstant`]). Each parameter draws from its own stream, keyed by the seed and its name.

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

/// The initial value of one parameter under the seeded scheme with weights drawn as `init` says.
/// A signed-constant weight is the sign of the Kaiming-normal draw times its std, so both inits of
/// a seed agree in sign.
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
            let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
            let std = (2.0 / fan_in as f64).sqrt() as f32;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream_seed(seed, name));
            let normal = Normal::new(0.0f32, std).expect("finite std");
            let draws = (0..n).map(|_| normal.sample(&mut rng));
            match init {
                WeightInit::KaimingNormal => draws.collect(),
                WeightInit::SignedConstant => {
                    draws.map(|w| if w < 0.0 { -std } else { std }).collect()
                }
            }
        }
        ParamKind::Norm if name.ends_with(".weight") => vec![1.0; n],
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
