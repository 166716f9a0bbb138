//! `gcn-tickets`: graph early-bird tickets (GEBT; You et al. 2022, reference GATECH-EIC/GEBT).
//! The GCN trains from θ₀ with real-valued masks on its weights and its edges under L1 penalties
//! (UGS's joint sparsification, [`lottery_gcn::GcnTask::train_masks_jointly`]); after every
//! epoch the graph mask (the `graph_density` of edges with the largest |m_g|) and the weight mask
//! (the run's density of weights with the largest |m_w|, one global threshold) are drawn, and
//! their distances to the previous epoch's masks (fraction of entries that differ) enter a FIFO
//! window. The joint early-bird ticket is drawn at the first epoch where the window is full and
//! every graph distance is below `graph_epsilon` and every weight distance below
//! `weight_epsilon` ([`JointDetector`]); then the ticket trains from θ₀ by `[train]`. Without a
//! draw by `max_epochs`, the last masks are the ticket (`detected` = 0).
//!
//! Recorded under split `gcn-tickets`: per epoch `graph-distance/eNNN`, `weight-distance/eNNN`,
//! `val-accuracy/eNNN`; then `drawn-epoch`, `detected`, and `train-flops-ratio`: the training FLOPs of
//! search (dense) + ticket training against training the dense network for the same schedule
//! (a training step = 3 forward passes, so the factor cancels).

use std::collections::VecDeque;
use std::ops::ControlFlow;

use lottery_core::graph::{edge_count, graph_density, keep_top_edges};
use lottery_core::plugin::family_mut;
use lottery_core::topk::top_k_mask;
use lottery_core::{
    FlatTensor, GRAPH_MASK, Mask, MaskSet, ParamValues, PruneContext, PruneError, Pruner,
    PrunerEntry, PrunerOptions,
};
use lottery_gcn::{GcnTask, JointMaskSpec};
use serde::{Deserialize, Serialize};

/// Options of `gcn-tickets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcnTicketsOptions {
    /// Fraction of edges kept; 0: the density UGS's schedule pairs with the weight density.
    pub graph_density: f64,
    /// Most epochs of search.
    pub max_epochs: usize,
    /// Consecutive-epoch distances kept in the FIFO window.
    pub window: usize,
    /// Largest graph-mask distance in the window that draws the ticket.
    pub graph_epsilon: f64,
    /// Largest weight-mask distance in the window that draws the ticket.
    pub weight_epsilon: f64,
    /// L1 strength on the edge mask during the search.
    pub graph_l1: f64,
    /// L1 strength on the weight masks during the search.
    pub weight_l1: f64,
}

impl Default for GcnTicketsOptions {
    fn default() -> Self {
        Self {
            graph_density: 0.0,
            max_epochs: 200,
            window: 5,
            graph_epsilon: 0.1,
            weight_epsilon: 0.1,
            graph_l1: 1e-2,
            weight_l1: 1e-2,
        }
    }
}

