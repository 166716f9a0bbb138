//! Helpers for methods that prune a graph's edges ([`GRAPH_MASK`]) beside the weights (the graph
//! lottery tickets of UGS and GEBT).

use crate::density::Density;
use crate::error::PruneError;
use crate::mask::{Mask, MaskSet};
use crate::params::{FlatTensor, ParamValues};
use crate::plugin::{GRAPH_MASK, PruneTarget};
use crate::topk::top_k_count;

/// UGS's share of the remaining edges pruned per round (the reference's `pruning_percent_adj`).
pub const UGS_GRAPH_RATE: f64 = 0.05;
/// UGS's share of the remaining weights pruned per round (`pruning_percent_wei`).
pub const UGS_WEIGHT_RATE: f64 = 0.2;

/// Number of edges of a graph network, or an error naming `method` when the target has no graph.
pub fn edge_count(target: &dyn PruneTarget, method: &str) -> Result<usize, PruneError> {
    target
        .params()
        .into_iter()
        .find(|p| p.name == GRAPH_MASK)
        .map(|p| p.numel())
        .ok_or_else(|| {
            PruneError::Target(format!(
                "{method} prunes a graph's edges: it needs a graph network (model.name = \"gcn\")"
            ))
        })
}

/// The graph density that UGS's schedule reaches in the round where the weights reach
/// `weight_density`: `(1 − 0.05)^r` with `r = ln d_w / ln(1 − 0.2)` (so 0.8^k pairs with 0.95^k).
/// Graph methods use it when `graph_density` is left at 0.
pub fn paired_graph_density(weight_density: f64) -> f64 {
    let rounds = weight_density.ln() / (1.0 - UGS_WEIGHT_RATE).ln();
    (1.0 - UGS_GRAPH_RATE).powf(rounds)
}

/// The graph density a method was asked for: `option` when set (0 < d ≤ 1), else the density
/// paired with the run's weight density.
pub fn graph_density(option: f64, weight_density: Density) -> Result<Density, PruneError> {
    let d = if option == 0.0 {
        paired_graph_density(weight_density.value())
    } else {
        option
    };
    Density::new(d).map_err(|why| PruneError::Target(format!("graph_density: {why}")))
}

/// Keeps exactly the `keep` highest-scoring edges; `current` marks edges already pruned, which
/// are never revived unless `keep` exceeds those alive.
pub fn keep_top_edges(
    scores: &[f32],
    keep: usize,
    current: Option<&Mask>,
) -> Result<Mask, PruneError> {
    let mut one = ParamValues::new();
    one.insert(
        GRAPH_MASK.to_string(),
        FlatTensor::new(vec![scores.len()], scores.to_vec()),
    );
    let current = current.map(|m| {
        let mut s = MaskSet::new();
        s.insert(GRAPH_MASK, m.clone());
        s
    });
    let mut out = top_k_count(&one, keep, current.as_ref())?;
    Ok(out.take(GRAPH_MASK).expect("the edge mask"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_density_follows_the_ugs_rounds() {
        for k in [1, 3, 8] {
            let d = paired_graph_density(0.8f64.powi(k));
            assert!((d - 0.95f64.powi(k)).abs() < 1e-12, "{k}: {d}");
        }
        assert_eq!(paired_graph_density(1.0), 1.0);
    }

    #[test]
    fn top_edges_keep_exactly_and_never_revive() {
        let m = keep_top_edges(&[0.1, 0.9, 0.5, 0.7], 2, None).unwrap();
        assert_eq!(m.keep, vec![false, true, false, true]);
        let current = Mask {
            shape: vec![4],
            keep: vec![true, false, true, true],
        };
        let m = keep_top_edges(&[0.1, 0.9, 0.5, 0.7], 2, Some(&current)).unwrap();
        assert_eq!(m.keep, vec![false, false, true, true]);
    }
}
