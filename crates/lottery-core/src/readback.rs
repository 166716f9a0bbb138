//! Reading tensors back to the host.
//!
//! burn-flex leaves some results as strided views: a convolution's weight gradient is the
//! transpose of its first two axes (burn computes it as a convolution over swapped axes), and
//! flex's `into_data` copies such a view one element at a time through a general index walk, which
//! took a quarter of SynFlow's time on VGG-16. [`host_values`] copies those views run by run
//! instead; every other tensor, and every other backend, goes through `into_data`.

use std::any::Any;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Element, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

/// An element type read back to the host (`f32`, `f64`).
pub trait HostElement: Element + Copy {
    /// The whole storage buffer of a flex tensor holding this type, `None` for another dtype.
    fn flex_storage(t: &FlexTensor) -> Option<&[Self]>;
}

impl HostElement for f32 {
    fn flex_storage(t: &FlexTensor) -> Option<&[f32]> {
        (t.dtype() == DType::F32).then(|| t.storage::<f32>())
    }
}

impl HostElement for f64 {
    fn flex_storage(t: &FlexTensor) -> Option<&[f64]> {
        (t.dtype() == DType::F64).then(|| t.storage::<f64>())
    }
}

/// The values of the float tensor `t` in row-major order, converted to `E`: what
/// `t.into_data().convert::<E>()` holds, without flex's element-wise copy of strided views.
pub fn host_values<B: Backend, const D: usize, E: HostElement>(t: Tensor<B, D>) -> Vec<E> {
    let primitive = t.into_primitive().tensor();
    if let Some(flex) = (&primitive as &dyn Any).downcast_ref::<FlexTensor>()
        && !flex.is_contiguous()
        && let Some(storage) = E::flex_storage(flex)
    {
        let layout = flex.layout();
        return strided_copy(
            storage,
            layout.shape().as_slice(),
            layout.strides(),
            layout.start_offset(),
        );
    }
    Tensor::<B, D>::from_primitive(TensorPrimitive::Float(primitive))
        .into_data()
        .convert::<E>()
        .into_vec()
        .expect("a float tensor converts to its element type")
}

/// The elements of the view (`shape`, `strides` in elements, `offset`) of `src`, in row-major
/// order. Unit axes are dropped and axes contiguous with their inner neighbour merged, so the
/// innermost run is copied as a slice whenever its stride is 1.
fn strided_copy<E: Copy>(src: &[E], shape: &[usize], strides: &[isize], offset: usize) -> Vec<E> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let mut axes: Vec<(usize, isize)> = Vec::with_capacity(shape.len());
    for (&n, &stride) in shape.iter().zip(strides) {
        if n == 1 {
            continue;
        }
        match axes.last_mut() {
            Some(outer) if outer.1 == stride * n as isize => *outer = (outer.0 * n, stride),
            _ => axes.push((n, stride)),
        }
    }
    let (run, run_stride) = axes.pop().unwrap_or((1, 1));
    if let [(rows, row_stride), (cols, col_stride)] = axes[..]
        && run_stride == 1
        && row_stride < col_stride
    {
        transpose_runs(
            &mut out,
            src,
            offset,
            (rows, row_stride),
            (cols, col_stride),
            run,
        );
        return out;
    }
    let mut index = vec![0usize; axes.len()];
    let mut base = offset as isize;
    loop {
        let start = base as usize;
        if run_stride == 1 {
            out.extend_from_slice(&src[start..start + run]);
        } else {
            out.extend((0..run as isize).map(|i| src[(base + i * run_stride) as usize]));
        }
        // Advance the outer index like an odometer, keeping `base` at its element.
        let mut axis = axes.len();
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            let (n, stride) = axes[axis];
            index[axis] += 1;
            base += stride;
            if index[axis] < n {
                break;
            }
            base -= stride * n as isize;
            index[axis] = 0;
        }
    }
}

/// `out[r][c][..run] = src[offset + r·row_stride + c·col_stride ..][..run]`, for a view whose
/// rows lie closer together than its columns (a convolution weight gradient: output channels ×
/// input channels × kernel positions, stored input-channel-major). Columns are taken a block at a
/// time, so that the reads advance through a few source rows at once and the writes stay
/// contiguous.
fn transpose_runs<E: Copy>(
    out: &mut Vec<E>,
    src: &[E],
    offset: usize,
    (rows, row_stride): (usize, isize),
    (cols, col_stride): (usize, isize),
    run: usize,
) {
    let total = rows * cols * run;
    let first = src[offset];
    out.resize(total, first);
    const BLOCK: usize = 16;
    for c0 in (0..cols).step_by(BLOCK) {
        let c1 = (c0 + BLOCK).min(cols);
        for r in 0..rows {
            let row = (offset as isize + r as isize * row_stride) as usize;
            for c in c0..c1 {
                let from = (row as isize + c as isize * col_stride) as usize;
                let to = (r * cols + c) * run;
                out[to..to + run].copy_from_slice(&src[from..from + run]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, TensorData};

    type F = Flex;

    fn reference<const D: usize, E: HostElement>(t: Tensor<F, D>) -> Vec<E> {
        t.into_data().convert::<E>().into_vec().unwrap()
    }

    #[test]
    fn strided_views_read_as_into_data_does() {
        let device = Default::default();
        let t = Tensor::<F, 4>::random([5, 3, 3, 2], Distribution::Default, &device);
        let views: Vec<Tensor<F, 4>> = vec![
            t.clone(),
            t.clone().swap_dims(0, 1),
            t.clone().permute([2, 0, 3, 1]),
            t.clone().flip([1, 3]),
            t.clone().slice([1..4, 0..3, 1..3, 0..2]),
            t.clone().swap_dims(0, 1).slice([0..2, 1..5, 0..3, 1..2]),
            t.clone().slice([0..5, 0..1, 0..3, 0..2]).swap_dims(1, 3),
        ];
        for (i, v) in views.into_iter().enumerate() {
            assert_eq!(
                host_values::<F, 4, f32>(v.clone()),
                reference::<4, f32>(v.clone()),
                "view {i}"
            );
            assert_eq!(
                host_values::<F, 4, f64>(v.clone()),
                reference::<4, f64>(v),
                "view {i} as f64"
            );
        }
        let wide = Tensor::<F, 2>::from_data(
            TensorData::new((0..12).map(|x| x as f64).collect(), [3, 4]),
            (&device, DType::F64),
        );
        assert_eq!(
            host_values::<F, 2, f64>(wide.clone().transpose()),
            reference::<2, f64>(wide.transpose())
        );
        let empty = Tensor::<F, 2>::zeros([0, 3], &device).transpose();
        assert!(host_values::<F, 2, f32>(empty).is_empty());
    }

    #[test]
    fn a_convolution_weight_gradient_reads_as_into_data_does() {
        use burn::backend::Autodiff;
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        type A = Autodiff<F>;
        let device = Default::default();
        let x = Tensor::<A, 4>::random([2, 3, 6, 6], Distribution::Default, &device);
        let w = Tensor::<A, 4>::random([4, 3, 3, 3], Distribution::Default, &device).require_grad();
        let y = conv2d(
            x,
            w.clone(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let grads = y.sum().backward();
        let g = w.grad(&grads).unwrap();
        assert_eq!(host_values::<F, 4, f32>(g.clone()), reference::<4, f32>(g));
    }
}
