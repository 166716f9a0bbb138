//! Several rates in one run: the `groups` option, checked as it is read, and the plan of a
//! layout with groups, checked against the network.

use std::collections::BTreeMap;

use lottery_core::params::ParamInfo;
use lottery_core::{PrunableRule, PruneContext, PruneError, Scope};
use serde::{Deserialize, Serialize};

use crate::plan::{Group, Landing, LevelPlan};
use crate::{ImpOptions, Rate, invalid};

/// Parameters pruned at their own rate: names or glob patterns, and the rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateGroup {
    /// Parameter names or glob patterns (`"fc.weight"`, `"layers.*.conv.weight"`).
    pub params: Vec<String>,
    /// Fraction of the group's alive weights removed per level, in (0, 1).
    pub rate: f64,
}

/// The `groups` of [`ImpOptions`], checked as they are read: every group names at least one
/// pattern, no pattern is given twice, every rate lies in (0, 1). Which parameters the patterns
/// match is checked against the network when the run starts ([`plan_for`](crate::plan_for)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<RateGroup>", into = "Vec<RateGroup>")]
pub struct RateGroups(Vec<RateGroup>);

impl RateGroups {
    /// No group: one rate for every prunable parameter.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The groups, in config order.
    pub fn groups(&self) -> &[RateGroup] {
        &self.0
    }
}

impl TryFrom<Vec<RateGroup>> for RateGroups {
    type Error = String;
    fn try_from(groups: Vec<RateGroup>) -> Result<Self, String> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, g) in groups.iter().enumerate() {
            if let Err(why) = Rate::try_from(g.rate) {
                return Err(format!("groups[{i}].rate = {}: {why}", g.rate));
            }
            if g.params.is_empty() {
                return Err(format!(
                    "groups[{i}].params = []: a group names at least one parameter or glob pattern"
                ));
            }
            for p in &g.params {
                if let Some(j) = seen.insert(p.as_str(), i) {
                    return Err(format!(
                        "groups[{i}].params: {p:?} is given in groups[{j}] already; a parameter \
                         has one rate"
                    ));
                }
            }
        }
        Ok(Self(groups))
    }
}

impl From<RateGroups> for Vec<RateGroup> {
    fn from(g: RateGroups) -> Self {
        g.0
    }
}

