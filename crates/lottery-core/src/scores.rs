//! Element-wise arithmetic on named values, shared by the score-based methods.

use crate::error::PruneError;
use crate::mask::MaskSet;
use crate::params::{FlatTensor, ParamValues};

/// `f(a_i, b_i)` (computed in f64) for every parameter of `mask`, 0 where `mask` has pruned.
/// Both `a` and `b` must hold every parameter of `mask` with its shape.
pub fn combine(
    a: &ParamValues,
    b: &ParamValues,
    mask: &MaskSet,
    f: impl Fn(f64, f64) -> f64,
) -> Result<ParamValues, PruneError> {
    let mut out = ParamValues::new();
    for (name, m) in mask.iter() {
        let shape_error =
            |which: &str| PruneError::Internal(format!("{which} lacks {name} {:?}", m.shape));
        let x = a
            .get(name)
            .filter(|t| t.shape == m.shape)
            .ok_or_else(|| shape_error("first operand"))?;
        let y = b
            .get(name)
            .filter(|t| t.shape == m.shape)
            .ok_or_else(|| shape_error("second operand"))?;
        let values = x
            .values
            .iter()
            .zip(&y.values)
            .zip(&m.keep)
            .map(|((&p, &q), &keep)| {
                if keep {
                    f(p as f64, q as f64) as f32
                } else {
                    0.0
                }
            })
            .collect();
        out.insert(name.clone(), FlatTensor::new(m.shape.clone(), values));
    }
    Ok(out)
}

/// `v` with the entries that `mask` has pruned set to 0 (parameters outside `mask` dropped).
pub fn masked(v: &ParamValues, mask: &MaskSet) -> Result<ParamValues, PruneError> {
    combine(v, v, mask, |x, _| x)
}

/// Sum of every entry, in f64.
pub fn total(v: &ParamValues) -> f64 {
    v.values()
        .flat_map(|t| t.values.iter())
        .map(|&x| x as f64)
        .sum()
}

/// Divides every entry by `by`.
pub fn divide(v: &mut ParamValues, by: f64) {
    for t in v.values_mut() {
        t.values
            .iter_mut()
            .for_each(|x| *x = (*x as f64 / by) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_zeroes_pruned_entries_and_checks_shapes() {
        let mut mask = MaskSet::new();
        mask.insert(
            "w",
            crate::mask::Mask {
                shape: vec![2, 2],
                keep: vec![true, false, true, true],
            },
        );
        let a: ParamValues = [(
            "w".to_string(),
            FlatTensor::new(vec![2, 2], vec![1.0, -2.0, 3.0, -4.0]),
        )]
        .into();
        let b: ParamValues = [(
            "w".to_string(),
            FlatTensor::new(vec![2, 2], vec![2.0, 2.0, -1.0, 0.5]),
        )]
        .into();
        let s = combine(&a, &b, &mask, |x, y| (x * y).abs()).unwrap();
        assert_eq!(s["w"].values, vec![2.0, 0.0, 3.0, 2.0]);
        assert_eq!(total(&s), 7.0);
        let wrong: ParamValues = [("w".to_string(), FlatTensor::new(vec![4], vec![0.0; 4]))].into();
        assert!(combine(&a, &wrong, &mask, |x, _| x).is_err());
    }
}
