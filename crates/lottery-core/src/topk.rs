//! Exact top-k masking, global or per layer, with deterministic tie-breaking.
//!
//! The count kept is computed once ([`Density::keep_count`]) and hit exactly: reference code that
//! thresholds with `score <= kth` overshoots when scores tie at the threshold. Ties are broken by
//! position: the entry of the parameter earlier in name order, then the lower flat index, wins.
//! Entries already pruned by `current` are never revived.

use std::borrow::Cow;

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
    check_no_nan(scores)?;
    match scope {
        Scope::Layerwise => {
            let mut out = MaskSet::new();
            for (name, t) in scores {
                let alive_flags = alive_flags_of(current, name, t.values.len());
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
            let total: usize = scores.values().map(|t| t.values.len()).sum();
            top_k_count(scores, density.keep_count(total), current)
        }
    }
}

/// Keeps exactly the `k` highest-scoring entries over all of `scores` (one global threshold),
/// for methods that count per group themselves (IMP's own rate for the output layer). `current`,
/// when given, marks entries already pruned; they are never revived unless `k` exceeds the alive.
pub fn top_k_count(
    scores: &ParamValues,
    k: usize,
    current: Option<&MaskSet>,
) -> Result<MaskSet, PruneError> {
    check_no_nan(scores)?;
    let alive_flags: Vec<Cow<'_, [bool]>> = scores
        .iter()
        .map(|(name, t)| alive_flags_of(current, name, t.values.len()))
        .collect();
    let parts: Vec<(&[f32], &[bool])> = scores
        .values()
        .map(|t| t.values.as_slice())
        .zip(alive_flags.iter().map(|a| a.as_ref()))
        .collect();
    let keeps = select_top(&parts, k);
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

fn check_no_nan(scores: &ParamValues) -> Result<(), PruneError> {
    for (name, t) in scores {
        if let Some(i) = t.values.iter().position(|v| v.is_nan()) {
            return Err(PruneError::Internal(format!("score of {name}[{i}] is NaN")));
        }
    }
    Ok(())
}

/// The flags of entries still alive in `name` (all of them without `current`).
fn alive_flags_of<'a>(current: Option<&'a MaskSet>, name: &str, n: usize) -> Cow<'a, [bool]> {
    match current.and_then(|m| m.get(name)) {
        Some(m) => Cow::Borrowed(&m.keep),
        None => Cow::Owned(vec![true; n]),
    }
}

/// Marks the `k` best entries over the concatenation of `parts` (alive first, then higher score,
/// then earlier position). Each alive entry is ranked by one integer key that encodes exactly that
/// order, so the selection compares plain `u64`s in memory order.
fn select_top(parts: &[(&[f32], &[bool])], k: usize) -> Vec<Vec<bool>> {
    let n: usize = parts.iter().map(|(s, _)| s.len()).sum();
    let mut keep = vec![false; n];
    let mut alive: Vec<u64> = Vec::with_capacity(n);
    let mut dead: Vec<u64> = Vec::new();
    let mut off = 0u32;
    for (s, a) in parts {
        for (i, (&score, &is_alive)) in s.iter().zip(a.iter()).enumerate() {
            let key = rank_key(score, off + i as u32);
            if is_alive {
                alive.push(key);
            } else {
                dead.push(key);
            }
        }
        off += s.len() as u32;
    }
    let index = |key: &u64| (*key & 0xFFFF_FFFF) as usize;
    if k >= alive.len() {
        alive.iter().for_each(|key| keep[index(key)] = true);
        // Only when more are asked than alive: the best pruned entries fill the count.
        dead.sort_unstable();
        dead.iter()
            .take(k - alive.len())
            .for_each(|key| keep[index(key)] = true);
    } else if k > 0 {
        alive.select_nth_unstable(k - 1);
        alive[..k].iter().for_each(|key| keep[index(key)] = true);
    }
    let mut out = Vec::with_capacity(parts.len());
    let mut off = 0;
    for (s, _) in parts {
        out.push(keep[off..off + s.len()].to_vec());
        off += s.len();
    }
    out
}

/// A key whose ascending order is: higher score first (IEEE total order, as `f32::total_cmp`),
/// then lower position.
fn rank_key(score: f32, position: u32) -> u64 {
    let bits = score.to_bits() as i32;
    // Total order of f32 as signed integers, shifted to unsigned.
    let ordered = ((bits ^ (((bits >> 31) as u32) >> 1) as i32) as u32) ^ 0x8000_0000;
    ((!ordered as u64) << 32) | position as u64
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
    fn rank_keys_order_like_total_cmp_then_position() {
        let values = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-40,
            2.0,
            2.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for (i, &a) in values.iter().enumerate() {
            for (j, &b) in values.iter().enumerate() {
                let expected = b.total_cmp(&a).then((i as u32).cmp(&(j as u32)));
                assert_eq!(
                    rank_key(a, i as u32).cmp(&rank_key(b, j as u32)),
                    expected,
                    "{a} at {i} vs {b} at {j}"
                );
            }
        }
    }

    #[test]
    fn nan_scores_are_an_error() {
        let s = scores(&[("a", vec![f32::NAN, 1.0])]);
        assert!(top_k_mask(&s, Density::new(0.5).unwrap(), Scope::Global, None).is_err());
    }
}
