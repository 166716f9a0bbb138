//! `bert-tickets`: "The Lottery Ticket Hypothesis for Pre-trained BERT Networks" (Chen et al.
//! 2020). IMP on a pre-trained BERT as the reference (`VITA-Group/BERT-Tickets`, `LT_glue.py`)
//! runs it: fine-tune, prune `rate` (10 %) of the remaining prunable weights globally by
//! magnitude, rewind the survivors to the pre-trained weights (θ₀ is the checkpoint; the task head
//! rewinds to its initialisation), repeat until the run's density; every level writes its
//! `level/density` and `level/accuracy` rows, and the run's own training then fine-tunes the
//! final ticket. Which weights are prunable is the network's call: for BERT, the encoder's linear
//! weights and the pooler's (embeddings stay dense).
//!
//! Transfer: with `find_on = "<task>"` the ticket is found by IMP on that task (a dataset name:
//! `wordnet-examples` for masked language modelling, or another classification task), then the
//! network switches back to the run's own task, at its pre-trained weights with a fresh head, and
//! the run fine-tunes the transferred ticket there. The source IMP's rows keep their rounds under
//! phases prefixed `source-`.

use lottery_bert::BertTask;
use lottery_core::plugin::family_mut;
use lottery_core::{
    MaskSet, PruneContext, PruneError, PruneTarget, Pruner, PrunerEntry, PrunerOptions,
};
use lottery_imp::{ImpOptions, Rate};
use serde::{Deserialize, Serialize};

/// A parameter every BERT has; its absence means the run's network is not a BERT.
pub const BERT_PROBE: &str = "encoder.layer.0.attention.self.query.weight";

/// Options of `bert-tickets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BertTicketsOptions {
    /// Fraction of the remaining prunable weights removed per round (the paper's 10 %).
    pub rate: Rate,
    /// Task the ticket is found on (a text dataset name); unset: the run's own task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub find_on: Option<String>,
}

impl Default for BertTicketsOptions {
    fn default() -> Self {
        Self {
            rate: Rate::try_from(0.1).expect("0.1 is a rate"),
            find_on: None,
        }
    }
}

impl PrunerOptions for BertTicketsOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(BertTickets { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<BertTicketsOptions>("bert-tickets", "BERT tickets: IMP on a pre-trained BERT (10 %/round, rewind to the pre-trained weights); transfer across tasks").needing(lottery_core::plugin::capability::TEXT) }

/// The BERT-tickets pruner.
#[derive(Debug, Clone)]
pub struct BertTickets {
    options: BertTicketsOptions,
}

impl Pruner for BertTickets {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        if !ctx.target.params().iter().any(|p| p.name == BERT_PROBE) {
            return Err(PruneError::Unsupported {
                method: "bert-tickets".into(),
                why: format!(
                    "the network has no {BERT_PROBE}; bert-tickets prunes a pre-trained BERT \
                     (model.name = \"minilm-l6\")"
                ),
            });
        }
        let mut imp = ImpOptions {
            rate: self.options.rate,
            ..ImpOptions::default()
        }
        .build();
        let Some(source) = &self.options.find_on else {
            return imp.prune(ctx);
        };
        let own = switch_task(ctx.target, source)?;
        if own == *source {
            return imp.prune(ctx);
        }
        ctx.progress
            .set_message(format!("bert-tickets: finding the ticket on {source}"));
        let mask = imp.prune(ctx)?;
        let rows = ctx
            .target
            .metrics()
            .into_iter()
            .map(|mut r| {
                r.phase = format!("source-{}", r.phase);
                r
            })
            .collect();
        ctx.target.restore_metrics(rows);
        switch_task(ctx.target, &own)?;
        ctx.target.set_phase(0, "ticket");
        Ok(mask)
    }
}

/// Switches the BERT behind `target` to the task `name`; returns the previous task's name.
fn switch_task(target: &mut dyn PruneTarget, name: &str) -> Result<String, PruneError> {
    family_mut::<BertTask>(target, "bert-tickets", "a pre-trained BERT with task heads")?
        .switch_task(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_bad_values() {
        lottery_core::plugin::assert_options_contract::<BertTicketsOptions>("rate = 1.5");
        let o: BertTicketsOptions = toml::from_str("find_on = \"wordnet-examples\"").unwrap();
        assert_eq!(o.find_on.as_deref(), Some("wordnet-examples"));
        assert_eq!(f64::from(o.rate), 0.1);
    }
}
