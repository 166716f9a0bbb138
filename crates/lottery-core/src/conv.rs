//! The 2-D convolution of the networks, with LibTorch's own backward kernel on burn-tch.
//!
//! burn differentiates a convolution with a transposed convolution (input) and a convolution over
//! swapped batch and channel axes (weight), which on LibTorch copies both operands to transpose
//! them and runs a slower kernel than PyTorch's `convolution_backward`: profiled on a ResNet-20
//! step, about a sixth of burn-tch's time over PyTorch's. [`NativeConv2d::native_conv2d`] is burn's
//! convolution on every backend but autodiff over LibTorch, where the backward is LibTorch's own
//! `convolution_backward` (see `libtorch_backward`).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::{ConvOptions, FloatTensor};

/// A backend's 2-D convolution. The provided method is burn's `conv2d` (differentiated by burn on
/// autodiff backends); autodiff over LibTorch overrides it.
pub trait NativeConv2d: Backend {
    /// `conv2d(x, weight) + bias` over `[N, C, H, W]`, as burn's `module::conv2d`.
    fn native_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, bias, options)
    }
}

/// `conv.forward(x)` through [`NativeConv2d`]: the same padding, stride, dilation and groups.
/// Asymmetric padding (which burn pads explicitly first) takes burn's path.
pub fn conv2d<B: NativeConv2d>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return conv.forward(x),
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let y = B::native_conv2d(
        x.into_primitive().tensor(),
        conv.weight.val().into_primitive().tensor(),
        conv.bias
            .as_ref()
            .map(|b| b.val().into_primitive().tensor()),
        options,
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

impl NativeConv2d for burn::backend::Flex {}
impl<C: CheckpointStrategy> NativeConv2d for Autodiff<burn::backend::Flex, C> {}

#[cfg(feature = "cuda")]
impl NativeConv2d for burn::backend::Cuda {}
#[cfg(feature = "cuda")]
impl<C: CheckpointStrategy> NativeConv2d for Autodiff<burn::backend::Cuda, C> {}

#[cfg(feature = "tch")]
impl NativeConv2d for burn::backend::LibTorch<f32> {}

/// One graph node whose backward is LibTorch's `convolution_backward`.
#[cfg(feature = "tch")]
impl<C: CheckpointStrategy> NativeConv2d for Autodiff<burn::backend::LibTorch<f32>, C> {
    fn native_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        use burn::backend::autodiff::checkpoint::base::Checkpointer;
        use burn::backend::autodiff::grads::Gradients;
        use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
        use burn::backend::libtorch::TchTensor;

        use crate::libtorch_backward::{ConvGeometry, convolution_backward};

        type Inner = burn::backend::LibTorch<f32>;

        /// What the backward reads: the input, the weight, the bias's length and the geometry.
        #[derive(Debug, Clone)]
        struct Saved {
            x: TchTensor,
            weight: TchTensor,
            bias_size: Option<i64>,
            geometry: ConvGeometry,
        }

        #[derive(Debug)]
        struct Conv2dBackward;

        impl<const N: usize> Backward<Inner, N> for Conv2dBackward {
            type State = Saved;

            fn backward(
                self,
                ops: Ops<Self::State, N>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let dy = grads.consume::<Inner>(&ops.node);
                let wanted: [bool; 3] = std::array::from_fn(|i| {
                    ops.parents.get(i).is_some_and(|parent| parent.is_some())
                });
                let Saved {
                    x,
                    weight,
                    bias_size,
                    geometry,
                } = ops.state;
                let input_grads = convolution_backward(
                    &dy.tensor,
                    &x.tensor,
                    &weight.tensor,
                    bias_size,
                    &geometry,
                    wanted,
                );
                for (parent, grad) in ops.parents.into_iter().zip(input_grads) {
                    if let (Some(node), Some(grad)) = (parent, grad) {
                        grads.register::<Inner>(node.id, TchTensor::new(grad));
                    }
                }
            }
        }

        /// LibTorch's forward, and the node over it. `inputs`: x, weight and, when there is one,
        /// bias.
        fn record<C: CheckpointStrategy, const N: usize>(
            inputs: [FloatTensor<Autodiff<Inner, C>>; N],
            options: &ConvOptions<2>,
        ) -> FloatTensor<Autodiff<Inner, C>> {
            let geometry = ConvGeometry {
                stride: options.stride.map(|i| i as i64),
                padding: options.padding.map(|i| i as i64),
                dilation: options.dilation.map(|i| i as i64),
                groups: options.groups as i64,
            };
            let y = tch::Tensor::conv2d(
                &inputs[0].primitive.tensor,
                &inputs[1].primitive.tensor,
                inputs.get(2).map(|b| &b.primitive.tensor),
                geometry.stride,
                geometry.padding,
                geometry.dilation,
                geometry.groups,
            );
            let bias_size = inputs.get(2).map(|b| b.primitive.tensor.size()[0]);
            let nodes = inputs.each_ref().map(|t| t.node.clone());
            match Conv2dBackward
                .prepare::<C>(nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let mut inputs = inputs.into_iter().map(|t| t.primitive);
                    let (Some(x), Some(weight)) = (inputs.next(), inputs.next()) else {
                        unreachable!("a convolution has an input and a weight")
                    };
                    let saved = Saved {
                        x,
                        weight,
                        bias_size,
                        geometry,
                    };
                    prep.finish(saved, TchTensor::new(y))
                }
                OpsKind::UnTracked(prep) => prep.finish(TchTensor::new(y)),
            }
        }

        match bias {
            Some(b) => record::<C, 3>([x, weight, b], &options),
            None => record::<C, 2>([x, weight], &options),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::backend::AutodiffBackend;

    /// This build's backend (LibTorch with `--features tch`), under autodiff.
    type Ad = Autodiff<crate::backend::Backend>;

    fn tensor<const D: usize>(shape: [usize; D], seed: usize) -> Tensor<Ad, D> {
        let n = shape.iter().product::<usize>();
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::from_data(
            TensorData::new(values, shape),
            &crate::backend::default_device(),
        )
    }

    fn assert_close<const D: usize>(
        ours: Tensor<<Ad as AutodiffBackend>::InnerBackend, D>,
        burns: Tensor<<Ad as AutodiffBackend>::InnerBackend, D>,
        what: &str,
    ) {
        assert_eq!(ours.dims(), burns.dims(), "{what}");
        let ours = ours.into_data().to_vec::<f32>().unwrap();
        let burns = burns.into_data().to_vec::<f32>().unwrap();
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs burn's {b}"
            );
        }
    }

    /// Output and gradients (input, weight, bias) of [`conv2d`] equal those of burn's own
    /// convolution: with and without a bias, stride 1 and 2, and an input without a gradient
    /// (a network's first layer).
    #[test]
    fn native_convolution_equals_burns_output_and_gradients() {
        for (bias, stride, input_grad) in [(true, 1, true), (false, 2, true), (true, 1, false)] {
            let conv: Conv2d<Ad> = Conv2dConfig::new([3, 4], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(bias)
                .init(&crate::backend::default_device());
            let conv = Conv2d {
                weight: burn::module::Param::from_tensor(tensor([4, 3, 3, 3], 1)),
                bias: bias.then(|| burn::module::Param::from_tensor(tensor([4], 2))),
                ..conv
            };
            let x = tensor([2, 3, 7, 6], 0);
            let x = if input_grad { x.require_grad() } else { x };
            let out_dims = conv.forward(x.clone()).dims();
            let upstream = tensor(out_dims, 3);
            let run = |native: bool| {
                let y = if native {
                    conv2d(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let grads = y.clone().mul(upstream.clone()).sum().backward();
                (
                    y.inner(),
                    x.grad(&grads),
                    conv.weight.val().grad(&grads).unwrap(),
                    conv.bias.as_ref().map(|b| b.val().grad(&grads).unwrap()),
                )
            };
            let (ours, burns) = (run(true), run(false));
            let case = format!("bias {bias}, stride {stride}");
            assert_close(ours.0, burns.0, &format!("output, {case}"));
            match (ours.1, burns.1) {
                (Some(a), Some(b)) => assert_close(a, b, &format!("dx, {case}")),
                (None, None) => assert!(!input_grad),
                _ => panic!("dx present on one side only, {case}"),
            }
            assert_close(ours.2, burns.2, &format!("dw, {case}"));
            match (ours.3, burns.3) {
                (Some(a), Some(b)) => assert_close(a, b, &format!("db, {case}")),
                (None, None) => assert!(!bias),
                _ => panic!("db present on one side only, {case}"),
            }
        }
    }
}
