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
//! [`GebtDetector`] draws the ticket by one of two rules (`detector`), which differ:
//!
//! - `"paper"` (the default; the paper's Algorithms 1 and 2, §3.2–3.4): every epoch the
//!   Hamming distance between the mask and the previous epoch's (the graph's `d_g`, the
//!   network's `d_w`, its layers summed), each divided by its first value; the joint distance
//!   `d_g + d_w` (GEB tickets: `d_g`) enters a FIFO queue of the last `lookback` = 3 epochs, and
//!   the ticket is drawn at the first epoch where the queue is full and its **maximum** is below
//!   `epsilon` (0.1). No epoch floor (`after_epoch` unset: 0).
//! - `"code"` (`run_threshold_jointEB.py`): per series the largest Hamming count between the
//!   current mask and each of the `lookback` = 3 previous masks (for the weights: per layer,
//!   summed over the layers), divided by the first such value; the ticket is drawn at the first
//!   epoch after `after_epoch` (unset: 6, the code's `epoch_cnt > 5`) at which the **mean** of
//!   the two normalised distances is below `epsilon`, no queue.
//!
//! The paper names its distances "normalised" without saying by what; both rules divide by the
//! first value, as the code does. (The curves of its Fig. 4(b), "normalised distance
//! (d_g + d_w)", start at epoch 3 counted from 0, the code's first distance, at 0.47–1.0 and never
//! exceed 1.0, as the code's mean of two such distances would; its text and Algorithm 2 say the
//! sum, which the paper's rule takes.) With `graph_density = 1` only the weight distance counts;
//! with `prune.density = 1` only the graph's.
//!
//! **Graph early-bird (GEB) tickets** (`tickets = "graph"`): the weights are first trained dense
//! for `pretrain_epochs` by `[train]`, then frozen; only the edge values are sparsified (the same
//! graph step and ADMM), and the ticket is drawn when the normalised graph distance alone falls
//! below `epsilon` (the paper's rule: the maximum of its last `lookback` consecutive distances;
//! the code's: its distance to the last `lookback` masks). The ticket prunes only the graph (the
//! run's `prune.density` must be 1).
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
//! `joint-distance/eNNN` (normalised; the paper's sum or the code's mean), `queue-max/eNNN` (the
//! paper's rule: the largest joint distance in the queue), `val-accuracy/eNNN`; then
//! `drawn-epoch`, `detected`,
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

/// The rule that draws the ticket: the paper's or its code's (they differ; see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    /// The paper's Algorithms 1 and 2: consecutive-epoch distances, `d_g + d_w` into a FIFO queue
    /// of `lookback` epochs, drawn when the queue's maximum is below ε; no epoch floor.
    #[default]
    Paper,
    /// `run_threshold_jointEB.py`: the largest distance to each of the last `lookback` masks,
    /// drawn when the mean of graph and weight distances is below ε after epoch 6.
    Code,
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
    /// The rule that draws the ticket: `"paper"` (the default: the paper's Algorithms 1 and 2,
    /// the maximum over a FIFO queue of the summed consecutive-epoch distances `d_g + d_w`) or
    /// `"code"` (the reference code's: the mean of the graph and weight distances, each the
    /// largest to the last `lookback` masks). Where paper and code differ, the paper is the
    /// default.
    pub detector: Detector,
    /// The paper's rule: the length `l` of its FIFO queue of distances (the paper's `l = 3`);
    /// the code's: the previous masks each distance is measured against (`--lookback 3`).
    pub lookback: usize,
    /// The ticket is drawn when the normalised distance (the paper: the queue's maximum of
    /// `d_g + d_w`; the code: the mean of the two) is below this (the paper's ε = 0.1, the
    /// code's `--thres 0.1`).
    pub epsilon: f64,
    /// The rule may fire only at epochs (1-based) after this one. Unset: 0 for the paper's rule
    /// (its algorithms have no floor), 6 for the code's (`epoch_cnt > 5`, counted from 0).
    pub after_epoch: Option<usize>,
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
            detector: Detector::Paper,
            lookback: 3,
            epsilon: 0.1,
            after_epoch: None,
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

    fn after_epoch(&self) -> usize {
        self.after_epoch.unwrap_or(match self.detector {
            Detector::Paper => 0,
            Detector::Code => 6,
        })
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

/// One mask series: the Hamming count between the current mask and each of the last `lookback`
/// masks, the largest per part (layer), summed over the parts, and divided by the first value
/// measured. The code's rule uses `lookback` = 3; with `lookback` = 1 it is the paper's distance
/// between consecutive epochs (the parts summed).
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

/// What [`GebtDetector::push`] measured at one epoch (each None while not measured yet).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Distances {
    /// The normalised graph distance.
    pub graph: Option<f64>,
    /// The normalised weight distance.
    pub weights: Option<f64>,
    /// The joint distance: `d_g + d_w` (the paper) or their mean (the code); the tracked one
    /// alone when only one is tracked.
    pub joint: Option<f64>,
    /// The paper's rule: the largest joint distance in the queue, once the queue is full.
    pub queue_max: Option<f64>,
}

