//! The ReLU of the networks, with LibTorch's fused backward on burn-tch.
//!
//! burn differentiates `relu` with a comparison and a masked fill, which on LibTorch is two
//! passes, the masked fill an unvectorised one: profiled on a ResNet-20 step, about a tenth of
//! burn-tch's time. [`FusedRelu::fused_relu`] is burn's `relu` on every backend but autodiff over
//! LibTorch, where the backward is LibTorch's `threshold_backward` (the kernel PyTorch's ReLU
//! runs): the gradient where the output is positive, zero elsewhere, as burn's.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;

/// A backend's ReLU. The provided method is burn's (differentiated by burn on autodiff
/// backends); autodiff over LibTorch overrides it.
pub trait FusedRelu: Backend {
    /// `max(x, 0)` elementwise.
    fn fused_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(x)
    }
}

/// `relu(x)` through [`FusedRelu`].
pub fn relu<B: FusedRelu, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::fused_relu(
        x.into_primitive().tensor(),
    )))
}

impl FusedRelu for burn::backend::Flex {}
impl<C: CheckpointStrategy> FusedRelu for Autodiff<burn::backend::Flex, C> {}

#[cfg(feature = "cuda")]
impl FusedRelu for burn::backend::Cuda {}
#[cfg(feature = "cuda")]
impl<C: CheckpointStrategy> FusedRelu for Autodiff<burn::backend::Cuda, C> {}

#[cfg(feature = "tch")]
impl FusedRelu for burn::backend::LibTorch<f32> {}

/// One graph node whose backward is LibTorch's `threshold_backward` on the output.
#[cfg(feature = "tch")]
impl<C: CheckpointStrategy> FusedRelu for Autodiff<burn::backend::LibTorch<f32>, C> {
    fn fused_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::autodiff::checkpoint::base::Checkpointer;
        use burn::backend::autodiff::grads::Gradients;
        use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
        use burn::backend::libtorch::TchTensor;
        use burn::tensor::ops::ActivationOps;

        type Inner = burn::backend::LibTorch<f32>;

        #[derive(Debug)]
        struct ReluBackward;

        impl Backward<Inner, 1> for ReluBackward {
            /// The output.
            type State = TchTensor;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [parent] = ops.parents;
                let dy = grads.consume::<Inner>(&ops.node);
                if let Some(node) = parent {
                    let dx = ops.state.tensor.threshold_backward(&dy.tensor, 0.0);
                    grads.register::<Inner>(node.id, TchTensor::new(dx));
                }
            }
        }

        let y = Inner::relu(x.primitive);
        match ReluBackward
            .prepare::<C>([x.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This build's backend (LibTorch with `--features tch`), under autodiff.
    type Ad = Autodiff<crate::backend::Backend>;

    /// [`relu`]'s output and gradient equal burn's, zeros included (no gradient through an
    /// input of exactly 0, as burn's and PyTorch's ReLU).
    #[test]
    fn fused_relu_equals_burns_output_and_gradient() {
        let device = crate::backend::default_device();
        let values = [-2.0f32, -0.5, 0.0, 0.0, 0.25, 3.0];
        let x = Tensor::<Ad, 2>::from_data(TensorData::new(values.to_vec(), [2, 3]), &device)
            .require_grad();
        let upstream = Tensor::<Ad, 2>::from_data(
            TensorData::new(vec![1.0f32, 2., 3., 4., 5., 6.], [2, 3]),
            &device,
        );
        let run = |fused: bool| {
            let y = if fused {
                relu(x.clone())
            } else {
                burn::tensor::activation::relu(x.clone())
            };
            let grads = y.clone().mul(upstream.clone()).sum().backward();
            (
                y.inner().into_data().to_vec::<f32>().unwrap(),
                x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(),
            )
        };
        let (ours, burns) = (run(true), run(false));
        assert_eq!(ours, burns);
        assert_eq!(ours.0, vec![0.0, 0.0, 0.0, 0.0, 0.25, 3.0]);
        assert_eq!(ours.1, vec![0.0, 0.0, 0.0, 0.0, 5.0, 6.0]);
    }
}
