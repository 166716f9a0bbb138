//! The bottom-k prunes of the flags and how they treat scores tied at the threshold.

use lottery_core::density::{Density, exponential_schedule};
use lottery_core::topk::Scope;
use lottery_core::{Mask, MaskSet, ParamValues, PruneError};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::MiningState;

/// How a bottom-k prune treats the scores tied at its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TieRule {
    /// Exactly the scheduled count `round(target^(k/n) · N)` keeps its flag; ties at the threshold
    /// are broken by a seeded random order.
    #[default]
    Exact,
    /// The reference's rule: `ceil(p · flagged)` weights are pruned with `p = 1 − target^(1/n)`,
    /// the threshold is the highest of their scores, and every flagged weight scoring at or below
    /// it is unflagged, ties included; a prune never leaves fewer than the target's count flagged
    /// (the ties it would cross are then broken at random).
    PruneTied,
}

/// One flagged weight in a prune's ranking: score, random tie-break, layer within the group, index.
type Ranked = (f32, u64, usize, usize);

/// The groups a prune counts in: every flagged parameter together, or each alone.
fn prune_groups(flags: &MaskSet, scope: Scope) -> Vec<Vec<&String>> {
    match scope {
        Scope::Global => vec![flags.iter().map(|(n, _)| n).collect()],
        Scope::Layerwise => flags.iter().map(|(n, _)| vec![n]).collect(),
    }
}

/// The flagged weights of group `names`, best first: highest score, then a seeded random order
/// (`seed`, the prune's index), never position.
fn ranked(
    scores: &ParamValues,
    flags: &MaskSet,
    names: &[&String],
    seed: u64,
) -> Result<Vec<Ranked>, PruneError> {
    let mut alive: Vec<Ranked> = vec![];
    for (layer, name) in names.iter().enumerate() {
        let flag = flags.get(name).expect("name from flags");
        let score = scores.get(*name).ok_or_else(|| {
            PruneError::Internal(format!("no score for flagged parameter {name}"))
        })?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed ^ (layer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        for (i, (&f, &v)) in flag.keep.iter().zip(&score.values).enumerate() {
            let tie = rng.random::<u64>();
            if f {
                if v.is_nan() {
                    return Err(PruneError::Internal(format!("NaN score in {name}")));
                }
                alive.push((v, tie, layer, i));
            }
        }
    }
    alive.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(alive)
}

/// Writes into `out` the flags of group `names`: the first `keep` of `ranked` and nothing else.
fn write_group(
    out: &mut MaskSet,
    flags: &MaskSet,
    names: &[&String],
    ranked: &[Ranked],
    keep: usize,
) {
    let mut masks: Vec<Vec<bool>> = names
        .iter()
        .map(|n| vec![false; flags.get(n).expect("name").numel()])
        .collect();
    for &(_, _, layer, i) in &ranked[..keep] {
        masks[layer][i] = true;
    }
    for (name, keep) in names.iter().zip(masks) {
        let shape = flags.get(name).expect("name").shape.clone();
        out.insert((*name).clone(), Mask { shape, keep });
    }
}

fn group_numel(flags: &MaskSet, names: &[&String]) -> usize {
    names
        .iter()
        .map(|n| flags.get(n).map_or(0, |m| m.numel()))
        .sum()
}

/// The flags after a bottom-k prune: among the flagged weights, exactly `density`'s count (of all
/// weights, globally or per layer) with the highest scores keeps its flag. Scores saturate at 0 and
/// 1, so ties are common; they are broken by a seeded random order (`seed`, the prune's index),
/// never by position, which would empty the layer that sorts last by name (seen at 0.5 % density
/// on LeNet-300-100 with Adam: every flagged score of the middle layer sat at 1.0 with the others).
pub fn bottom_k(
    scores: &ParamValues,
    flags: &MaskSet,
    density: Density,
    scope: Scope,
    seed: u64,
) -> Result<MaskSet, PruneError> {
    let mut out = flags.clone();
    for names in prune_groups(flags, scope) {
        let keep = density.keep_count(group_numel(flags, &names));
        let alive = ranked(scores, flags, &names, seed)?;
        if keep > alive.len() {
            return Err(PruneError::Internal(format!(
                "{keep} weights to keep, only {} flagged",
                alive.len()
            )));
        }
        write_group(&mut out, flags, &names, &alive, keep);
    }
    Ok(out)
}

/// What the reference's tie rule did at one prune, summed over the groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TiedPrune {
    /// Weights unflagged beyond the `ceil(p · flagged)` count because they tied at the threshold.
    pub beyond_count: usize,
    /// Tied weights that kept their flag because the rule would have gone below the floor.
    pub spared_by_floor: usize,
}

