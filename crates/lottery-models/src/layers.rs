//! Building blocks shared by the architectures.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use lottery_core::BnMode;

use crate::switches::Switches;

/// A 3×3 (or k×k) convolution, optional batch norm, ReLU.
#[derive(Module, Debug)]
pub struct ConvModule<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
    /// Batch norm after it, when the architecture has one.
    pub bn: Option<BatchNorm<B>>,
}

impl<B: Backend> ConvModule<B> {
    /// Same-padded k×k convolution `c_in → c_out`.
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        batch_norm: bool,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            conv: conv(c_in, c_out, kernel, 1, kernel / 2, bias, device),
            bn: batch_norm.then(|| BatchNormConfig::new(c_out).init(device)),
        }
    }

    /// conv → bn → relu, the ReLU's switches as `switches` says.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        mode: BnMode,
        switches: &mut Switches<B>,
    ) -> Tensor<B, 4> {
        let x = self.conv.forward(x);
        let x = match &self.bn {
            Some(bn) => batch_norm(bn, x, mode),
            None => x,
        };
        switches.relu(x)
    }
}

/// Batch norm in `mode`. [`BnMode::Train`] is burn's own forward: batch statistics when gradients
/// are tracked (and the running statistics updated), running statistics otherwise.
/// [`BnMode::Eval`] normalises with the running statistics on every backend, autodiff included,
/// so gradients can be taken through an eval-mode network (PyTorch's `model.eval()`).
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, mode: BnMode) -> Tensor<B, 4> {
    match mode {
        BnMode::Train => bn.forward(x),
        BnMode::Eval => {
            let c = x.dims()[1];
            let per_channel = |t: Tensor<B, 1>| t.reshape([1, c, 1, 1]);
            let mean = per_channel(bn.running_mean.value());
            let std = per_channel(bn.running_var.value().add_scalar(bn.epsilon).sqrt());
            x.sub(mean)
                .div(std)
                .mul(per_channel(bn.gamma.val()))
                .add(per_channel(bn.beta.val()))
        }
    }
}

/// A convolution layer.
pub fn conv<B: Backend>(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(bias)
        .init(device)
}

/// A fully connected layer with a bias.
pub fn linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    linear_with(d_in, d_out, true, device)
}

/// A fully connected layer, with or without a bias.
pub fn linear_with<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

/// Global average pooling to `[N, C]`.
pub fn global_avg_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, _, _] = x.dims();
    burn::tensor::module::adaptive_avg_pool2d(x, [1, 1]).reshape([n, c])
}
