//! Weights kept at checkpoint steps, carried in a file of named tensors beside its other tensors
//! (a method's saved progress), so that a run resumed from that file writes them too.

use lottery_core::ParamValues;

use crate::Checkpoints;

/// The prefix of a kept checkpoint's tensors: `checkpoint/<step>/<parameter>`.
const PREFIX: &str = "checkpoint/";

/// A tensor under `checkpoint/` whose name is not `checkpoint/<step>/<parameter>`.
#[derive(Debug, thiserror::Error)]
#[error("a checkpoint tensor named {0}")]
pub struct CheckpointNameError(pub String);

/// Adds `checkpoints` to `tensors`, each tensor as `checkpoint/<step>/<parameter>`.
pub fn put_checkpoints(tensors: &mut ParamValues, checkpoints: &Checkpoints) {
    for (step, values) in checkpoints {
        for (name, t) in values {
            tensors.insert(format!("{PREFIX}{step}/{name}"), t.clone());
        }
    }
}

/// Takes what [`put_checkpoints`] added out of `tensors`, leaving the rest.
pub fn take_checkpoints(tensors: &mut ParamValues) -> Result<Checkpoints, CheckpointNameError> {
    let names: Vec<String> = tensors
        .keys()
        .filter(|n| n.starts_with(PREFIX))
        .cloned()
        .collect();
    let mut checkpoints = Checkpoints::new();
    for name in names {
        let t = tensors.remove(&name).expect("listed");
        let (step, param) = name[PREFIX.len()..]
            .split_once('/')
            .and_then(|(s, p)| Some((s.parse::<usize>().ok()?, p.to_string())))
            .ok_or_else(|| CheckpointNameError(name.clone()))?;
        checkpoints.entry(step).or_default().insert(param, t);
    }
    Ok(checkpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery_core::FlatTensor;

    #[test]
    fn checkpoints_travel_beside_other_tensors_and_come_back_apart() {
        let w = |v: f32| FlatTensor::new(vec![2], vec![v, -v]);
        let weights = ParamValues::from([("fc.weight".to_string(), w(1.0))]);
        let checkpoints = Checkpoints::from([
            (0, ParamValues::from([("fc.weight".to_string(), w(2.0))])),
            (16, ParamValues::from([("fc.weight".to_string(), w(3.0))])),
        ]);
        let mut tensors = weights.clone();
        put_checkpoints(&mut tensors, &checkpoints);
        assert_eq!(tensors.len(), 3);
        assert_eq!(take_checkpoints(&mut tensors).unwrap(), checkpoints);
        assert_eq!(tensors, weights);

        let mut bad = ParamValues::from([("checkpoint/x/fc.weight".to_string(), w(1.0))]);
        let e = take_checkpoints(&mut bad).unwrap_err();
        assert!(e.to_string().contains("checkpoint/x/fc.weight"), "{e}");
    }
}
