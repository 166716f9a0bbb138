//! `graph-random`: the random pruning baseline of the graph-ticket papers (UGS's "RP"): the run's
//! weight density of random weights (one global uniform draw, as `random`) and `graph_density` of
//! random edges, both exact. Needs a graph network (`model.name = "gcn"`).

use lottery_core::graph::{edge_count, graph_density, keep_top_edges};
use lottery_core::topk::top_k_mask;
use lottery_core::{
    FlatTensor, GRAPH_MASK, MaskSet, ParamValues, PruneContext, PruneError, Pruner, PrunerEntry,
    PrunerOptions,
};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Options of `graph-random`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphRandomOptions {
    /// Fraction of edges kept; 0: the density UGS's schedule pairs with the weight density.
    pub graph_density: f64,
}

impl PrunerOptions for GraphRandomOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(GraphRandomPruner { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<GraphRandomOptions>("graph-random", "graph tickets' random baseline: random edges and random weights (GCN)").needing(lottery_core::plugin::capability::GRAPH) }

/// The random graph pruner.
#[derive(Debug, Clone)]
pub struct GraphRandomPruner {
    options: GraphRandomOptions,
}

fn uniform(seed: u64, salt: &str, n: usize) -> Vec<f32> {
    let stream = salt.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
    (0..n).map(|_| rng.random::<f32>()).collect()
}

impl Pruner for GraphRandomPruner {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        let edges = edge_count(ctx.target, "graph-random")?;
        let scores: ParamValues = ctx
            .prunable()
            .into_iter()
            .map(|p| {
                let v = uniform(ctx.seed, &p.name, p.numel());
                (p.name, FlatTensor::new(p.shape, v))
            })
            .collect();
        let mut mask = top_k_mask(&scores, ctx.goal.density, ctx.goal.scope, None)?;
        let keep = graph_density(self.options.graph_density, ctx.goal.density)?.keep_count(edges);
        mask.insert(
            GRAPH_MASK,
            keep_top_edges(&uniform(ctx.seed, GRAPH_MASK, edges), keep, None)?,
        );
        Ok(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<GraphRandomOptions>(
            "graph_density = \"x\"",
        );
    }
}