/// The flags after a prune by the reference's rule (`utils/net_utils.py:prune`, `BottomK`): in
/// each group, `k = ceil(rate · flagged)`, the threshold is the k-th lowest flagged score, and
/// every flagged weight scoring at or below it loses its flag (a strict `>` keeps), ties
/// included; unless that leaves fewer than `floor`'s count (of all the group's weights) flagged,
/// in which case exactly that count keeps its flag, the ties at the threshold broken by the seeded
/// random order as in [`bottom_k`].
pub fn bottom_k_tied(
    scores: &ParamValues,
    flags: &MaskSet,
    rate: f64,
    floor: Density,
    scope: Scope,
    seed: u64,
) -> Result<(MaskSet, TiedPrune), PruneError> {
    if !(0.0..=1.0).contains(&rate) {
        return Err(PruneError::Internal(format!(
            "prune rate {rate} outside [0, 1]"
        )));
    }
    let mut out = flags.clone();
    let mut stats = TiedPrune::default();
    for names in prune_groups(flags, scope) {
        let alive = ranked(scores, flags, &names, seed)?;
        let n = alive.len();
        let k = ((rate * n as f64).ceil() as usize).min(n);
        let by_rule = if k == 0 {
            n
        } else {
            // Best first: the k-th lowest is at n − k; keep what scores strictly above it.
            let threshold = alive[n - k].0;
            alive.partition_point(|a| a.0 > threshold)
        };
        let floor_count = floor.keep_count(group_numel(flags, &names)).min(n);
        let keep = by_rule.max(floor_count);
        stats.beyond_count += (n - k).saturating_sub(keep);
        stats.spared_by_floor += keep - by_rule;
        write_group(&mut out, flags, &names, &alive, keep);
    }
    Ok((out, stats))
}

/// The tie-break seed of the `k`-th prune of a run seeded `seed`.
pub(crate) fn prune_seed(seed: u64, k: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (k as u64).wrapping_add(0x0070_7275_6e65)
}

