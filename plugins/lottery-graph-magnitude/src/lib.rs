//! `graph-magnitude`: the magnitude baseline for graph tickets: the weights with the largest
//! |θ₀| (one global threshold, as `magnitude`) and the edges with the largest entry
//! `Â_uv = 1/√(d̃_u d̃_v)` of the normalised adjacency (the value the network multiplies by; it
//! keeps edges between low-degree nodes), both exact. Needs a graph network (`model.name = "gcn"`).

use lottery_core::graph::{edge_count, graph_density, keep_top_edges};
use lottery_core::topk::top_k_mask;
use lottery_core::{
    FlatTensor, GRAPH_MASK, MaskSet, ParamValues, PruneContext, PruneError, Pruner, PrunerEntry,
    PrunerOptions,
};
use serde::{Deserialize, Serialize};

/// Options of `graph-magnitude`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphMagnitudeOptions {
    /// Fraction of edges kept; 0: the density UGS's schedule pairs with the weight density.
    pub graph_density: f64,
}

impl PrunerOptions for GraphMagnitudeOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(GraphMagnitudePruner { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<GraphMagnitudeOptions>("graph-magnitude", "graph tickets' magnitude baseline: |θ₀| for weights, normalised-adjacency entry for edges (GCN)").needing(lottery_core::plugin::capability::GRAPH) }

/// The magnitude graph pruner.
#[derive(Debug, Clone)]
pub struct GraphMagnitudePruner {
    options: GraphMagnitudeOptions,
}

impl Pruner for GraphMagnitudePruner {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        let edges = edge_count(ctx.target, "graph-magnitude")?;
        let names: Vec<String> = ctx.prunable().into_iter().map(|p| p.name).collect();
        let scores: ParamValues = ctx
            .target
            .values(&names)?
            .into_iter()
            .map(|(k, t)| {
                let abs = t.values.iter().map(|x| x.abs()).collect();
                (k, FlatTensor::new(t.shape, abs))
            })
            .collect();
        let mut mask = top_k_mask(&scores, ctx.goal.density, ctx.goal.scope, None)?;
        let a_hat = ctx.target.values(&[GRAPH_MASK.to_string()])?;
        let keep = graph_density(self.options.graph_density, ctx.goal.density)?.keep_count(edges);
        mask.insert(
            GRAPH_MASK,
            keep_top_edges(&a_hat[GRAPH_MASK].values, keep, None)?,
        );
        Ok(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<GraphMagnitudeOptions>(
            "graph_density = \"x\"",
        );
    }
}
