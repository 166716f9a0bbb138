//! Building blocks shared by the architectures.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

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

    /// conv → bn → relu.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.conv.forward(x);
        let x = match &self.bn {
            Some(bn) => bn.forward(x),
            None => x,
        };
        relu(x)
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

/// A fully connected layer.
pub fn linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).init(device)
}

/// 2×2 max pooling, stride 2.
pub fn max_pool2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    burn::tensor::module::max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
}

/// Global average pooling to `[N, C]`.
pub fn global_avg_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, _, _] = x.dims();
    burn::tensor::module::adaptive_avg_pool2d(x, [1, 1]).reshape([n, c])
}
