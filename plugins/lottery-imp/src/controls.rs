//! The control networks trained beside the ticket at every pruned level.

use lottery_core::topk::top_k_count;
use lottery_core::{FlatTensor, MaskSet, ParamValues, PruneContext, PruneError};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::Imp;

/// A control network trained beside the ticket at every pruned level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    /// The ticket's mask with freshly initialised weights.
    Reinit,
    /// A random mask with the ticket's per-layer counts; every weight it keeps starts at its
    /// rewind value (also those the ticket pruned).
    RandomMask,
    /// The same random mask as `random-mask`, started as open_lth's `randomly_prune` branch
    /// (`start_at = rewind`) starts it: from the level's saved rewind weights, which are the
    /// rewind values times the ticket's mask. A kept weight inside the ticket starts at its rewind
    /// value, a kept weight outside the ticket starts at zero (and trains from there).
    RandomMaskZeroOutsideTicket,
}

impl Control {
    /// The phase name its metric rows carry.
    pub fn phase(self) -> &'static str {
        match self {
            Control::Reinit => "reinit",
            Control::RandomMask => "random-mask",
            Control::RandomMaskZeroOutsideTicket => "random-mask-zero-outside-ticket",
        }
    }
}

impl Imp {
    /// The configured controls at level `r` (mask `mask`, rewind weights `rewind`).
    pub(crate) fn controls(
        &self,
        ctx: &mut PruneContext<'_>,
        r: usize,
        mask: &MaskSet,
        rewind: &ParamValues,
    ) -> Result<(), PruneError> {
        for control in &self.options.controls {
            ctx.progress
                .set_message(format!("imp level {r}: control {}", control.phase()));
            match control {
                Control::Reinit => {
                    let fresh = ctx.target.fresh_values(reinit_seed(ctx.seed, r));
                    self.train_level(ctx, r, control.phase(), &fresh, mask)?;
                }
                Control::RandomMask => {
                    let random = random_mask_like(mask, ctx.seed, r)?;
                    self.train_level(ctx, r, control.phase(), rewind, &random)?;
                }
                Control::RandomMaskZeroOutsideTicket => {
                    let random = random_mask_like(mask, ctx.seed, r)?;
                    let start = zero_outside(rewind, mask);
                    self.train_level(ctx, r, control.phase(), &start, &random)?;
                }
            }
        }
        Ok(())
    }
}

fn reinit_seed(seed: u64, r: usize) -> u64 {
    seed ^ 0x005E_ED0F_5EED ^ (r as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `values` with every entry that `ticket` prunes set to zero (parameters outside the mask as they
/// are): the weights open_lth saves for a level at its rewind step, from which its
/// `randomly_prune` branch starts.
pub fn zero_outside(values: &ParamValues, ticket: &MaskSet) -> ParamValues {
    let mut out = values.clone();
    for (name, m) in ticket.iter() {
        if let Some(t) = out.get_mut(name) {
            for (v, keep) in t.values.iter_mut().zip(&m.keep) {
                if !keep {
                    *v = 0.0;
                }
            }
        }
    }
    out
}

/// A uniformly random mask with the same number of kept entries in every parameter as `like`.
pub fn random_mask_like(like: &MaskSet, seed: u64, r: usize) -> Result<MaskSet, PruneError> {
    let mut out = MaskSet::new();
    for (i, (name, m)) in like.iter().enumerate() {
        let stream = seed ^ (r as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (i as u64) << 48;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
        let scores = ParamValues::from([(
            name.clone(),
            FlatTensor::new(
                m.shape.clone(),
                (0..m.numel()).map(|_| rng.random::<f32>()).collect(),
            ),
        )]);
        let chosen = top_k_count(&scores, m.kept(), None)?;
        out.insert(
            name.clone(),
            chosen.get(name).expect("one parameter").clone(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_mask_keeps_the_per_layer_counts() {
        let mut like = MaskSet::dense([("a", &[4usize, 5][..]), ("b", &[7][..])]);
        let scores = ParamValues::from([
            (
                "a".to_string(),
                FlatTensor::new(vec![4, 5], (0..20).map(|i| i as f32).collect()),
            ),
            (
                "b".to_string(),
                FlatTensor::new(vec![7], (0..7).map(|i| i as f32).collect()),
            ),
        ]);
        like = top_k_count(&scores, 9, Some(&like)).unwrap();
        let r = random_mask_like(&like, 3, 2).unwrap();
        for (name, m) in like.iter() {
            assert_eq!(r.get(name).unwrap().kept(), m.kept());
        }
        assert_ne!(r, like, "a random mask, not the ticket's");
        assert_eq!(r, random_mask_like(&like, 3, 2).unwrap(), "seeded");
    }
}
