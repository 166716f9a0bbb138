//! `gcn-tickets`: graph early-bird tickets (GEBT; You et al., AAAI 2022; the published code is
//! GATECH-EIC/Early-Bird-GCN, formerly RICE-EIC/Early-Bird-GCN, `run_threshold_jointEB.py`).
//!
//! **Joint early-bird tickets** (`tickets = "joint"`, the default). From θ₀ the GCN and the graph
//! are sparsified together ([`lottery_gcn::GcnTask::co_sparsify`]): every epoch one Adam step
//! on the weights, after which the weights are magnitude-pruned *in place* to the run's density
//! (GEBT's "simultaneous sparsification": the network trains sparse during the search), then
//! one Adam step on trainable edge values that ADMM drives toward `graph_density` of the edges
//! (`Z = Π(a + U)`, `U ← U + a − Z`, ρ = 1e-3). The weight mask is the in-place pruning's; the
//! graph mask keeps the `graph_density` of edges with the largest |learnt value|.
//! [`GebtDetector`] measures, for each, the largest Hamming count between the current mask and
//! each of the `lookback` = 3 previous masks (for the weights: per layer, summed over the
//! layers), divided by the first such value; the ticket is drawn at the first epoch after
//! `after_epoch` at which the mean of the two normalised distances is below `epsilon` (0.1).
//! With `graph_density = 1` only the weight distance counts; with `prune.density = 1` only
//! the graph's.
//!
//! **Graph early-bird (GEB) tickets** (`tickets = "graph"`): the weights are first trained dense
//! for `pretrain_epochs` by `[train]`, then frozen; only the edge values are sparsified (the same
//! graph step and ADMM), and the ticket is drawn when the normalised graph distance alone falls
//! below `epsilon`. The ticket prunes only the graph (the run's `prune.density` must be 1).
//!
//! **Retraining** (`retrain`): `"inherit"` keeps the weights the search reached (pruned) and trains
//! them by `[train]` (the paper: "the initialization for retraining inherits from joint-EB
//! tickets"; the code's `--use_state`); `"reinit"` trains a fresh random initialisation (the
//! code's default path, which also leaves the weights dense; here the weight mask is kept);
//! `"rewind"` trains from θ₀ (the lottery-ticket convention). Default: `"inherit"` for joint
//! tickets, `"reinit"` for GEB tickets (the paper retrains GEB graphs from scratch).
//! Without a draw by `max_epochs`, the last masks are the ticket (`detected` = 0).
//!
//! Recorded under split `gcn-tickets`: per epoch `graph-distance/eNNN`, `weight-distance/eNNN`,
//! `joint-distance/eNNN` (normalised), `val-accuracy/eNNN`; then `drawn-epoch`, `detected`,
//! `search-epochs` and `train-flops-ratio`: the search (two training passes an epoch, at the
//! weight density, over the full graph) plus the ticket's training against training the dense
//! network for the same schedule (a training step = 3 forward passes, so the factor cancels).

use std::collections::VecDeque;
use std::ops::ControlFlow;

use lottery_core::graph::{edge_count, graph_density};
use lottery_core::plugin::family_mut;
use lottery_core::{
    GRAPH_MASK, Mask, MaskSet, PruneContext, PruneError, Pruner, PrunerEntry, PrunerOptions,
};
use lottery_gcn::{CoSparsifySpec, GcnTask};
use serde::{Deserialize, Serialize};

/// Which tickets `gcn-tickets` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TicketKind {
    /// Joint early-bird tickets: graph and weights sparsified together.
    #[default]
    Joint,
    /// Graph early-bird (GEB) tickets: only the graph, on pre-trained frozen weights.
    Graph,
}

/// Where the ticket's training starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Retrain {
    /// The weights the search reached (pruned).
    Inherit,
    /// A fresh random initialisation.
    Reinit,
    /// θ₀, the run's initialisation.
    Rewind,
}

