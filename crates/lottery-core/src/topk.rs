//! Exact top-k masking, global or per layer, with deterministic tie-breaking.
//!
//! The count kept is computed once ([`Density::keep_count`]) and hit exactly: reference code that
//! thresholds with `score <= kth` overshoots when scores tie at the threshold. Ties are broken by
//! position: the entry of the parameter earlier in name order, then the lower flat index, wins.
//! Entries already pruned by `current` are never revived.

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
    // One lookup per parameter: the flags of entries still alive (all, without `current`).
    let alive_flags_of = |name: &str, n: usize| -> Vec<bool> {
        match current.and_then(|m| m.get(name)) {
            Some(m) => m.keep.clone(),
            None => vec![true; n],
        }
    };
    match scope {
        Scope::Layerwise => {
            let mut out = MaskSet::new();
            for (name, t) in scores {
                let alive_flags = alive_flags_of(name, t.values.len());
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
                .map(|(name, t)| alive_flags_of(name, t.values.len()))
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
/// then earlier position). Only alive entries are ranked, each with its score and position inline,
/// so the selection reads memory in order.
fn select_top(parts: &[(&Vec<f32>, &Vec<bool>)], k: usize) -> Vec<Vec<bool>> {
    let n: usize = parts.iter().map(|(s, _)| s.len()).sum();
    let mut keep = vec![false; n];
    let mut alive: Vec<(f32, u32)> = Vec::new();
    let mut dead: Vec<(f32, u32)> = Vec::new();
    let mut off = 0u32;
    for (s, a) in parts {
        for (i, (&score, &is_alive)) in s.iter().zip(a.iter()).enumerate() {
            if is_alive {
                alive.push((score, off + i as u32));
            } else {
                dead.push((score, off + i as u32));
            }
        }
        off += s.len() as u32;
    }
    let better = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k >= alive.len() {
        alive.iter().for_each(|&(_, i)| keep[i as usize] = true);
        // Only when more are asked than alive: the best pruned entries fill the count.
        dead.sort_unstable_by(better);
        dead.iter()
            .take(k - alive.len())
            .for_each(|&(_, i)| keep[i as usize] = true);
    } else if k > 0 {
        alive.select_nth_unstable_by(k - 1, better);
        alive[..k]
            .iter()
            .for_each(|&(_, i)| keep[i as usize] = true);
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