/// The flags after the `k`-th of `n` prunes by `rule` (recording, under the prune-tied rule, how
/// many weights the ties took beyond the count and how many the target's floor spared).
#[allow(clippy::too_many_arguments)]
pub(crate) fn prune_flags(
    rule: TieRule,
    state: &MiningState,
    target: &mut dyn lottery_core::PruneTarget,
    goal: Density,
    scope: Scope,
    k: usize,
    n: usize,
    seed: u64,
) -> Result<MaskSet, PruneError> {
    match rule {
        TieRule::Exact => bottom_k(
            &state.scores,
            &state.flags,
            exponential_schedule(goal, k, n),
            scope,
            prune_seed(seed, k),
        ),
        TieRule::PruneTied => {
            // The reference's per-prune rate (`get_prune_rate`): n of them reach the target.
            let rate = 1.0 - f64::from(goal).powf(1.0 / n as f64);
            let (flags, stats) = bottom_k_tied(
                &state.scores,
                &state.flags,
                rate,
                goal,
                scope,
                prune_seed(seed, k),
            )?;
            target.record("mining", "tied-pruned", stats.beyond_count as f64);
            target.record(
                "mining",
                "tied-spared-by-floor",
                stats.spared_by_floor as f64,
            );
            Ok(flags)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery_core::FlatTensor;

    fn layer(n: usize, v: f32) -> FlatTensor {
        FlatTensor::new(vec![n], vec![v; n])
    }

    #[test]
    fn saturated_ties_are_broken_at_random_not_by_layer_order() {
        // Every score at 1.0: a positional tie-break would keep the first layer and empty the last.
        let scores = ParamValues::from([
            ("a".to_string(), layer(1000, 1.0)),
            ("b".to_string(), layer(1000, 1.0)),
            ("c".to_string(), layer(1000, 1.0)),
        ]);
        let flags = MaskSet::dense(scores.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice())));
        let d = Density::new(0.1).unwrap();
        let m = bottom_k(&scores, &flags, d, Scope::Global, 3).unwrap();
        assert_eq!(m.kept(), 300);
        for (name, mask) in m.iter() {
            let k = mask.kept();
            assert!((60..=140).contains(&k), "{name} keeps {k} of 1000");
        }
        assert_eq!(m, bottom_k(&scores, &flags, d, Scope::Global, 3).unwrap());
        assert_ne!(m, bottom_k(&scores, &flags, d, Scope::Global, 4).unwrap());
    }

    #[test]
    fn higher_scores_win_and_unflagged_weights_never_come_back() {
        let scores = ParamValues::from([(
            "w".to_string(),
            FlatTensor::new(vec![6], vec![0.9, 0.1, 0.8, 0.95, 0.2, 0.7]),
        )]);
        let mut flags = MaskSet::new();
        flags.insert(
            "w",
            Mask {
                shape: vec![6],
                // The best score (0.95) is already unflagged.
                keep: vec![true, true, true, false, true, true],
            },
        );
        let m = bottom_k(
            &scores,
            &flags,
            Density::new(0.5).unwrap(),
            Scope::Global,
            0,
        )
        .unwrap();
        assert_eq!(
            m.get("w").unwrap().keep,
            vec![true, false, true, false, false, true]
        );
        let too_many = bottom_k(
            &scores,
            &flags,
            Density::new(1.0).unwrap(),
            Scope::Layerwise,
            0,
        );
        assert!(too_many.is_err());
    }

    fn one_layer(values: Vec<f32>) -> (ParamValues, MaskSet) {
        let n = values.len();
        let scores = ParamValues::from([("w".to_string(), FlatTensor::new(vec![n], values))]);
        let flags = MaskSet::dense([("w", &[n][..])]);
        (scores, flags)
    }

    #[test]
    fn the_tie_rule_prunes_every_score_tied_at_the_threshold() {
        // Four scores at 0 (clamped), then 0.3, 0.5 and four at 1.
        let (scores, flags) = one_layer(vec![0.0, 1.0, 0.0, 0.3, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0]);
        let floor = Density::new(0.1).unwrap();
        // k = ceil(0.25 · 10) = 3: the threshold is 0, and all four zeros go.
        let (m, stats) = bottom_k_tied(&scores, &flags, 0.25, floor, Scope::Global, 0).unwrap();
        assert_eq!(
            m.get("w").unwrap().keep,
            vec![
                false, true, false, true, true, false, true, true, false, true
            ]
        );
        assert_eq!(
            stats,
            TiedPrune {
                beyond_count: 1,
                spared_by_floor: 0
            }
        );
        // The exact count at the same rate keeps round(0.75 · 10) = 8: two zeros stay, at random.
        let exact = bottom_k(
            &scores,
            &flags,
            Density::new(0.75).unwrap(),
            Scope::Global,
            0,
        )
        .unwrap();
        assert_eq!(exact.kept(), 8);
        // The count is rounded up: 0.21 · 10 = 2.1 prunes 3 of 10 distinct scores, not 2.
        let (distinct, _) = one_layer((0..10).map(|i| i as f32 / 10.0).collect());
        let (m, stats) = bottom_k_tied(&distinct, &flags, 0.21, floor, Scope::Global, 0).unwrap();
        assert_eq!(m.kept(), 7);
        assert_eq!(m.get("w").unwrap().keep[..3], [false, false, false]);
        assert_eq!(stats, TiedPrune::default());
        // A rate of 0 prunes nothing.
        let (m, _) = bottom_k_tied(&distinct, &flags, 0.0, floor, Scope::Global, 0).unwrap();
        assert_eq!(m, flags);
    }

    #[test]
    fn the_tie_rule_stops_at_the_floor() {
        // Every score at 1: the rule would unflag everything; the floor of 50 % keeps 5, at random.
        let (scores, flags) = one_layer(vec![1.0; 10]);
        let half = Density::new(0.5).unwrap();
        let (m, stats) = bottom_k_tied(&scores, &flags, 0.25, half, Scope::Global, 1).unwrap();
        assert_eq!(m.kept(), 5);
        assert_eq!(
            stats,
            TiedPrune {
                beyond_count: 2,
                spared_by_floor: 5
            },
            "5 pruned where the count is 3; the floor spared 5 of the 10 the rule would take"
        );
        let (other, _) = bottom_k_tied(&scores, &flags, 0.25, half, Scope::Global, 2).unwrap();
        assert_ne!(m, other, "the tie-break is seeded, not positional");
        // Unflagged weights never come back, whatever their score.
        let mut some = flags.clone();
        some.insert(
            "w",
            Mask {
                shape: vec![10],
                keep: (0..10).map(|i| i < 4).collect(),
            },
        );
        let (m, _) = bottom_k_tied(&scores, &some, 0.5, half, Scope::Global, 1).unwrap();
        assert_eq!(m.kept(), 4, "the floor is capped by what is flagged");
        assert!(m.get("w").unwrap().keep[4..].iter().all(|k| !k));
    }

    #[test]
    fn the_tie_rule_counts_each_layer_alone_when_layerwise() {
        let scores = ParamValues::from([
            (
                "a".to_string(),
                FlatTensor::new(vec![4], vec![0.0, 0.0, 0.0, 1.0]),
            ),
            (
                "b".to_string(),
                FlatTensor::new(vec![4], vec![0.1, 0.2, 0.3, 0.4]),
            ),
        ]);
        let flags = MaskSet::dense([("a", &[4usize][..]), ("b", &[4][..])]);
        let floor = Density::new(0.25).unwrap();
        let (m, stats) = bottom_k_tied(&scores, &flags, 0.25, floor, Scope::Layerwise, 0).unwrap();
        // a: k = 1 at threshold 0 takes all three zeros; b: k = 1 takes 0.1 alone.
        assert_eq!(m.get("a").unwrap().keep, vec![false, false, false, true]);
        assert_eq!(m.get("b").unwrap().keep, vec![false, true, true, true]);
        assert_eq!(stats.beyond_count, 2);
    }
}
