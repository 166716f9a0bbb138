//! Exact top-k masking, global or per layer, with deterministic tie-breaking.
//!
//! The count kept is computed once ([`Density::keep_count`]) and hit exactly: reference code that
//! thresholds with `score <= kth` overshoots when scores tie at the threshold. Ties are broken by
//! position: the entry of the parameter earlier in name order, then the lower flat index, wins.
//! Entries already pruned by `current` are never revived.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::density::Density;
use crate::error::PruneError;
use crate::mask::{Mask, MaskSet};
use crate::params::ParamValues;

/// Where the count of kept weights is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One threshold over all prunable parameters.
    #[default]
    Global,
    /// Each parameter keeps the same fraction.
    Layerwise,
}

/// Keeps the highest-scoring entries so that exactly `density.keep_count(n)` survive (globally, or
/// per parameter for [`Scope::Layerwise`]). `current`, when given, marks entries already pruned.
pub fn top_k_mask(
    scores: &ParamValues,
    density: Density,
    scope: Scope,
    current: Option<&MaskSet>,
) -> Result<MaskSet, PruneError> {
    for (name, t) in scores {
        if let Some(i) = t.values.iter().position(|v| v.is_nan()) {
            return Err(PruneError::Internal(format!("score of {name}[{i}] is NaN")));
        }
    }
    let alive = |name: &str, i: usize| current.and_then(|m| m.get(name)).is_none_or(|m| m.keep[i]);
    match scope {
        Scope::Layerwise => {
            let mut out = MaskSet::new();
            for (name, t) in scores {
                let alive_flags: Vec<bool> = (0..t.values.len()).map(|i| alive(name, i)).collect();
                let k = density.keep_count(t.values.len());
                let keep = select_top(&[(&t.values, &alive_flags)], k);
                out.insert(
                    name.clone(),
                    Mask {
                        shape: t.shape.clone(),
                        keep: keep.into_iter().next().unwrap(),
                    },
                );
            }
            Ok(out)
        }
        Scope::Global => {
            let alive_flags: Vec<Vec<bool>> = scores
                .iter()
                .map(|(name, t)| (0..t.values.len()).map(|i| alive(name, i)).collect())
                .collect();
            let parts: Vec<(&Vec<f32>, &Vec<bool>)> = scores
                .values()
                .map(|t| &t.values)
                .zip(alive_flags.iter())
                .collect();
            let total: usize = scores.values().map(|t| t.values.len()).sum();
            let keeps = select_top(&parts, density.keep_count(total));
            let mut out = MaskSet::new();
            for ((name, t), keep) in scores.iter().zip(keeps) {
                out.insert(
                    name.clone(),
                    Mask {
                        shape: t.shape.clone(),
                        keep,
                    },
                );
            }
            Ok(out)
        }
    }
}

/// Marks the `k` best entries over the concatenation of `parts` (alive first, then higher score,
/// then earlier position).
fn select_top(parts: &[(&Vec<f32>, &Vec<bool>)], k: usize) -> Vec<Vec<bool>> {
    let mut flat_scores = Vec::new();
    let mut flat_alive = Vec::new();
    for (s, a) in parts {
        flat_scores.extend_from_slice(s);
        flat_alive.extend_from_slice(a);
    }
    let n = flat_scores.len();
    let mut keep = vec![false; n];
    if k >= n {
        keep.iter_mut().for_each(|x| *x = true);
    } else if k > 0 {
        let better = |a: &u32, b: &u32| -> Ordering {
            let (a, b) = (*a as usize, *b as usize);
            flat_alive[b]
                .cmp(&flat_alive[a])
                .then_with(|| flat_scores[b].total_cmp(&flat_scores[a]))
                .then_with(|| a.cmp(&b))
        };
        let mut idx: Vec<u32> = (0..n as u32).collect();
        idx.select_nth_unstable_by(k - 1, better);
        for &i in &idx[..k] {
            keep[i as usize] = true;
        }
    }
    let mut out = Vec::with_capacity(parts.len());
    let mut off = 0;
    for (s, _) in parts {
        out.push(keep[off..off + s.len()].to_vec());
        off += s.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::FlatTensor;
    use rand::{RngExt, SeedableRng};

    fn scores(layers: &[(&str, Vec<f32>)]) -> ParamValues {
        layers
            .iter()
            .map(|(n, v)| (n.to_string(), FlatTensor::new(vec![v.len()], v.clone())))
            .collect()
    }

    #[test]
    fn ties_resolve_by_position_and_count_is_exact() {
        let s = scores(&[("a", vec![1.0, 1.0, 1.0, 1.0]), ("b", vec![1.0, 1.0])]);
        let m = top_k_mask(&s, Density::new(0.5).unwrap(), Scope::Global, None).unwrap();
        assert_eq!(m.kept(), 3);
        assert_eq!(m.get("a").unwrap().keep, vec![true, true, true, false]);
        assert_eq!(m.get("b").unwrap().keep, vec![false, false]);
    }

    #[test]
    fn exact_counts_on_random_scores_with_many_ties() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for trial in 0..20 {
            let layers: Vec<(String, Vec<f32>)> = (0..4)
                .map(|l| {
                    (
                        format!("l{l}"),
                        (0..(50 + 37 * l + trial))
                            .map(|_| (rng.random_range(0..5)) as f32)
                            .collect(),
                    )
                })
                .collect();
            let s: ParamValues = layers
                .iter()
                .map(|(n, v)| (n.clone(), FlatTensor::new(vec![v.len()], v.clone())))
                .collect();
            let total: usize = s.values().map(|t| t.values.len()).sum();
            for d in [0.1, 0.01, 0.001, 0.5] {
                let density = Density::new(d).unwrap();
                let g = top_k_mask(&s, density, Scope::Global, None).unwrap();
                assert_eq!(g.kept(), density.keep_count(total));
                let l = top_k_mask(&s, density, Scope::Layerwise, None).unwrap();
                for (name, t) in &s {
                    assert_eq!(
                        l.get(name).unwrap().kept(),
                        density.keep_count(t.values.len())
                    );
                }
                // Every kept score is >= every pruned score (globally).
                let min_kept = g
                    .iter()
                    .flat_map(|(n, m)| {
                        m.keep
                            .iter()
                            .zip(&s[n].values)
                            .filter(|(k, _)| **k)
                            .map(|(_, v)| *v)
                    })
                    .fold(f32::INFINITY, f32::min);
                let max_pruned = g
                    .iter()
                    .flat_map(|(n, m)| {
                        m.keep
                            .iter()
                            .zip(&s[n].values)
                            .filter(|(k, _)| !**k)
                            .map(|(_, v)| *v)
                    })
                    .fold(f32::NEG_INFINITY, f32::max);
                assert!(g.kept() == 0 || min_kept >= max_pruned);
            }
        }
    }

    #[test]
    fn pruned_entries_are_never_revived() {
        let s = scores(&[("a", vec![9.0, 8.0, 1.0, 0.5])]);
        let mut cur = MaskSet::new();
        cur.insert(
            "a",
            Mask {
                shape: vec![4],
                keep: vec![false, true, true, true],
            },
        );
        let m = top_k_mask(&s, Density::new(0.5).unwrap(), Scope::Global, Some(&cur)).unwrap();
        assert_eq!(m.get("a").unwrap().keep, vec![false, true, true, false]);
    }

    #[test]
    fn nan_scores_are_an_error() {
        let s = scores(&[("a", vec![f32::NAN, 1.0])]);
        assert!(top_k_mask(&s, Density::new(0.5).unwrap(), Scope::Global, None).is_err());
    }
}
