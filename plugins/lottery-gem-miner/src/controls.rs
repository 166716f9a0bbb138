//! The sanity-check controls trained after mining, beside the ticket.

use std::path::PathBuf;

use lottery_core::plugin::PruneContext;
use lottery_core::{Mask, MaskSet, ParamValues, PruneError};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::progress::save_state;
use crate::{GemMiner, MiningState};

/// A sanity check trained after mining, beside the ticket (the reference's `do_sanity_checks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    /// The ticket's mask on freshly initialised weights (the run's `model.init` with another
    /// seed; the reference re-draws Kaiming-normal weights).
    Reinit,
    /// The ticket's flags permuted at random within each layer (the same count per layer), on the
    /// ticket's weights.
    ShuffledMask,
}

impl Control {
    /// The phase name its metric rows carry.
    pub fn phase(self) -> &'static str {
        match self {
            Control::Reinit => "reinit",
            Control::ShuffledMask => "shuffled-mask",
        }
    }
}

/// The ticket's flags permuted at random within each layer: every layer keeps its count, at
/// places drawn uniformly (the reference's mask-shuffle sanity check, `utils/net_utils.py:redraw`).
pub fn shuffled_within_layers(flags: &MaskSet, seed: u64) -> MaskSet {
    let mut out = MaskSet::new();
    for (i, (name, m)) in flags.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed ^ 0x7368_7566_666c_6521 ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        let mut keep = m.keep.clone();
        // Fisher–Yates.
        for j in (1..keep.len()).rev() {
            let r = rng.random_range(0..=j);
            keep.swap(j, r);
        }
        out.insert(
            name.clone(),
            Mask {
                shape: m.shape.clone(),
                keep,
            },
        );
    }
    out
}

/// Where control `control` starts: the values it trains from and its mask, given the ticket's
/// starting values `ticket` (every parameter and buffer) and mask `flags`, on `target`.
pub fn control_start(
    control: Control,
    target: &dyn lottery_core::PruneTarget,
    ticket: &ParamValues,
    flags: &MaskSet,
    seed: u64,
) -> (ParamValues, MaskSet) {
    match control {
        Control::Reinit => (
            target.fresh_values(seed ^ 0x7265_696e_6974_0000 ^ 0x005E_ED0F_5EED),
            flags.clone(),
        ),
        Control::ShuffledMask => (ticket.clone(), shuffled_within_layers(flags, seed)),
    }
}

impl GemMiner {
    /// Trains the configured controls after mining, from `done` on, each from step 0 for the run's
    /// schedule, recording its level rows under its phase; saves progress after each, and leaves
    /// the target as mining left it (values and clock) for the ticket.
    pub(crate) fn controls(
        &self,
        ctx: &mut PruneContext<'_>,
        state: &MiningState,
        prunes_done: usize,
        done: usize,
        all_names: &[String],
        saved: Option<PathBuf>,
    ) -> Result<(), PruneError> {
        let ticket = ctx.target.values(all_names)?;
        let start = ctx.target.clock().step;
        let end = ctx.target.clock().run_steps;
        for (i, &control) in self.options.controls.iter().enumerate().skip(done) {
            ctx.progress
                .set_message(format!("gem-miner control {}", control.phase()));
            let (values, mask) =
                control_start(control, &*ctx.target, &ticket, &state.flags, ctx.seed);
            ctx.target.set_phase(0, control.phase());
            ctx.target.rewind(&values, start)?;
            ctx.target.train_until(&mask, end, &mut |_| {})?;
            let (_, accuracy) = ctx.target.evaluate(&mask)?;
            ctx.target.record("level", "density", mask.density());
            ctx.target.record("level", "accuracy", accuracy);
            tracing::info!(
                control = control.phase(),
                accuracy = format!("{accuracy:.4}"),
                "gem-miner control"
            );
            if let Some(path) = &saved {
                let rows = ctx.target.metrics();
                save_state(path, state, &ticket, prunes_done, i + 1, &rows)?;
            }
        }
        ctx.target.rewind(&ticket, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shuffled_mask_keeps_each_layer_count_and_moves_the_kept_weights() {
        let mut flags = MaskSet::new();
        flags.insert(
            "a",
            Mask {
                shape: vec![20, 10],
                keep: (0..200).map(|i| i % 7 == 0).collect(),
            },
        );
        flags.insert(
            "b",
            Mask {
                shape: vec![50],
                keep: (0..50).map(|i| i < 5).collect(),
            },
        );
        let s = shuffled_within_layers(&flags, 3);
        for (name, m) in flags.iter() {
            let got = s.get(name).unwrap();
            assert_eq!(got.kept(), m.kept(), "{name}");
            assert_eq!(got.shape, m.shape);
            assert_ne!(got.keep, m.keep, "{name} moved");
        }
        assert_eq!(s, shuffled_within_layers(&flags, 3), "seeded");
        assert_ne!(s, shuffled_within_layers(&flags, 4));
    }
}