impl GcnTicketsOptions {
    fn check(&self) -> Result<(), String> {
        if self.max_epochs == 0 || self.window == 0 {
            return Err("max_epochs and window must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.graph_density) {
            return Err(format!(
                "graph_density must be in [0, 1]; got {}",
                self.graph_density
            ));
        }
        if !(self.graph_epsilon > 0.0 && self.weight_epsilon > 0.0) {
            return Err("graph_epsilon and weight_epsilon must be positive".into());
        }
        if !(self.graph_l1 >= 0.0 && self.weight_l1 >= 0.0) {
            return Err("graph_l1 and weight_l1 must be ≥ 0".into());
        }
        Ok(())
    }
}

impl PrunerOptions for GcnTicketsOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(GcnTickets { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<GcnTicketsOptions>("gcn-tickets", "graph early-bird tickets (GEBT): joint edge and weight masks drawn when both stop changing (GCN)").needing(lottery_core::plugin::capability::GRAPH) }

/// The joint early-bird detector: a FIFO window of the distances between consecutive graph masks
/// and between consecutive weight masks.
#[derive(Debug, Clone)]
pub struct JointDetector {
    window: usize,
    graph_epsilon: f64,
    weight_epsilon: f64,
    last: Option<(Mask, MaskSet)>,
    graph: VecDeque<f64>,
    weights: VecDeque<f64>,
}

impl JointDetector {
    /// A detector over `window` consecutive distances.
    pub fn new(window: usize, graph_epsilon: f64, weight_epsilon: f64) -> Self {
        Self {
            window,
            graph_epsilon,
            weight_epsilon,
            last: None,
            graph: VecDeque::new(),
            weights: VecDeque::new(),
        }
    }

    /// Adds the masks of one epoch; returns the distances to the previous epoch's (None at the
    /// first epoch).
    pub fn push(&mut self, graph: Mask, weights: MaskSet) -> Option<(f64, f64)> {
        let d = self.last.as_ref().map(|(g, w)| {
            let differ: usize = w
                .iter()
                .map(|(n, m)| {
                    m.keep
                        .iter()
                        .zip(&weights.get(n).expect("same parameters").keep)
                        .filter(|(a, b)| a != b)
                        .count()
                })
                .sum();
            (g.distance(&graph), differ as f64 / w.numel().max(1) as f64)
        });
        if let Some((dg, dw)) = d {
            self.graph.push_back(dg);
            self.weights.push_back(dw);
            if self.graph.len() > self.window {
                self.graph.pop_front();
                self.weights.pop_front();
            }
        }
        self.last = Some((graph, weights));
        d
    }

    /// Whether the window is full and every distance in it is below its ε.
    pub fn fired(&self) -> bool {
        self.graph.len() == self.window
            && self.graph.iter().all(|&d| d < self.graph_epsilon)
            && self.weights.iter().all(|&d| d < self.weight_epsilon)
    }

    /// The latest masks.
    pub fn masks(&self) -> Option<&(Mask, MaskSet)> {
        self.last.as_ref()
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
        o.check().map_err(|why| PruneError::Unsupported {
            method: "gcn-tickets".into(),
            why,
        })?;
        let edges = edge_count(ctx.target, "gcn-tickets")?;
        let keep_edges = graph_density(o.graph_density, ctx.goal.density)?.keep_count(edges);
        let names: Vec<String> = ctx.prunable().into_iter().map(|p| p.name).collect();
        let theta0 = ctx.target.values(&names)?;
        let density = ctx.goal.density;
        let scope = ctx.goal.scope;
        let spec = JointMaskSpec {
            epochs: o.max_epochs,
            graph_l1: o.graph_l1,
            weight_l1: o.weight_l1,
        };
        let mut detector = JointDetector::new(o.window, o.graph_epsilon, o.weight_epsilon);
        let mut drawn: Option<usize> = None;
        let mut last_epoch = 0;
        let mut failure: Option<PruneError> = None;
        let mut rows: Vec<(String, f64)> = vec![];
        let progress = ctx.progress.clone();
        progress.set_length(o.max_epochs as u64);
        ctx.target.set_phase(0, "search");
        family_mut::<GcnTask>(ctx.target, "gcn-tickets", "a graph to mask")?.train_masks_jointly(
            &MaskSet::new(),
            &spec,
            &mut |e| {
                progress.inc(1);
                last_epoch = e.epoch;
                let draw = || -> Result<(Mask, MaskSet), PruneError> {
                    let scores: ParamValues = names
                        .iter()
                        .map(|n| {
                            let t = &e.masks[n];
                            let abs = t.values.iter().map(|x| x.abs()).collect();
                            (n.clone(), FlatTensor::new(t.shape.clone(), abs))
                        })
                        .collect();
                    let w = top_k_mask(&scores, density, scope, None)?;
                    let g: Vec<f32> = e.masks[GRAPH_MASK].values.iter().map(|x| x.abs()).collect();
                    Ok((keep_top_edges(&g, keep_edges, None)?, w))
                };
                match draw() {
                    Ok((g, w)) => {
                        if let Some((dg, dw)) = detector.push(g, w) {
                            rows.push((format!("graph-distance/e{:03}", e.epoch), dg));
                            rows.push((format!("weight-distance/e{:03}", e.epoch), dw));
                        }
                        rows.push((format!("val-accuracy/e{:03}", e.epoch), e.val_accuracy));
                        if detector.fired() {
                            drawn = Some(e.epoch);
                            return ControlFlow::Break(());
                        }
                        ControlFlow::Continue(())
                    }
                    Err(err) => {
                        failure = Some(err);
                        ControlFlow::Break(())
                    }
                }
            },
        )?;
        if let Some(err) = failure {
            return Err(err);
        }
        // The search's rows, named by their epoch (`graph-distance/e007`).
        for (metric, value) in rows {
            ctx.target.record("gcn-tickets", &metric, value);
        }
        let (graph, weights) = detector
            .masks()
            .cloned()
            .ok_or_else(|| PruneError::Internal("no search epoch ran".into()))?;
        let search_epochs = drawn.unwrap_or(last_epoch);
        let mut mask = weights;
        mask.insert(GRAPH_MASK, graph);
        ctx.target.rewind(&theta0, 0)?;
        ctx.target.set_phase(0, "ticket");
        ctx.target
            .record("gcn-tickets", "drawn-epoch", search_epochs as f64);
        ctx.target
            .record("gcn-tickets", "detected", drawn.is_some() as u8 as f64);
        let clock = ctx.target.clock();
        let train_epochs = (clock.run_steps / clock.steps_per_epoch.max(1)) as f64;
        if let (Ok(dense), Ok(ticket)) = (
            ctx.target.mask_flops(&MaskSet::new()),
            ctx.target.mask_flops(&mask),
        ) {
            let ratio = (search_epochs as f64 * dense + train_epochs * ticket)
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

    fn mask(bits: &[u8]) -> Mask {
        Mask {
            shape: vec![bits.len()],
            keep: bits.iter().map(|&b| b == 1).collect(),
        }
    }

    fn weights(bits: &[u8]) -> MaskSet {
        let mut s = MaskSet::new();
        s.insert("w", mask(bits));
        s
    }

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<GcnTicketsOptions>("window = \"x\"");
    }

    #[test]
    fn the_detector_fires_exactly_as_the_rule_says() {
        // Window 2, ε = 0.3 for both. Masks of 4 entries: one flip = distance 0.25.
        let mut d = JointDetector::new(2, 0.3, 0.3);
        let seq: [(&[u8], &[u8]); 6] = [
            (&[1, 1, 0, 0], &[1, 0, 1, 0]), // epoch 1: no distance yet
            (&[0, 0, 1, 1], &[1, 0, 1, 0]), // graph 1.0, weights 0
            (&[0, 1, 1, 0], &[1, 0, 1, 0]), // graph 0.5, weights 0
            (&[0, 1, 1, 0], &[1, 0, 0, 1]), // graph 0, weights 0.5
            (&[0, 1, 0, 1], &[1, 0, 0, 1]), // graph 0.5, weights 0
            (&[0, 1, 1, 1], &[1, 0, 0, 1]), // graph 0.25, weights 0
        ];
        let mut fired_at = vec![];
        for (i, (g, w)) in seq.iter().enumerate() {
            let dist = d.push(mask(g), weights(w));
            if i == 0 {
                assert_eq!(dist, None);
            }
            if d.fired() {
                fired_at.push(i + 1);
            }
        }
        // Windows: (1.0,0.5) (0.5,0) (0,0.5) (0.5,0.25) graph; weights (0,0) (0,0.5) (0.5,0) (0,0)
        // — no window has both below 0.3 until two calm epochs in a row.
        assert!(fired_at.is_empty(), "{fired_at:?}");
        d.push(mask(&[0, 1, 1, 1]), weights(&[1, 0, 0, 1])); // epoch 7: graph 0, weights 0
        assert!(d.fired(), "window (0.25, 0) and (0, 0) is calm");
    }

    #[test]
    fn the_detector_needs_a_full_window() {
        let mut d = JointDetector::new(3, 0.1, 0.1);
        for _ in 0..3 {
            d.push(mask(&[1, 0]), weights(&[0, 1]));
            assert!(!d.fired());
        }
        d.push(mask(&[1, 0]), weights(&[0, 1]));
        assert!(d.fired(), "three zero distances fill the window");
    }
}
