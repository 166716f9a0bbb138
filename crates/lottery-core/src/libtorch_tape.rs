//! LibTorch's own backward kernels, reached through its autograd.
//!
//! tch 0.22 exposes LibTorch's forward kernels but not most of their backward ones
//! (`convolution_backward`, `native_batch_norm_backward`), so burn-tch differentiates a convolution
//! with a transposed convolution and a convolution over swapped axes, and the fused batch norm's
//! closed form would take about ten passes. A [`TchTape`] runs the forward on leaves that share
//! storage with burn's tensors and lets LibTorch's autograd record it; the backward then asks
//! autograd for the leaves' gradients of `⟨y, dy⟩`, whose gradient with respect to `y` is `dy`:
//! LibTorch runs its native backward kernels, at the price of one dot product and one scaled copy
//! of `dy`.

use burn::backend::libtorch::TchTensor;

/// A LibTorch forward recorded by its autograd: the output and the leaves it was computed from.
#[derive(Debug)]
pub struct TchTape {
    output: tch::Tensor,
    /// One per input: the recording leaf, or `None` where no gradient is wanted.
    leaves: Vec<Option<tch::Tensor>>,
}

impl Clone for TchTape {
    fn clone(&self) -> Self {
        Self {
            output: self.output.shallow_clone(),
            leaves: self
                .leaves
                .iter()
                .map(|l| l.as_ref().map(tch::Tensor::shallow_clone))
                .collect(),
        }
    }
}

impl TchTape {
    /// A recording leaf for `x`, sharing its storage. The caller keeps `x` (burn's handle) alive
    /// until the backward, so that burn never updates it in place while autograd holds it.
    pub fn leaf(x: &TchTensor) -> tch::Tensor {
        x.tensor.detach().set_requires_grad(true)
    }

    /// The record of `output`, computed from `leaves` (`None` for an input without a gradient).
    pub fn new(output: &tch::Tensor, leaves: Vec<Option<tch::Tensor>>) -> Self {
        Self {
            output: output.shallow_clone(),
            leaves,
        }
    }

    /// The leaves' gradients given the output's gradient `dy`, in the order of the leaves
    /// (`None` where no gradient was wanted).
    pub fn backward(self, dy: &tch::Tensor) -> Vec<Option<tch::Tensor>> {
        let tracked: Vec<&tch::Tensor> = self.leaves.iter().flatten().collect();
        if tracked.is_empty() {
            return self.leaves.iter().map(|_| None).collect();
        }
        let inner = self.output.flatten(0, -1).dot(&dy.flatten(0, -1));
        let mut grads = tch::Tensor::run_backward(&[inner], &tracked, false, false).into_iter();
        self.leaves
            .iter()
            .map(|leaf| leaf.as_ref().and_then(|_| grads.next()))
            .collect()
    }
}
