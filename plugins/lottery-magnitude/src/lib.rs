//! `magnitude`: keep the weights of largest |θ| (globally or per layer). At initialisation this is
//! the magnitude-at-init baseline of the pruning-at-initialisation papers; iterated with training in
//! between it is the pruning step of IMP.

use lottery_core::plugin::Scorer;
use lottery_core::{
    MaskSet, ParamValues, PruneContext, PruneError, Pruner, PrunerEntry, PrunerOptions,
};
use serde::{Deserialize, Serialize};

/// Options of `magnitude` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagnitudeOptions {}

impl PrunerOptions for MagnitudeOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(MagnitudePruner)
    }
}

inventory::submit! { PrunerEntry::new::<MagnitudeOptions>("magnitude", "|θ|: keep the largest weights") }

/// The magnitude pruner.
#[derive(Debug, Clone, Copy)]
pub struct MagnitudePruner;

impl Scorer for MagnitudePruner {
    fn score(
        &mut self,
        ctx: &mut PruneContext<'_>,
        current: &MaskSet,
        _round: usize,
    ) -> Result<ParamValues, PruneError> {
        let names: Vec<String> = current.iter().map(|(n, _)| n.clone()).collect();
        let mut v = ctx.target.values(&names)?;
        for t in v.values_mut() {
            t.values.iter_mut().for_each(|x| *x = x.abs());
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<MagnitudeOptions>("scope = 1");
    }
}