/// Options of `gcn-tickets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcnTicketsOptions {
    /// `"joint"` (GEBT's joint early-bird tickets) or `"graph"` (GEB tickets).
    pub tickets: TicketKind,
    /// Fraction of edges kept; 0: the density UGS's schedule pairs with the weight density.
    pub graph_density: f64,
    /// Most epochs of search (the reference's `--times 100 --epochs 1`).
    pub max_epochs: usize,
    /// Previous masks each distance is measured against (the reference's `--lookback 3`).
    pub lookback: usize,
    /// The ticket is drawn when the (mean) normalised distance is below this (`--thres 0.1`).
    pub epsilon: f64,
    /// The rule may fire only at epochs (1-based) after this one; the reference's
    /// `epoch_cnt > 5` counts from 0, i.e. 6 here.
    pub after_epoch: usize,
    /// Adam learning rate of the weights during the search.
    pub lr: f64,
    /// L2 weight decay of the first layer during the search (the second has none).
    pub weight_decay: f64,
    /// Adam learning rate of the edge values.
    pub graph_lr: f64,
    /// ρ of the ADMM penalty.
    pub rho: f64,
    /// GEB tickets: epochs of dense training before the graph search (the reference's
    /// `pytorch_train.py`, 99 steps).
    pub pretrain_epochs: usize,
    /// `"inherit"`, `"reinit"` or `"rewind"`; unset: inherit for joint, reinit for GEB tickets.
    pub retrain: Option<Retrain>,
}

impl Default for GcnTicketsOptions {
    fn default() -> Self {
        Self {
            tickets: TicketKind::Joint,
            graph_density: 0.0,
            max_epochs: 100,
            lookback: 3,
            epsilon: 0.1,
            after_epoch: 6,
            lr: 0.01,
            weight_decay: 5e-4,
            graph_lr: 1e-3,
            rho: 1e-3,
            pretrain_epochs: 99,
            retrain: None,
        }
    }
}

impl GcnTicketsOptions {
    fn check(&self) -> Result<(), String> {
        if self.max_epochs == 0 || self.lookback == 0 {
            return Err("max_epochs and lookback must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.graph_density) {
            return Err(format!(
                "graph_density must be in [0, 1]; got {}",
                self.graph_density
            ));
        }
        if self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err("epsilon must be positive".into());
        }
        if !(self.lr > 0.0 && self.graph_lr > 0.0 && self.rho >= 0.0 && self.weight_decay >= 0.0) {
            return Err("lr and graph_lr must be positive, rho and weight_decay ≥ 0".into());
        }
        Ok(())
    }

    fn retrain(&self) -> Retrain {
        self.retrain.unwrap_or(match self.tickets {
            TicketKind::Joint => Retrain::Inherit,
            TicketKind::Graph => Retrain::Reinit,
        })
    }
}

