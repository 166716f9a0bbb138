//! The level schedule: the kept count of every group of weights at every level, and the mask
//! each level prunes to.

use lottery_core::params::ParamKind;
use lottery_core::topk::top_k_count;
use lottery_core::{Density, MaskSet, ParamValues, PruneContext, PruneError, Scope};

use crate::groups::group_plan;
use crate::{ImpOptions, invalid};

/// Weights pruned together under one count: a pool (the global pool, the output layer, a group of
/// `groups`) or one layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) names: Vec<String>,
    pub(crate) numel: usize,
    pub(crate) rate: f64,
    /// Entries kept at the target (used by [`Landing::EachGroup`]).
    pub(crate) target: usize,
}

/// Where the last level lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landing {
    /// Every group on its own target (layer-wise with one rate).
    EachGroup,
    /// The total on this count: the pool (group 0) keeps what it can of it, the output layer
    /// (group 1) the rest (`output_rate`).
    PoolFirst(usize),
    /// The total on this count, the last level's cut shared among the groups in proportion to
    /// what each would lose at its full rate (one pool, or `groups`).
    Proportional(usize),
}

/// The kept count of every group at every level; level 0 is dense and the last level is the
/// target.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelPlan {
    groups: Vec<Group>,
    counts: Vec<Vec<usize>>,
}

impl LevelPlan {
    pub(crate) fn new(groups: Vec<Group>, landing: Landing) -> Self {
        let geometric = |g: &Group, r: usize| {
            Density::new((1.0 - g.rate).powi(r as i32))
                .expect("(1 - rate)^r lies in (0, 1]")
                .keep_count(g.numel)
        };
        let total_target = match landing {
            Landing::EachGroup => None,
            Landing::PoolFirst(t) | Landing::Proportional(t) => Some(t),
        };
        let reached = |counts: &[usize]| match total_target {
            Some(t) => counts.iter().sum::<usize>() <= t,
            None => counts.iter().zip(&groups).all(|(c, g)| *c <= g.target),
        };
        let mut counts: Vec<Vec<usize>> = vec![groups.iter().map(|g| g.numel).collect()];
        let dense_at_target = match total_target {
            Some(t) => t >= counts[0].iter().sum::<usize>(),
            None => groups.iter().all(|g| g.target >= g.numel),
        };
        if !dense_at_target {
            for r in 1.. {
                let level: Vec<usize> = groups.iter().map(|g| geometric(g, r)).collect();
                if reached(&level) {
                    let prev = counts.last().expect("level 0").clone();
                    counts.push(Self::land(&groups, &prev, &level, landing));
                    break;
                }
                // A group already at its target stays there (layer-wise rounding).
                let level = match total_target {
                    Some(_) => level,
                    None => level
                        .iter()
                        .zip(&groups)
                        .map(|(c, g)| (*c).max(g.target))
                        .collect(),
                };
                counts.push(level);
            }
        }
        Self { groups, counts }
    }

