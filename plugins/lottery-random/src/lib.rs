//! `random`: prune at random. Each prunable weight gets an independent uniform score drawn from the
//! run's seed and the parameter's name, and the shared top-k keeps exactly the requested count, so
//! a global random mask has (in expectation) the same density in every layer.

use lottery_core::plugin::Scorer;
use lottery_core::{
    FlatTensor, MaskSet, ParamValues, PruneContext, PruneError, Pruner, PrunerEntry, PrunerOptions,
};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Options of `random` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomOptions {}

impl PrunerOptions for RandomOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(RandomPruner)
    }
}

inventory::submit! { PrunerEntry::new::<RandomOptions>("random", "random scores: the baseline every method must beat") }

/// The random pruner.
#[derive(Debug, Clone, Copy)]
pub struct RandomPruner;

impl Scorer for RandomPruner {
    fn score(
        &mut self,
        ctx: &mut PruneContext<'_>,
        current: &MaskSet,
        round: usize,
    ) -> Result<ParamValues, PruneError> {
        Ok(current
            .iter()
            .map(|(name, m)| {
                let stream =
                    ctx.seed ^ hash(name) ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
                (
                    name.clone(),
                    FlatTensor::new(
                        m.shape.clone(),
                        (0..m.numel()).map(|_| rng.random::<f32>()).collect(),
                    ),
                )
            })
            .collect())
    }
}

fn hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<RandomOptions>("seed = 3");
    }
}