impl PrunerOptions for GcnTicketsOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(GcnTickets { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<GcnTicketsOptions>("gcn-tickets", "graph early-bird tickets (GEBT): graph (ADMM) and weights (in-place magnitude) sparsified together, drawn when the normalised mask distances settle; or graph-only GEB tickets (GCN)").needing(lottery_core::plugin::capability::GRAPH) }

/// One mask series as the reference measures it: the Hamming count between the current mask and
/// each of the last `lookback` masks, the largest per part (layer), summed over the parts, and
/// divided by the first value measured.
#[derive(Debug, Clone)]
pub struct MaskSeries {
    lookback: usize,
    history: VecDeque<Vec<Vec<bool>>>,
    baseline: Option<f64>,
}

impl MaskSeries {
    /// A series compared against the last `lookback` masks.
    pub fn new(lookback: usize) -> Self {
        Self {
            lookback,
            history: VecDeque::new(),
            baseline: None,
        }
    }

    /// Adds a mask (its parts, e.g. one per layer); returns the normalised distance once
    /// `lookback` earlier masks exist. A first value of 0 is no baseline: the distance is NaN
    /// (never below ε) and the next value is tried as the baseline, as in the reference.
    pub fn push(&mut self, parts: Vec<Vec<bool>>) -> Option<f64> {
        if self.history.len() < self.lookback {
            self.history.push_back(parts);
            return None;
        }
        let raw: usize = parts
            .iter()
            .enumerate()
            .map(|(p, cur)| {
                self.history
                    .iter()
                    .map(|h| h[p].iter().zip(cur).filter(|(a, b)| a != b).count())
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        let raw = raw as f64;
        let base = match self.baseline {
            Some(b) if b != 0.0 => b,
            _ => {
                self.baseline = Some(raw);
                raw
            }
        };
        self.history.pop_front();
        self.history.push_back(parts);
        Some(if base == 0.0 { f64::NAN } else { raw / base })
    }
}

/// GEBT's joint early-bird detector (`run_threshold_jointEB.py`): normalised graph and weight
/// distances ([`MaskSeries`]); fires at the first epoch after `after_epoch` where their mean (or
/// the one that is tracked) is below `epsilon`.
#[derive(Debug, Clone)]
pub struct GebtDetector {
    graph: Option<MaskSeries>,
    weights: Option<MaskSeries>,
    epsilon: f64,
    after_epoch: usize,
    last: (Option<f64>, Option<f64>),
    fired: bool,
}

impl GebtDetector {
    /// A detector over the graph's and/or the weights' masks.
    pub fn new(
        track_graph: bool,
        track_weights: bool,
        lookback: usize,
        epsilon: f64,
        after_epoch: usize,
    ) -> Self {
        Self {
            graph: track_graph.then(|| MaskSeries::new(lookback)),
            weights: track_weights.then(|| MaskSeries::new(lookback)),
            epsilon,
            after_epoch,
            last: (None, None),
            fired: false,
        }
    }

    /// Adds the masks of `epoch` (1-based); returns (graph, weight, joint) distances, each None
    /// while it is not measured yet. A tracked series whose mask is not given is skipped.
    pub fn push(
        &mut self,
        epoch: usize,
        graph: Option<&Mask>,
        weights: Option<&MaskSet>,
    ) -> (Option<f64>, Option<f64>, Option<f64>) {
        let dg = match (&mut self.graph, graph) {
            (Some(s), Some(m)) => s.push(vec![m.keep.clone()]),
            _ => None,
        };
        let dw = match (&mut self.weights, weights) {
            (Some(s), Some(w)) => s.push(w.iter().map(|(_, m)| m.keep.clone()).collect()),
            _ => None,
        };
        self.last = (dg, dw);
        let joint = match (self.graph.is_some(), self.weights.is_some()) {
            (true, true) => dg.zip(dw).map(|(g, w)| (g + w) / 2.0),
            (true, false) => dg,
            (false, true) => dw,
            (false, false) => None,
        };
        self.fired = epoch > self.after_epoch && joint.is_some_and(|j| j < self.epsilon);
        (dg, dw, joint)
    }

    /// Whether the last pushed epoch draws the ticket.
    pub fn fired(&self) -> bool {
        self.fired
    }
}

/// The GEBT pruner.
#[derive(Debug, Clone)]
pub struct GcnTickets {
    options: GcnTicketsOptions,
}

impl Pruner for GcnTickets {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        let o = self.options.clone();
        let unsupported = |why: String| PruneError::Unsupported {
            method: "gcn-tickets".into(),
            why,
        };
        o.check().map_err(unsupported)?;
        let edges = edge_count(ctx.target, "gcn-tickets")?;
        let density = ctx.goal.density;
        let joint = o.tickets == TicketKind::Joint;
        if !joint && density.value() < 1.0 {
            return Err(unsupported(format!(
                "GEB tickets (tickets = \"graph\") prune only the graph; set prune.density = 1 \
                 (got {})",
                density.value()
            )));
        }
        let gd = graph_density(o.graph_density, density)?;
        let keep_edges = gd.keep_count(edges);
        let names: Vec<String> = ctx.prunable().into_iter().map(|p| p.name).collect();
        let theta0 = ctx.target.values(&names)?;
        let prune_weights = joint && density.value() < 1.0;
        let spec = CoSparsifySpec {
            epochs: o.max_epochs,
            weights: joint.then_some((density, ctx.goal.scope)),
            edges_kept: keep_edges,
            lr: o.lr,
            weight_decay: o.weight_decay,
            graph_lr: o.graph_lr,
            rho: o.rho,
        };
        let mut detector = GebtDetector::new(
            gd.value() < 1.0 || !joint,
            prune_weights,
            o.lookback,
            o.epsilon,
            o.after_epoch,
        );
        let progress = ctx.progress.clone();
        if !joint {
            // GEB: the weights are trained dense first, then frozen.
            ctx.target.set_phase(0, "pretrain");
            ctx.target
                .train_until(&MaskSet::new(), o.pretrain_epochs, &mut |_| {})?;
        }
        let mut drawn: Option<usize> = None;
        let mut last_epoch = 0;
        let mut last: Option<(Mask, Option<MaskSet>)> = None;
        let mut rows: Vec<(String, f64)> = vec![];
        progress.set_length(o.max_epochs as u64);
        ctx.target.set_phase(0, "search");
        family_mut::<GcnTask>(ctx.target, "gcn-tickets", "a graph to mask")?.co_sparsify(
            &spec,
            &mut |e| {
                progress.inc(1);
                last_epoch = e.epoch;
                let (dg, dw, dj) =
                    detector.push(e.epoch, Some(&e.graph_mask), e.weight_mask.as_ref());
                for (name, d) in [
                    ("graph-distance", dg),
                    ("weight-distance", dw),
                    ("joint-distance", dj),
                ] {
                    if let Some(d) = d {
                        rows.push((format!("{name}/e{:03}", e.epoch), d));
                    }
                }
                rows.push((format!("val-accuracy/e{:03}", e.epoch), e.val_accuracy));
                last = Some((e.graph_mask.clone(), e.weight_mask.clone()));
                if detector.fired() {
                    drawn = Some(e.epoch);
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        )?;
        for (metric, value) in rows {
            ctx.target.record("gcn-tickets", &metric, value);
        }
        let (graph, weights) =
            last.ok_or_else(|| PruneError::Internal("no search epoch ran".into()))?;
        let search_epochs = drawn.unwrap_or(last_epoch);
        let mut mask = match weights {
            Some(w) => w,
            None => ctx.dense_mask(),
        };
        mask.insert(GRAPH_MASK, graph);
        let start = match o.retrain() {
            // The search left the (pruned) weights it reached in the target.
            Retrain::Inherit => ctx.target.values(&names)?,
            Retrain::Reinit => ctx
                .target
                .fresh_values(ctx.seed ^ 0x6765_6274_7265_696e)
                .into_iter()
                .filter(|(n, _)| names.contains(n))
                .collect(),
            Retrain::Rewind => theta0,
        };
        ctx.target.rewind(&start, 0)?;
        ctx.target.set_phase(0, "ticket");
        ctx.target
            .record("gcn-tickets", "drawn-epoch", search_epochs as f64);
        ctx.target
            .record("gcn-tickets", "detected", drawn.is_some() as u8 as f64);
        let clock = ctx.target.clock();
        let train_epochs = (clock.run_steps / clock.steps_per_epoch.max(1)) as f64;
        let mut search_mask = MaskSet::new();
        for n in &names {
            if let Some(m) = mask.get(n) {
                search_mask.insert(n.clone(), m.clone());
            }
        }
        if let (Ok(dense), Ok(search), Ok(ticket)) = (
            ctx.target.mask_flops(&MaskSet::new()),
            ctx.target.mask_flops(&search_mask),
            ctx.target.mask_flops(&mask),
        ) {
            // GEB tickets also pay for the dense pre-training.
            let pretrain = if joint {
                0.0
            } else {
                o.pretrain_epochs as f64 * dense
            };
            let ratio = (pretrain + 2.0 * search_epochs as f64 * search + train_epochs * ticket)
                / (train_epochs * dense).max(f64::MIN_POSITIVE);
            ctx.target.record("gcn-tickets", "train-flops-ratio", ratio);
            ctx.target
                .record("gcn-tickets", "search-epochs", search_epochs as f64);
        }
        Ok(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(b: &[u8]) -> Vec<bool> {
        b.iter().map(|&x| x == 1).collect()
    }

    fn mask(b: &[u8]) -> Mask {
        Mask {
            shape: vec![b.len()],
            keep: bits(b),
        }
    }

    fn layers(a: &[u8], b: &[u8]) -> MaskSet {
        let mut s = MaskSet::new();
        s.insert("a", mask(a));
        s.insert("b", mask(b));
        s
    }

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<GcnTicketsOptions>("lookback = \"x\"");
        let o: GcnTicketsOptions =
            toml::from_str("tickets = \"graph\"\nretrain = \"rewind\"").unwrap();
        assert_eq!(o.tickets, TicketKind::Graph);
        assert_eq!(o.retrain(), Retrain::Rewind);
        assert_eq!(GcnTicketsOptions::default().retrain(), Retrain::Inherit);
    }

    #[test]
    fn a_series_waits_for_lookback_masks_and_normalises_by_its_first_value() {
        let mut s = MaskSeries::new(3);
        assert_eq!(s.push(vec![bits(&[1, 1, 0, 0, 0, 0])]), None);
        assert_eq!(s.push(vec![bits(&[1, 0, 1, 0, 0, 0])]), None);
        assert_eq!(s.push(vec![bits(&[0, 0, 1, 1, 0, 0])]), None);
        // Against the three previous masks: 4, 4, 2 differing entries; the max, 4, is the
        // baseline, so the first distance is 1.
        assert_eq!(s.push(vec![bits(&[0, 0, 0, 0, 1, 1])]), Some(1.0));
        // Window now masks 2, 3, 4: distances 4, 4, 0 → 4 / 4.
        assert_eq!(s.push(vec![bits(&[0, 0, 0, 0, 1, 1])]), Some(1.0));
        // Masks 3, 4, 4: distances 4, 0, 0 → 1.
        assert_eq!(s.push(vec![bits(&[0, 0, 0, 0, 1, 1])]), Some(1.0));
        // Masks 4, 4, 4: all 0 → 0; the oldest mask has left the window.
        assert_eq!(s.push(vec![bits(&[0, 0, 0, 0, 1, 1])]), Some(0.0));
        // One flip against each of the last three: 2 entries differ (one leaves, one joins).
        assert_eq!(s.push(vec![bits(&[0, 0, 0, 1, 0, 1])]), Some(0.5));
    }

    #[test]
    fn weight_distances_take_the_max_per_layer_then_sum_the_layers() {
        let mut s = MaskSeries::new(2);
        s.push(vec![bits(&[1, 0, 0, 0]), bits(&[1, 0])]);
        s.push(vec![bits(&[0, 1, 0, 0]), bits(&[1, 0])]);
        // Layer a: 2 against the first, 0 against the second → 2; layer b: 2 and 2 → 2; sum 4.
        assert_eq!(s.push(vec![bits(&[0, 1, 0, 0]), bits(&[0, 1])]), Some(1.0));
        // Layer a: 0, 0; layer b: 2, 0 → max 2: 2 / 4.
        assert_eq!(s.push(vec![bits(&[0, 1, 0, 0]), bits(&[0, 1])]), Some(0.5));
    }

    #[test]
    fn a_zero_first_distance_is_no_baseline() {
        let mut s = MaskSeries::new(1);
        s.push(vec![bits(&[1, 0])]);
        assert!(s.push(vec![bits(&[1, 0])]).unwrap().is_nan());
        assert_eq!(s.push(vec![bits(&[0, 1])]), Some(1.0), "2 is the baseline");
        assert_eq!(s.push(vec![bits(&[0, 1])]), Some(0.0));
    }

    #[test]
    fn the_joint_rule_is_the_mean_below_epsilon_after_the_floor() {
        // Lookback 1 so that distances start at epoch 2; ε = 0.3; floor: epochs after 3.
        let mut d = GebtDetector::new(true, true, 1, 0.3, 3);
        let g = [
            &[1, 1, 0, 0][..], // epoch 1
            &[0, 0, 1, 1],     // 2: graph 4 → baseline, 1.0
            &[0, 0, 1, 1],     // 3: graph 0
            &[0, 0, 1, 1],     // 4: graph 0
            &[0, 0, 1, 1],     // 5: graph 0
            &[0, 0, 1, 1],     // 6: graph 0
        ];
        let w = [
            (&[1, 0, 0, 0][..], &[1, 0][..]), // 1
            (&[0, 1, 0, 0], &[0, 1]),         // 2: 2 + 2 = 4 → 1.0
            (&[0, 1, 0, 0], &[0, 1]),         // 3: 0 (mean 0, but epoch 3 is not after 3)
            (&[1, 0, 0, 0], &[0, 1]),         // 4: 2 → 0.5, mean 0.25 < 0.3: fires
            (&[0, 0, 1, 0], &[1, 0]),         // 5: 4 → 1.0, mean 0.5
            (&[0, 0, 1, 0], &[1, 0]),         // 6: 0 → mean 0
        ];
        let mut out = vec![];
        for (i, (g, (a, b))) in g.iter().zip(w).enumerate() {
            let (dg, dw, dj) = d.push(i + 1, Some(&mask(g)), Some(&layers(a, b)));
            out.push((dg, dw, dj, d.fired()));
        }
        assert_eq!(out[0], (None, None, None, false));
        assert_eq!(out[1], (Some(1.0), Some(1.0), Some(1.0), false));
        assert_eq!(out[2], (Some(0.0), Some(0.0), Some(0.0), false), "floor");
        assert_eq!(out[3], (Some(0.0), Some(0.5), Some(0.25), true));
        assert_eq!(
            out[4],
            (Some(0.0), Some(1.0), Some(0.5), false),
            "mean, not AND"
        );
        assert!(out[5].3);
    }

    #[test]
    fn one_tracked_series_decides_alone() {
        let mut d = GebtDetector::new(true, false, 1, 0.1, 0);
        d.push(1, Some(&mask(&[1, 0])), Some(&layers(&[1], &[1])));
        d.push(2, Some(&mask(&[0, 1])), Some(&layers(&[0], &[0])));
        let (_, dw, dj) = d.push(3, Some(&mask(&[0, 1])), Some(&layers(&[1], &[1])));
        assert_eq!((dw, dj), (None, Some(0.0)));
        assert!(d.fired(), "weights are not tracked: graph 0 fires");
    }
}