/// The plan of a layout with `groups`: the prunable parameters in no group at `rate`, each group
/// at its own; one pool per group (global) or one count per layer (layer-wise); the run's density
/// counts all prunable weights together.
pub(crate) fn group_plan(
    ctx: &PruneContext<'_>,
    options: &ImpOptions,
) -> Result<LevelPlan, PruneError> {
    let prunable = ctx.prunable();
    let all: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
    let configured = options.groups.groups();
    let matches = |pattern: &str, name: &str| {
        PrunableRule {
            ignore: vec![pattern.to_string()],
            ..PrunableRule::default()
        }
        .ignores(name)
    };
    // Every pattern matches a prunable parameter.
    for (i, g) in configured.iter().enumerate() {
        for pattern in &g.params {
            if prunable.iter().any(|p| matches(pattern, &p.name)) {
                continue;
            }
            let others: Vec<&str> = all
                .iter()
                .filter(|n| matches(pattern, n))
                .map(String::as_str)
                .collect();
            let why = if others.is_empty() {
                "matches no parameter of this network".to_string()
            } else {
                format!(
                    "matches only {}, which {} not prunable here (prune.ignore, or not a weight \
                     without prune.prune_bias / prune_batchnorm / prune_residual)",
                    others.join(", "),
                    if others.len() == 1 { "is" } else { "are" }
                )
            };
            let names: Vec<&str> = prunable.iter().map(|p| p.name.as_str()).collect();
            return Err(invalid(format!(
                "methods.imp.groups[{i}].params: {pattern:?} {why}; the prunable parameters are \
                 {}",
                names.join(", ")
            )));
        }
    }
    // Each prunable parameter in at most one group; `None` is the rest, at `rate`.
    let mut member: Vec<(&ParamInfo, Option<usize>)> = vec![];
    for p in &prunable {
        let mut owner: Option<(usize, &str)> = None;
        for (i, g) in configured.iter().enumerate() {
            let Some(pattern) = g.params.iter().find(|pat| matches(pat, &p.name)) else {
                continue;
            };
            if let Some((j, first)) = owner {
                return Err(invalid(format!(
                    "methods.imp.groups: parameter {} is in groups[{j}] (by {first:?}) and in \
                     groups[{i}] (by {pattern:?}); a parameter has one rate",
                    p.name
                )));
            }
            owner = Some((i, pattern));
        }
        member.push((p, owner.map(|(i, _)| i)));
    }
    if member.iter().all(|(_, m)| m.is_some()) {
        tracing::warn!(
            "methods.imp.rate = {} applies to no parameter: the groups cover every prunable \
             parameter",
            options.rate.0
        );
    }
    let rate_of = |g: Option<usize>| g.map_or(options.rate.0, |i| configured[i].rate);
    // The rest first, then the groups in config order.
    let order: Vec<Option<usize>> = std::iter::once(None)
        .chain((0..configured.len()).map(Some))
        .collect();
    let mut groups = vec![];
    for g in order {
        let params: Vec<&ParamInfo> = member
            .iter()
            .filter(|(_, m)| *m == g)
            .map(|(p, _)| *p)
            .collect();
        if params.is_empty() {
            continue;
        }
        let mut one = |names: Vec<String>, numel: usize| {
            groups.push(Group {
                names,
                numel,
                rate: rate_of(g),
                target: 0,
            })
        };
        match ctx.goal.scope {
            Scope::Global => one(
                params.iter().map(|p| p.name.clone()).collect(),
                params.iter().map(|p| p.numel()).sum(),
            ),
            Scope::Layerwise => {
                for p in params {
                    one(vec![p.name.clone()], p.numel());
                }
            }
        }
    }
    // The total a run at one rate would keep: one count over all (global), or the sum of every
    // layer's own count (layer-wise), as the run checks it.
    let density = ctx.goal.density;
    let target = match ctx.goal.scope {
        Scope::Global => density.keep_count(prunable.iter().map(|p| p.numel()).sum()),
        Scope::Layerwise => prunable.iter().map(|p| density.keep_count(p.numel())).sum(),
    };
    Ok(LevelPlan::new(groups, Landing::Proportional(target)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Control;

    #[test]
    fn groups_parse_and_stay_out_of_the_defaults() {
        let defaults = toml::Table::try_from(ImpOptions::default()).unwrap();
        assert!(!defaults.contains_key("groups"), "no key for the run id");
        let text = "rate = 0.2\ngroups = [{ params = [\"layers.*.conv.weight\"], rate = 0.15 }, \
                    { params = [\"fc.weight\"], rate = 0.1 }]\ncontrols = \
                    [\"random-mask-zero-outside-ticket\"]";
        let o: ImpOptions = toml::from_str(text).unwrap();
        assert_eq!(o.groups.groups().len(), 2);
        assert_eq!(o.groups.groups()[0].rate, 0.15);
        assert_eq!(o.controls, vec![Control::RandomMaskZeroOutsideTicket]);
        let back: ImpOptions = toml::from_str(&toml::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
        // The same as an array of tables.
        let tables: ImpOptions = toml::from_str(
            "[[groups]]\nparams = [\"layers.*.conv.weight\"]\nrate = 0.15\n\
             [[groups]]\nparams = [\"fc.weight\"]\nrate = 0.1\n",
        )
        .unwrap();
        assert_eq!(tables.groups, o.groups);
    }

    #[test]
    fn bad_groups_are_refused_naming_the_key_and_value() {
        let err = |text: &str| toml::from_str::<ImpOptions>(text).unwrap_err().to_string();
        for rate in ["0.0", "1.0", "1.5", "-0.1"] {
            let e = err(&format!(
                "groups = [{{ params = [\"a\"], rate = 0.1 }}, {{ params = [\"b\"], rate = {rate} }}]"
            ));
            assert!(
                e.contains(&format!(
                    "groups[1].rate = {}",
                    rate.parse::<f64>().unwrap()
                )),
                "{e}"
            );
        }
        let e = err("groups = [{ params = [], rate = 0.1 }]");
        assert!(e.contains("groups[0].params = []"), "{e}");
        let e =
            err("groups = [{ params = [\"a\"], rate = 0.1 }, { params = [\"a\"], rate = 0.2 }]");
        assert!(
            e.contains("groups[1].params: \"a\" is given in groups[0]"),
            "{e}"
        );
        let e = err("groups = [{ params = [\"a\"], rate = 0.1, scope = \"global\" }]");
        assert!(e.contains("scope"), "unknown key: {e}");
    }
}