    /// The last level: exactly the target, no group above its previous count nor below its
    /// count at the full rate.
    fn land(groups: &[Group], prev: &[usize], geometric: &[usize], landing: Landing) -> Vec<usize> {
        match landing {
            Landing::EachGroup => groups.iter().map(|g| g.target).collect(),
            Landing::PoolFirst(t) if groups.len() == 1 => vec![t],
            Landing::PoolFirst(t) => {
                // Pool first (group 0), output layer (group 1) takes the rest.
                let output = geometric[1].min(t);
                let pool = (t - output).min(prev[0]);
                vec![pool, t - pool]
            }
            Landing::Proportional(t) => {
                // Each group gets back part of its last cut: the share `(t - Σ geometric) / Σ
                // cut` of it, rounded down, and the units left over go to the largest remainders
                // (the first group on a tie).
                let short = t - geometric.iter().sum::<usize>();
                let cuts: Vec<u128> = prev
                    .iter()
                    .zip(geometric)
                    .map(|(p, g)| (p - g) as u128)
                    .collect();
                let all: u128 = cuts.iter().sum();
                let mut back: Vec<usize> = cuts
                    .iter()
                    .map(|c| (c * short as u128 / all) as usize)
                    .collect();
                let mut left = short - back.iter().sum::<usize>();
                let mut order: Vec<usize> = (0..groups.len()).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(cuts[i] * short as u128 % all));
                for i in order {
                    if left == 0 {
                        break;
                    }
                    back[i] += 1;
                    left -= 1;
                }
                geometric.iter().zip(&back).map(|(g, b)| g + b).collect()
            }
        }
    }

    /// Number of pruning levels (the final ticket is level `levels()`).
    pub fn levels(&self) -> usize {
        self.counts.len() - 1
    }

    /// Overall density of level `r`.
    pub fn density(&self, r: usize) -> f64 {
        let total: usize = self.groups.iter().map(|g| g.numel).sum();
        self.counts[r].iter().sum::<usize>() as f64 / total as f64
    }

    /// The mask of level `r + 1`: each group keeps its count of the largest |θ| among its alive.
    pub(crate) fn next_mask(
        &self,
        r: usize,
        magnitudes: &ParamValues,
        current: &MaskSet,
    ) -> Result<MaskSet, PruneError> {
        let mut out = MaskSet::new();
        for (g, count) in self.groups.iter().zip(&self.counts[r + 1]) {
            let part: ParamValues = g
                .names
                .iter()
                .map(|n| (n.clone(), magnitudes[n].clone()))
                .collect();
            for (name, m) in top_k_count(&part, *count, Some(current))?.iter() {
                out.insert(name.clone(), m.clone());
            }
        }
        Ok(out)
    }
}

