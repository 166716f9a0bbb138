//! Channels of batch-norm convolutional networks: the weights one batch-norm channel gates, for
//! structured methods (Early-Bird): which weights a channel gates, and the weight masks of kept
//! channels.
//!
//! A channel of a convolution is produced by a row of its weight (and bias), scaled by one
//! batch-norm γ, and read by a slice of the next layer's weight. Pruning the channel removes all of
//! them; as a weight mask it zeroes the producing rows and the consuming slices, which makes the
//! masked network compute exactly what the physically smaller network computes.

use std::collections::BTreeMap;

use lottery_core::{MaskSet, PruneError};

/// A slice of a parameter gated by channels: channel `c` owns the indices `[c·block, (c+1)·block)`
/// along `axis` (PyTorch layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Parameter name.
    pub param: String,
    /// Axis the channels run along (0: output rows of the producer, 1: inputs of the consumer).
    pub axis: usize,
    /// Entries along `axis` per channel (1, or `h·w` when a flatten follows the channel).
    pub block: usize,
}

/// The channels of one batch-norm layer: its scale γ and the weights each channel gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    /// Name of the batch-norm scale (`layers.3.bn.weight`).
    pub scale: String,
    /// Number of channels.
    pub channels: usize,
    /// The weights the channels gate (producer rows, consumer slices).
    pub gates: Vec<Gate>,
}

/// Kept channels per group, keyed by the group's scale name.
pub type ChannelKeep = BTreeMap<String, Vec<bool>>;

/// Size of a network: what the structurally pruned network physically holds and computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkCost {
    /// Trainable parameters (weights, biases, batch-norm scales and shifts; no running statistics).
    pub params: u64,
    /// Forward FLOPs of one example through the convolutions and linear layers (a multiply-add
    /// counts 2).
    pub flops: u64,
}

/// The weight masks of `keep` over the parameters of `template` (a dense mask of the prunable
/// parameters): every entry a pruned channel gates is pruned, every other entry kept. Gates on
/// parameters outside the template are skipped (they are not prunable).
pub fn expand(
    groups: &[ChannelGroup],
    keep: &ChannelKeep,
    template: &MaskSet,
) -> Result<MaskSet, PruneError> {
    let mut out = template.clone();
    for g in groups {
        let k = keep
            .get(&g.scale)
            .ok_or_else(|| PruneError::Internal(format!("no channel mask for {}", g.scale)))?;
        if k.len() != g.channels {
            return Err(PruneError::Internal(format!(
                "{}: {} channel flags for {} channels",
                g.scale,
                k.len(),
                g.channels
            )));
        }
        for gate in &g.gates {
            let Some(m) = template.get(&gate.param) else {
                continue;
            };
            let shape = &m.shape;
            if gate.axis >= shape.len() || shape[gate.axis] != g.channels * gate.block {
                return Err(PruneError::Internal(format!(
                    "{} of shape {:?} is not gated by {} channels of {} along axis {}",
                    gate.param, shape, g.channels, gate.block, gate.axis
                )));
            }
            let inner: usize = shape[gate.axis + 1..].iter().product();
            let along = shape[gate.axis];
            let mut mask = out.get(&gate.param).expect("in the template").clone();
            for (i, flag) in mask.keep.iter_mut().enumerate() {
                let c = (i / inner) % along / gate.block;
                if !k[c] {
                    *flag = false;
                }
            }
            out.insert(gate.param.clone(), mask);
        }
    }
    Ok(out)
}

/// Kept channels over all groups.
pub fn kept_channels(keep: &ChannelKeep) -> usize {
    keep.values().flatten().filter(|&&k| k).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<ChannelGroup> {
        vec![
            ChannelGroup {
                scale: "a.bn.weight".into(),
                channels: 2,
                gates: vec![
                    Gate {
                        param: "a.conv.weight".into(),
                        axis: 0,
                        block: 1,
                    },
                    Gate {
                        param: "b.conv.weight".into(),
                        axis: 1,
                        block: 1,
                    },
                ],
            },
            ChannelGroup {
                scale: "b.bn.weight".into(),
                channels: 3,
                gates: vec![
                    Gate {
                        param: "b.conv.weight".into(),
                        axis: 0,
                        block: 1,
                    },
                    Gate {
                        param: "fc.weight".into(),
                        axis: 1,
                        block: 2,
                    },
                ],
            },
        ]
    }

    fn template() -> MaskSet {
        MaskSet::dense([
            ("a.conv.weight", [2usize, 1, 1, 1].as_slice()),
            ("b.conv.weight", [3usize, 2, 1, 1].as_slice()),
            ("fc.weight", [4usize, 6].as_slice()),
        ])
    }

    #[test]
    fn expansion_prunes_producer_rows_and_consumer_slices() {
        let keep = ChannelKeep::from([
            ("a.bn.weight".to_string(), vec![true, false]),
            ("b.bn.weight".to_string(), vec![false, true, true]),
        ]);
        let m = expand(&groups(), &keep, &template()).unwrap();
        assert_eq!(m.get("a.conv.weight").unwrap().keep, vec![true, false]);
        // b: rows 0 pruned (its own channel 0), column 1 pruned (a's channel 1).
        assert_eq!(
            m.get("b.conv.weight").unwrap().keep,
            vec![false, false, true, false, true, false]
        );
        // fc: columns 0..2 belong to b's channel 0.
        let fc = &m.get("fc.weight").unwrap().keep;
        for row in 0..4 {
            assert_eq!(
                &fc[row * 6..row * 6 + 6],
                &[false, false, true, true, true, true]
            );
        }
    }
}