/// GEBT's early-bird detector, by the paper's rule or its code's ([`Detector`]): normalised
/// graph and weight distances ([`MaskSeries`]); the paper's rule draws the ticket at the first
/// epoch where the last `lookback` values of `d_g + d_w` (consecutive-epoch distances) are all
/// below `epsilon`, the code's at the first epoch after `after_epoch` where the mean of the two
/// (each against the last `lookback` masks) is below `epsilon`. With one series tracked, that
/// series alone.
#[derive(Debug, Clone)]
pub struct GebtDetector {
    rule: Detector,
    graph: Option<MaskSeries>,
    weights: Option<MaskSeries>,
    lookback: usize,
    queue: VecDeque<f64>,
    epsilon: f64,
    after_epoch: usize,
    fired: bool,
}

impl GebtDetector {
    /// A detector over the graph's and/or the weights' masks. `lookback` is the paper's queue
    /// length or the code's number of previous masks.
    pub fn new(
        rule: Detector,
        track_graph: bool,
        track_weights: bool,
        lookback: usize,
        epsilon: f64,
        after_epoch: usize,
    ) -> Self {
        // The paper measures consecutive epochs; the code against the last `lookback` masks.
        let behind = match rule {
            Detector::Paper => 1,
            Detector::Code => lookback,
        };
        Self {
            rule,
            graph: track_graph.then(|| MaskSeries::new(behind)),
            weights: track_weights.then(|| MaskSeries::new(behind)),
            lookback,
            queue: VecDeque::new(),
            epsilon,
            after_epoch,
            fired: false,
        }
    }

