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
/// then earlier position).
///
/// The k-th best alive score is found by a radix select on the scores' order-preserving bits
/// (two histogram passes of 16 bits each), so the selection streams over the scores without
/// sorting or copying them: entries above that score are kept, and entries equal to it are kept
/// in position order until the count is exact. Only when more are asked than alive are the best
/// pruned entries ranked (by [`rank_key`]) to fill the count.
fn select_top(parts: &[(&[f32], &[bool])], k: usize) -> Vec<Vec<bool>> {
    // Alive entries counted by the high 16 bits of their ordered score: the first pass of the
    // selection, and the alive count.
    let mut high = vec![0usize; 1 << 16];
    for (s, a) in parts {
        for (&score, &is_alive) in s.iter().zip(a.iter()) {
            high[(ordered_bits(score) >> 16) as usize] += is_alive as usize;
        }
    }
    let alive_count: usize = high.iter().sum();
    if k >= alive_count {
        return keep_alive_and_fill(parts, k - alive_count);
    }
    if k == 0 {
        return parts.iter().map(|(s, _)| vec![false; s.len()]).collect();
    }
    // Rank of the wanted entry counted from the best: the k-th best alive (1-based).
    let (threshold, above) = kth_best_alive(parts, &high, k);
    // Entries equal to the threshold kept, in position order, to make the count exact.
    let mut ties_left = k - above;
    parts
        .iter()
        .map(|(s, a)| {
            s.iter()
                .zip(a.iter())
                .map(|(&score, &is_alive)| {
                    if !is_alive {
                        return false;
                    }
                    let o = ordered_bits(score);
                    if o > threshold {
                        true
                    } else if o == threshold && ties_left > 0 {
                        ties_left -= 1;
                        true
                    } else {
                        false
                    }
                })
                .collect()
        })
        .collect()
}

/// The order-preserving bits of the `k`-th best alive score (`1 <= k <=` alive) and how many
/// alive entries score strictly better, given `high`, the alive entries counted by the high 16
/// bits of their ordered score.
fn kth_best_alive(parts: &[(&[f32], &[bool])], high: &[usize], k: usize) -> (u32, usize) {
    let alive = || {
        parts.iter().flat_map(|(s, a)| {
            s.iter()
                .zip(a.iter())
                .filter(|(_, is_alive)| **is_alive)
                .map(|(&score, _)| ordered_bits(score))
        })
    };
    // The bucket, counted from the top, where the k-th best falls, and how many lie above it.
    let descend = |hist: &[usize], mut wanted: usize| {
        for bucket in (0..hist.len()).rev() {
            if hist[bucket] >= wanted {
                return (bucket as u32, wanted);
            }
            wanted -= hist[bucket];
        }
        unreachable!("the histogram holds at least the wanted count")
    };
    let (high_bucket, wanted) = descend(high, k);
    let mut low = vec![0usize; 1 << 16];
    alive()
        .filter(|o| o >> 16 == high_bucket)
        .for_each(|o| low[(o & 0xFFFF) as usize] += 1);
    let (low_bucket, wanted_in_low) = descend(&low, wanted);
    let threshold = (high_bucket << 16) | low_bucket;
    // Better than the threshold: everything before the wanted entry, less its equals ahead of it.
    let above = k - wanted_in_low;
    (threshold, above)
}

/// Every alive entry, plus the `fill` best pruned ones.
fn keep_alive_and_fill(parts: &[(&[f32], &[bool])], fill: usize) -> Vec<Vec<bool>> {
    let mut out: Vec<Vec<bool>> = parts.iter().map(|(_, a)| a.to_vec()).collect();
    if fill == 0 {
        return out;
    }
    let mut dead: Vec<(u64, usize)> = Vec::new();
    for (p, (s, a)) in parts.iter().enumerate() {
        let off: u32 = parts[..p].iter().map(|(s, _)| s.len() as u32).sum();
        for (i, (&score, &is_alive)) in s.iter().zip(a.iter()).enumerate() {
            if !is_alive {
                dead.push((rank_key(score, off + i as u32), p));
            }
        }
    }
    dead.sort_unstable();
    let mut starts = Vec::with_capacity(parts.len());
    let mut off = 0usize;
    for (s, _) in parts {
        starts.push(off);
        off += s.len();
    }
    for &(key, p) in dead.iter().take(fill) {
        let index = (key & 0xFFFF_FFFF) as usize;
        out[p][index - starts[p]] = true;
    }
    out
}

/// The bits of `score` as an unsigned integer whose ascending order is `f32::total_cmp`'s.
fn ordered_bits(score: f32) -> u32 {
    let bits = score.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// A key whose ascending order is: higher score first (IEEE total order, as `f32::total_cmp`),
/// then lower position.
fn rank_key(score: f32, position: u32) -> u64 {
    ((!ordered_bits(score) as u64) << 32) | position as u64
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

    /// The order `select_top` promises, by sorting: alive first, then higher score, then position.
    fn select_top_by_sorting(parts: &[(&[f32], &[bool])], k: usize) -> Vec<Vec<bool>> {
        let mut keys: Vec<(bool, u64)> = vec![];
        let mut off = 0u32;
        for (s, a) in parts {
            for (i, (&score, &is_alive)) in s.iter().zip(a.iter()).enumerate() {
                keys.push((!is_alive, rank_key(score, off + i as u32)));
            }
            off += s.len() as u32;
        }
        keys.sort_unstable();
        let n = keys.len();
        let mut keep = vec![false; n];
        for (_, key) in keys.iter().take(k) {
            keep[(key & 0xFFFF_FFFF) as usize] = true;
        }
        let mut out = vec![];
        let mut off = 0;
        for (s, _) in parts {
            out.push(keep[off..off + s.len()].to_vec());
            off += s.len();
        }
        out
    }

    #[test]
    fn the_radix_selection_equals_a_full_sort() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for trial in 0..300 {
            // Few distinct values (many ties), values that share their high bits, signed zeros,
            // infinities and wide ranges, over layers with pruned entries.
            let kind = trial % 4;
            let layers: Vec<(Vec<f32>, Vec<bool>)> = (0..1 + trial % 4)
                .map(|l| {
                    let n = 1 + (trial * 7 + l * 13) % 90;
                    let values = (0..n)
                        .map(|_| match kind {
                            0 => rng.random_range(0..4) as f32,
                            1 => 1.0 + rng.random_range(0..64) as f32 * f32::EPSILON,
                            2 => [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, -1.5, 1e-40]
                                [rng.random_range(0..6)],
                            _ => rng.random_range(-1e6f32..1e6),
                        })
                        .collect();
                    let alive = (0..n).map(|_| rng.random_range(0..4) != 0).collect();
                    (values, alive)
                })
                .collect();
            let parts: Vec<(&[f32], &[bool])> = layers
                .iter()
                .map(|(v, a)| (v.as_slice(), a.as_slice()))
                .collect();
            let n: usize = layers.iter().map(|(v, _)| v.len()).sum();
            for k in [0, 1, n / 3, n / 2, n.saturating_sub(1), n] {
                assert_eq!(
                    select_top(&parts, k),
                    select_top_by_sorting(&parts, k),
                    "trial {trial}, k {k}"
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