/// The level plan of a context: groups from the scope, the output rate or `groups`, rates,
/// targets.
pub fn plan_for(ctx: &PruneContext<'_>, options: &ImpOptions) -> Result<LevelPlan, PruneError> {
    if !options.groups.is_empty() {
        if let Some(q) = options.output_rate {
            return Err(invalid(format!(
                "methods.imp.output_rate = {} is not used beside `groups`: give the output layer \
                 a group of its own, e.g. {{ params = [\"fc.weight\"], rate = {} }}",
                q.0, q.0
            )));
        }
        return group_plan(ctx, options);
    }
    let prunable = ctx.prunable();
    let density = ctx.goal.density;
    let rate = options.rate.0;
    let group = |names: Vec<String>, numel: usize, rate: f64| Group {
        target: density.keep_count(numel),
        names,
        numel,
        rate,
    };
    match (ctx.goal.scope, options.output_rate) {
        (Scope::Layerwise, Some(q)) => Err(invalid(format!(
            "methods.imp.output_rate = {} needs `prune.scope = \"global\"`: layer-wise every \
             layer lands on the target density; for a layer-wise layout with several rates use \
             `groups`",
            q.0
        ))),
        (Scope::Layerwise, None) => Ok(LevelPlan::new(
            prunable
                .iter()
                .map(|p| group(vec![p.name.clone()], p.numel(), rate))
                .collect(),
            Landing::EachGroup,
        )),
        (Scope::Global, output_rate) => {
            let total: usize = prunable.iter().map(|p| p.numel()).sum();
            let output = match output_rate {
                None => None,
                Some(q) => {
                    // The output layer is the last linear weight in the model's declaration order.
                    let last = ctx
                        .target
                        .params()
                        .into_iter()
                        .rfind(|p| p.kind == ParamKind::LinearWeight);
                    let found = last
                        .as_ref()
                        .and_then(|last| prunable.iter().find(|p| p.name == last.name));
                    match (found, last) {
                        (Some(p), _) => Some((p.clone(), q.0)),
                        (None, Some(last)) => {
                            return Err(invalid(format!(
                                "methods.imp.output_rate = {} would prune the output layer {}, \
                                 which is not prunable here (prune.ignore keeps it dense); \
                                 remove output_rate or the ignore",
                                q.0, last.name
                            )));
                        }
                        (None, None) => {
                            return Err(invalid(format!(
                                "methods.imp.output_rate = {}: this network has no linear \
                                 output layer",
                                q.0
                            )));
                        }
                    }
                }
            };
            let (groups, landing) = match output {
                None => (
                    vec![group(
                        prunable.iter().map(|p| p.name.clone()).collect(),
                        total,
                        rate,
                    )],
                    Landing::Proportional(density.keep_count(total)),
                ),
                Some((out, q)) => (
                    vec![
                        group(
                            prunable
                                .iter()
                                .filter(|p| p.name != out.name)
                                .map(|p| p.name.clone())
                                .collect(),
                            total - out.numel(),
                            rate,
                        ),
                        group(vec![out.name.clone()], out.numel(), q),
                    ],
                    Landing::PoolFirst(density.keep_count(total)),
                ),
            };
            Ok(LevelPlan::new(groups, landing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(numel: usize, rate: f64, target: usize) -> Group {
        Group {
            names: vec![format!("g{numel}")],
            numel,
            rate,
            target,
        }
    }

    #[test]
    fn proportional_landing_hits_the_total_between_the_last_two_levels() {
        // Three layers at 0.2, 0.1 and 0.5: the last level shares its cut in proportion.
        let groups = vec![group(1000, 0.2, 0), group(300, 0.1, 0), group(50, 0.5, 0)];
        let target = 700;
        let plan = LevelPlan::new(groups, Landing::Proportional(target));
        let last = plan.levels();
        for r in 0..last {
            let want: Vec<usize> = [(1000, 0.8), (300, 0.9), (50, 0.5)]
                .iter()
                .map(|(n, keep): &(usize, f64)| (keep.powi(r as i32) * *n as f64).round() as usize)
                .collect();
            assert_eq!(plan.counts[r], want, "level {r}");
        }
        // Level 3 would keep 512 + 219 + 6 = 737 > 700; level 4 keeps 410 + 197 + 3 = 610.
        assert_eq!(last, 4);
        let got = &plan.counts[last];
        assert_eq!(got.iter().sum::<usize>(), target);
        // 90 of the 127 weights cut at level 4 come back: ⌊102·90/127⌋ = 72, ⌊22·90/127⌋ = 15
        // and ⌊3·90/127⌋ = 2, the one left over to the largest remainder (the second layer's).
        assert_eq!(got, &vec![410 + 72, 197 + 16, 3 + 2]);
    }

    #[test]
    fn level_counts_follow_the_geometric_rate_and_land_on_the_target() {
        let n = 266_200;
        let target = Density::new(0.02).unwrap().keep_count(n);
        let plan = LevelPlan::new(vec![group(n, 0.2, target)], Landing::Proportional(target));
        assert_eq!(plan.levels(), 18, "0.8^17 > 0.02 >= 0.8^18");
        for r in 0..18 {
            let want = (0.8f64.powi(r as i32) * n as f64).round() as usize;
            assert_eq!(plan.counts[r], vec![want], "level {r}");
        }
        assert_eq!(plan.counts[18], vec![target]);
    }

    #[test]
    fn output_layer_at_its_own_rate_and_the_total_exact() {
        let (pool, out) = (100_000, 1_000);
        let target = Density::new(0.05).unwrap().keep_count(pool + out);
        let plan = LevelPlan::new(
            vec![group(pool, 0.2, 0), group(out, 0.1, 0)],
            Landing::PoolFirst(target),
        );
        let last = plan.levels();
        for r in 1..last {
            assert_eq!(
                plan.counts[r][1],
                (0.9f64.powi(r as i32) * out as f64).round() as usize
            );
        }
        assert_eq!(plan.counts[last].iter().sum::<usize>(), target);
        for r in 1..=last {
            assert!(plan.counts[r][0] <= plan.counts[r - 1][0]);
            assert!(plan.counts[r][1] <= plan.counts[r - 1][1]);
        }
    }

    #[test]
    fn layerwise_levels_end_on_every_layer_target() {
        let groups = vec![group(1000, 0.2, 100), group(30, 0.2, 3)];
        let plan = LevelPlan::new(groups, Landing::EachGroup);
        assert_eq!(plan.counts.last().unwrap(), &vec![100, 3]);
        assert!(plan.counts.iter().all(|c| c[0] >= 100 && c[1] >= 3));
    }

    #[test]
    fn density_one_needs_no_level() {
        let plan = LevelPlan::new(vec![group(10, 0.2, 10)], Landing::Proportional(10));
        assert_eq!(plan.levels(), 0);
    }
}