    /// Adds the masks of `epoch` (1-based) and returns what was measured. A tracked series
    /// whose mask is not given is skipped.
    pub fn push(
        &mut self,
        epoch: usize,
        graph: Option<&Mask>,
        weights: Option<&MaskSet>,
    ) -> Distances {
        let dg = match (&mut self.graph, graph) {
            (Some(s), Some(m)) => s.push(vec![m.keep.clone()]),
            _ => None,
        };
        let dw = match (&mut self.weights, weights) {
            (Some(s), Some(w)) => s.push(w.iter().map(|(_, m)| m.keep.clone()).collect()),
            _ => None,
        };
        let joint = match (self.graph.is_some(), self.weights.is_some()) {
            (true, true) => dg.zip(dw).map(|(g, w)| match self.rule {
                Detector::Paper => g + w,
                Detector::Code => (g + w) / 2.0,
            }),
            (true, false) => dg,
            (false, true) => dw,
            (false, false) => None,
        };
        let mut queue_max = None;
        let below = match self.rule {
            Detector::Paper => {
                if let Some(j) = joint {
                    self.queue.push_back(j);
                    while self.queue.len() > self.lookback {
                        self.queue.pop_front();
                    }
                }
                if self.queue.len() == self.lookback {
                    // NaN (a series without a baseline yet) is never below ε.
                    queue_max = Some(self.queue.iter().fold(f64::NEG_INFINITY, |m, &v| {
                        if v.is_nan() || m.is_nan() {
                            f64::NAN
                        } else {
                            m.max(v)
                        }
                    }));
                }
                joint.is_some() && queue_max.is_some_and(|m| m < self.epsilon)
            }
            Detector::Code => joint.is_some_and(|j| j < self.epsilon),
        };
        self.fired = epoch > self.after_epoch && below;
        Distances {
            graph: dg,
            weights: dw,
            joint,
            queue_max,
        }
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
            o.detector,
            gd.value() < 1.0 || !joint,
            prune_weights,
            o.lookback,
            o.epsilon,
            o.after_epoch(),
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
                let d = detector.push(e.epoch, Some(&e.graph_mask), e.weight_mask.as_ref());
                for (name, d) in [
                    ("graph-distance", d.graph),
                    ("weight-distance", d.weights),
                    ("joint-distance", d.joint),
                    ("queue-max", d.queue_max),
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
    fn the_codes_joint_rule_is_the_mean_below_epsilon_after_the_floor() {
        // Lookback 1 so that distances start at epoch 2; ε = 0.3; floor: epochs after 3.
        let mut d = GebtDetector::new(Detector::Code, true, true, 1, 0.3, 3);
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
            let m = d.push(i + 1, Some(&mask(g)), Some(&layers(a, b)));
            assert_eq!(m.queue_max, None, "the code's rule has no queue");
            out.push((m.graph, m.weights, m.joint, d.fired()));
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
        let mut d = GebtDetector::new(Detector::Code, true, false, 1, 0.1, 0);
        d.push(1, Some(&mask(&[1, 0])), Some(&layers(&[1], &[1])));
        d.push(2, Some(&mask(&[0, 1])), Some(&layers(&[0], &[0])));
        let m = d.push(3, Some(&mask(&[0, 1])), Some(&layers(&[1], &[1])));
        assert_eq!((m.weights, m.joint), (None, Some(0.0)));
        assert!(d.fired(), "weights are not tracked: graph 0 fires");
    }

    /// Pushes graph masks and two-layer weight masks, epoch 1 first; returns what each epoch
    /// measured and whether it fired.
    fn run(d: &mut GebtDetector, g: &[&[u8]], w: &[(&[u8], &[u8])]) -> Vec<(Distances, bool)> {
        g.iter()
            .zip(w)
            .enumerate()
            .map(|(i, (g, (a, b)))| {
                let m = d.push(i + 1, Some(&mask(g)), Some(&layers(a, b)));
                (m, d.fired())
            })
            .collect()
    }

    #[test]
    fn the_papers_rule_sums_consecutive_distances_and_fires_on_the_queue_max() {
        // Queue of 3, ε = 0.3, no floor. Graph masks of 8 edges, weights of two layers.
        let mut d = GebtDetector::new(Detector::Paper, true, true, 3, 0.3, 0);
        let g: [&[u8]; 8] = [
            &[1, 1, 1, 1, 0, 0, 0, 0], // 1
            &[0, 0, 1, 1, 1, 1, 0, 0], // 2: 4 against epoch 1 → baseline, d_g = 1
            &[0, 0, 1, 1, 1, 1, 0, 0], // 3: 0
            &[0, 1, 0, 1, 1, 1, 0, 0], // 4: 2 → 0.5
            &[0, 1, 0, 1, 1, 1, 0, 0], // 5: 0
            &[0, 1, 0, 1, 1, 1, 0, 0], // 6: 0
            &[0, 1, 0, 1, 1, 1, 0, 0], // 7: 0
            &[0, 1, 0, 1, 1, 1, 0, 0], // 8: 0
        ];
        let w: [(&[u8], &[u8]); 8] = [
            (&[1, 1, 0, 0], &[1, 0]), // 1
            (&[0, 0, 1, 1], &[1, 0]), // 2: 4 + 0 = 4 → baseline, d_w = 1
            (&[0, 0, 1, 1], &[1, 0]), // 3: 0
            (&[0, 0, 1, 1], &[1, 0]), // 4: 0
            (&[0, 0, 1, 1], &[0, 1]), // 5: 0 + 2 → 0.5
            (&[0, 0, 1, 1], &[0, 1]), // 6: 0
            (&[0, 0, 1, 1], &[0, 1]), // 7: 0
            (&[0, 1, 0, 1], &[0, 1]), // 8: 2 → 0.5
        ];
        let out = run(&mut d, &g, &w);
        let joint: Vec<Option<f64>> = out.iter().map(|(m, _)| m.joint).collect();
        assert_eq!(
            joint,
            [
                None,
                Some(2.0),
                Some(0.0),
                Some(0.5),
                Some(0.5),
                Some(0.0),
                Some(0.0),
                Some(0.5)
            ],
            "d_g + d_w, each against the previous epoch only"
        );
        let queue_max: Vec<Option<f64>> = out.iter().map(|(m, _)| m.queue_max).collect();
        // The queue holds epochs 2–4 at epoch 4, 5–7 at epoch 7.
        assert_eq!(
            queue_max,
            [
                None,
                None,
                None,
                Some(2.0),
                Some(0.5),
                Some(0.5),
                Some(0.5),
                Some(0.5)
            ]
        );
        let fired: Vec<bool> = out.iter().map(|(_, f)| *f).collect();
        assert_eq!(
            fired, [false; 8],
            "0.5 stays in the queue of 3 through epoch 8"
        );
        // A queue of 2 forgets epoch 5 at epoch 7: max(0, 0) fires there.
        let mut d = GebtDetector::new(Detector::Paper, true, true, 2, 0.3, 0);
        let fired: Vec<bool> = run(&mut d, &g, &w).iter().map(|(_, f)| *f).collect();
        assert_eq!(
            fired,
            [false, false, false, false, false, false, true, false]
        );
    }

    #[test]
    fn the_codes_mean_fires_where_the_papers_sum_does_not() {
        // One graph edge flips at every epoch from epoch 4 (d_g = 0.25 each epoch: 2 of the 8
        // baseline), the weights settle. Mean 0.125 < 0.2 fires the code's rule; the paper's sum
        // stays 0.25.
        let g: [&[u8]; 9] = [
            &[1, 1, 1, 1, 0, 0, 0, 0], // 1
            &[0, 0, 0, 0, 1, 1, 1, 1], // 2: 8
            &[0, 0, 0, 0, 1, 1, 1, 1], // 3
            &[0, 0, 0, 0, 1, 1, 1, 1], // 4
            &[0, 0, 0, 1, 0, 1, 1, 1], // 5
            &[0, 0, 0, 0, 1, 1, 1, 1], // 6
            &[0, 0, 0, 1, 0, 1, 1, 1], // 7
            &[0, 0, 0, 0, 1, 1, 1, 1], // 8
            &[0, 0, 0, 1, 0, 1, 1, 1], // 9
        ];
        let w: [(&[u8], &[u8]); 9] = [
            (&[1, 1, 0, 0], &[1, 0]),
            (&[0, 0, 1, 1], &[0, 1]),
            (&[0, 0, 1, 1], &[0, 1]),
            (&[0, 0, 1, 1], &[0, 1]),
            (&[0, 0, 1, 1], &[0, 1]),
            (&[0, 0, 1, 1], &[0, 1]),
            (&[0, 0, 1, 1], &[0, 1]),
            (&[0, 0, 1, 1], &[0, 1]),
            (&[0, 0, 1, 1], &[0, 1]),
        ];
        let mut code = GebtDetector::new(Detector::Code, true, true, 3, 0.2, 6);
        let out = run(&mut code, &g, &w);
        // The code's distances start at epoch 4 (three masks behind): graph 8 against epoch 1
        // is the baseline; from epoch 5 the graph is 2 against some of the last three → 0.25;
        // the weights: 6 against epoch 1 at epoch 4 (baseline), then 0.
        assert_eq!(out[4].0.graph, Some(0.25));
        assert_eq!(out[6].0.joint, Some(0.125));
        let fired: Vec<bool> = out.iter().map(|(_, f)| *f).collect();
        assert_eq!(
            fired,
            [false, false, false, false, false, false, true, true, true],
            "the mean, first after epoch 6"
        );
        let mut paper = GebtDetector::new(Detector::Paper, true, true, 3, 0.2, 0);
        let out = run(&mut paper, &g, &w);
        assert_eq!(out[6].0.joint, Some(0.25), "2 of 8 flipped, weights 0");
        assert!(
            out.iter().all(|(_, f)| !f),
            "the sum 0.25 never falls below 0.2"
        );
    }

    #[test]
    fn the_papers_rule_fires_on_a_slow_drift_that_the_codes_window_sees() {
        // Graph only (GEB tickets). The mask flips between two halves for three epochs, then
        // drifts by one swap an epoch: consecutive distances are 2 (an eighth of the first, 16),
        // but against the mask three epochs back the code counts 6.
        let g: [&[u8]; 9] = [
            &[1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], // 1: A
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], // 2: B, 16 from A
            &[1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], // 3: A
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], // 4: B
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1], // 5: one swap from B
            &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], // 6
            &[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1], // 7
            &[1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1], // 8
            &[1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1], // 9
        ];
        let push_all = |d: &mut GebtDetector| -> Vec<(Distances, bool)> {
            g.iter()
                .enumerate()
                .map(|(i, g)| {
                    let m = d.push(i + 1, Some(&mask(g)), None);
                    (m, d.fired())
                })
                .collect()
        };
        // ε = 0.2: the paper's consecutive distance is 1 at epochs 2–4, then 2 / 16 = 0.125.
        let mut paper = GebtDetector::new(Detector::Paper, true, false, 3, 0.2, 0);
        let out = push_all(&mut paper);
        assert_eq!(out[3].0.joint, Some(1.0));
        assert_eq!(out[4].0.joint, Some(0.125));
        assert_eq!(
            out[5].0.queue_max,
            Some(1.0),
            "epoch 6: the queue still holds epoch 4"
        );
        let fired: Vec<bool> = out.iter().map(|(_, f)| *f).collect();
        assert_eq!(
            fired,
            [false, false, false, false, false, false, true, true, true],
            "epoch 7: the queue holds epochs 5–7, all 0.125"
        );
        // The code: its first value (epoch 4, against A, B, A) is 16; from epoch 7 the drift
        // counts 2, 4, 6 against the masks 1, 2 and 3 epochs back → 6 / 16.
        let mut code = GebtDetector::new(Detector::Code, true, false, 3, 0.2, 6);
        let out = push_all(&mut code);
        assert_eq!(out[3].0.joint, Some(1.0));
        assert_eq!(out[6].0.joint, Some(0.375));
        assert_eq!(out[7].0.joint, Some(0.375));
        assert!(out.iter().all(|(_, f)| !f));
    }

    #[test]
    fn the_detector_defaults_to_the_paper_and_its_floor_to_the_rule() {
        let o = GcnTicketsOptions::default();
        assert_eq!((o.detector, o.after_epoch()), (Detector::Paper, 0));
        let o: GcnTicketsOptions = toml::from_str("detector = \"code\"").unwrap();
        assert_eq!((o.detector, o.after_epoch()), (Detector::Code, 6));
        let o: GcnTicketsOptions = toml::from_str("detector = \"paper\"\nafter_epoch = 4").unwrap();
        assert_eq!((o.detector, o.after_epoch()), (Detector::Paper, 4));
        assert!(toml::from_str::<GcnTicketsOptions>("detector = \"mean\"").is_err());
    }
}
