//! Building blocks shared by the architectures.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use lottery_core::BnMode;
use lottery_core::conv::conv2d;
use lottery_core::fused::FusedOps;

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
}

impl<B: FusedOps> ConvModule<B> {
    /// conv → bn → relu, the ReLU's switches as `switches` says.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        mode: BnMode,
        switches: &mut Switches<B>,
    ) -> Tensor<B, 4> {
        let x = conv2d(&self.conv, x);
        let x = match &self.bn {
            Some(bn) => batch_norm(bn, x, mode),
            None => x,
        };
        switches.relu(x)
    }
}

/// Batch norm in `mode`. [`BnMode::Train`] behaves as burn's `BatchNorm::forward`: batch
/// statistics when gradients are tracked (and the running statistics updated), running statistics
/// otherwise; the tracked case runs as one operation ([`FusedBatchNorm`](lottery_core::fused::FusedBatchNorm)) instead of burn's
/// composition of about ten. [`BnMode::Eval`] normalises with the running statistics on every
/// backend, autodiff included, so gradients can be taken through an eval-mode network (PyTorch's
/// `model.eval()`).
pub fn batch_norm<B: FusedOps>(bn: &BatchNorm<B>, x: Tensor<B, 4>, mode: BnMode) -> Tensor<B, 4> {
    match mode {
        BnMode::Train if B::ad_enabled(&x.device()) => batch_norm_train(bn, x),
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

/// Train-mode batch norm with the batch's statistics; the running statistics move towards them
/// by burn's momentum, as `BatchNorm::forward` does (the biased variance, as burn keeps it).
fn batch_norm_train<B: FusedOps>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let stats = B::batch_norm_train(
        x.into_primitive().tensor(),
        bn.gamma.val().into_primitive().tensor(),
        bn.beta.val().into_primitive().tensor(),
        bn.epsilon,
    );
    let float = |t| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t)).detach();
    let mean = float(stats.mean);
    let var = float(stats.var);
    let m = bn.momentum;
    let device = mean.device();
    let moved = |running: Tensor<B, 1>, batch: Tensor<B, 1>| {
        running
            .to_device(&device)
            .mul_scalar(1.0 - m)
            .add(batch.mul_scalar(m))
            .detach()
    };
    bn.running_mean
        .update(moved(bn.running_mean.value_sync(), mean));
    bn.running_var
        .update(moved(bn.running_var.value_sync(), var));
    Tensor::from_primitive(TensorPrimitive::Float(stats.output))
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::Param;
    use lottery_core::backend::Backend as BuildBackend;

    /// This build's backend (LibTorch with `--features lottery-core/tch`), under autodiff.
    type Ad = Autodiff<BuildBackend>;

    fn tensor<const D: usize>(shape: [usize; D], seed: usize) -> Tensor<Ad, D> {
        let n = shape.iter().product::<usize>();
        let values: Vec<f32> = (0..n)
            .map(|i| {
                (((i * 7919 + seed * 104_729) % 1000) as f32 / 250.0 - 2.0) * (1.0 + seed as f32)
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn close(a: Tensor<Ad, 1>, b: Tensor<Ad, 1>, what: &str) {
        let (a, b) = (
            a.into_data().to_vec::<f32>().unwrap(),
            b.into_data().to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 2e-5 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs burn's {y}"
            );
        }
    }

    /// The one-node train-mode batch norm gives burn's `BatchNorm::forward_train` output, the same
    /// gradients for x, γ and β (autodiff through burn's composition), and the same running
    /// statistics over two steps, a constant channel (a pruned channel's) included.
    #[test]
    fn fused_train_batch_norm_equals_burns_output_gradients_and_running_statistics() {
        // Built twice: a cloned module would share its running statistics.
        let build = || {
            let mut bn: BatchNorm<Ad> = BatchNormConfig::new(3).init(&Default::default());
            bn.gamma = Param::from_tensor(tensor([3], 1).add_scalar(3.0));
            bn.beta = Param::from_tensor(tensor([3], 2));
            bn
        };
        let (fused, reference) = (build(), build());
        // Channel 2 constant: variance 0, as a pruned channel gives. 0.75 keeps every partial sum
        // of the channel and its mean exact in f32 whatever the summation order (with 0.7 the mean
        // was an ulp off on some CPUs' SIMD paths, and x − mean, scaled by 1/√ε ≈ 316, made the
        // comparison depend on the machine).
        let x = tensor([4, 3, 5, 6], 0).slice_assign(
            [0..4, 2..3, 0..5, 0..6],
            Tensor::<Ad, 4>::full([4, 1, 5, 6], 0.75, &Default::default()),
        );
        let weights = tensor([4, 3, 5, 6], 3);

        let run = |bn: &BatchNorm<Ad>, fused_path: bool| {
            let x = x.clone().require_grad();
            let y = if fused_path {
                batch_norm(bn, x.clone(), BnMode::Train)
            } else {
                bn.forward(x.clone())
            };
            let grads = y.clone().mul(weights.clone()).sum().backward();
            let flat = |t: Tensor<BuildBackend, 4>| Tensor::<Ad, 1>::from_inner(t.flatten(0, 3));
            (
                Tensor::<Ad, 1>::from_inner(y.inner().flatten(0, 3)),
                flat(x.grad(&grads).unwrap()),
                Tensor::<Ad, 1>::from_inner(bn.gamma.val().grad(&grads).unwrap()),
                Tensor::<Ad, 1>::from_inner(bn.beta.val().grad(&grads).unwrap()),
            )
        };
        run(&fused, true);
        run(&reference, false);
        let ours = run(&fused, true);
        let burns = run(&reference, false);
        close(ours.0, burns.0, "output");
        close(ours.1, burns.1, "dx");
        // A constant channel's x̂ is 0 and so is its dγ.
        let (d_gamma, d_gamma_burn) = (ours.2.into_data().to_vec::<f32>().unwrap(), burns.2);
        assert!(
            d_gamma[2].abs() < 1e-6,
            "dγ of the constant channel: {}",
            d_gamma[2]
        );
        close(
            Tensor::from_data(
                TensorData::new(d_gamma[..2].to_vec(), [2]),
                &Default::default(),
            ),
            d_gamma_burn.slice(0..2),
            "dγ",
        );
        close(ours.3, burns.3, "dβ");
        close(
            fused.running_mean.value_sync(),
            reference.running_mean.value_sync(),
            "running mean",
        );
        close(
            fused.running_var.value_sync(),
            reference.running_var.value_sync(),
            "running var",
        );
        let running_var = fused
            .running_var
            .value_sync()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!(running_var.iter().all(|v| *v >= 0.0), "{running_var:?}");
        // The running statistics moved (momentum 0.1 from 0 and 1).
        assert!(
            reference
                .running_mean
                .value_sync()
                .abs()
                .sum()
                .into_scalar()
                > 0.0
        );
    }
}
