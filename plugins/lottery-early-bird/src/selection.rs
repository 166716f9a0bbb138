//! Early-Bird's channel selection and mask distance: keep the channels of largest |γ| (network
//! slimming's criterion, one global threshold), and compare two channel masks.

use lottery_core::{ParamValues, PruneError};
use lottery_models::channel_masks::{ChannelGroup, ChannelKeep};

/// Normalised Hamming distance of two channel masks over all their channels: the fraction of
/// channels kept in one and pruned in the other (Early-Bird's mask distance).
pub fn channel_distance(a: &ChannelKeep, b: &ChannelKeep) -> f64 {
    let mut total = 0usize;
    let mut differ = 0usize;
    for (name, ka) in a {
        let kb = b
            .get(name)
            .unwrap_or_else(|| panic!("channel group {name} missing"));
        assert_eq!(ka.len(), kb.len(), "channel group {name} sizes differ");
        total += ka.len();
        differ += ka.iter().zip(kb).filter(|(x, y)| x != y).count();
    }
    if total == 0 {
        0.0
    } else {
        differ as f64 / total as f64
    }
}

/// Keeps `count` channels over all groups by |γ| (one global threshold), every group keeping at
/// least one channel so that the network stays connected; ties go to the lower position (group
/// order, then channel). `scales` holds each group's γ.
pub fn global_channel_keep(
    groups: &[ChannelGroup],
    scales: &ParamValues,
    count: usize,
) -> Result<ChannelKeep, PruneError> {
    let total: usize = groups.iter().map(|g| g.channels).sum();
    if count < groups.len() || count > total {
        return Err(PruneError::Internal(format!(
            "cannot keep {count} of {total} channels in {} layers (at least one per layer)",
            groups.len()
        )));
    }
    let mut keep = ChannelKeep::new();
    let mut ranked: Vec<(f32, usize, usize)> = Vec::with_capacity(total);
    for (gi, g) in groups.iter().enumerate() {
        let gamma = scales
            .get(&g.scale)
            .ok_or_else(|| PruneError::Internal(format!("no values for {}", g.scale)))?;
        if gamma.values.len() != g.channels {
            return Err(PruneError::Internal(format!(
                "{} holds {} values for {} channels",
                g.scale,
                gamma.values.len(),
                g.channels
            )));
        }
        let mut flags = vec![false; g.channels];
        // The largest |γ| of each layer is kept first.
        let best = (0..g.channels)
            .max_by(|&a, &b| {
                gamma.values[a]
                    .abs()
                    .total_cmp(&gamma.values[b].abs())
                    .then(b.cmp(&a))
            })
            .expect("a group has channels");
        flags[best] = true;
        for (c, v) in gamma.values.iter().enumerate() {
            if c != best {
                ranked.push((v.abs(), gi, c));
            }
        }
        keep.insert(g.scale.clone(), flags);
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    for &(_, gi, c) in ranked.iter().take(count - groups.len()) {
        keep.get_mut(&groups[gi].scale).expect("inserted")[c] = true;
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery_core::FlatTensor;
    use lottery_models::channel_masks::kept_channels;

    fn groups() -> Vec<ChannelGroup> {
        [("a.bn.weight", 2), ("b.bn.weight", 3)]
            .into_iter()
            .map(|(scale, channels)| ChannelGroup {
                scale: scale.into(),
                channels,
                gates: vec![],
            })
            .collect()
    }

    #[test]
    fn distance_of_identical_and_complementary_channel_masks() {
        let a = ChannelKeep::from([("x".to_string(), vec![true, false, true, true])]);
        let b = ChannelKeep::from([("x".to_string(), vec![false, true, false, false])]);
        assert_eq!(channel_distance(&a, &a), 0.0);
        assert_eq!(channel_distance(&a, &b), 1.0);
        let c = ChannelKeep::from([("x".to_string(), vec![true, true, true, true])]);
        assert_eq!(channel_distance(&a, &c), 0.25);
    }

    #[test]
    fn global_keep_is_exact_and_never_empties_a_layer() {
        let scales: ParamValues = [
            (
                "a.bn.weight".to_string(),
                FlatTensor::new(vec![2], vec![0.01, -0.02]),
            ),
            (
                "b.bn.weight".to_string(),
                FlatTensor::new(vec![3], vec![0.5, -0.9, 0.3]),
            ),
        ]
        .into_iter()
        .collect();
        let keep = global_channel_keep(&groups(), &scales, 2).unwrap();
        assert_eq!(keep["a.bn.weight"], vec![false, true]);
        assert_eq!(keep["b.bn.weight"], vec![false, true, false]);
        let keep = global_channel_keep(&groups(), &scales, 4).unwrap();
        assert_eq!(kept_channels(&keep), 4);
        assert_eq!(keep["b.bn.weight"], vec![true, true, true]);
        assert!(global_channel_keep(&groups(), &scales, 1).is_err());
        assert!(global_channel_keep(&groups(), &scales, 6).is_err());
    }
}
