//! The architectures. Field names are chosen so that burn's module paths are, after
//! [`torch_name`](crate::torch_name), the names PyTorch gives the same network in OpenLTH
//! (`fc_layers.0.weight`, `layers.3.conv.weight`, `blocks.4.shortcut.0.weight`).

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, Linear};
use burn::prelude::*;
use lottery_core::BnMode;
use lottery_core::config::BiasLayout;
use lottery_core::conv::conv2d;
use lottery_core::fused::FusedOps;

use crate::layers::{ConvModule, batch_norm, conv, global_avg_pool, linear_with};
use crate::switches::Switches;

/// Shape of one input example: channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputShape {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

impl InputShape {
    /// Entries of one example.
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// A multilayer perceptron with ReLU: LeNet-300-100 and friends.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Hidden layers.
    pub fc_layers: Vec<Linear<B>>,
    /// Output layer.
    pub fc: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Hidden widths `hidden`, then `classes` outputs; biases as `bias` says.
    pub fn new(
        input: InputShape,
        hidden: &[usize],
        classes: usize,
        bias: BiasLayout,
        device: &B::Device,
    ) -> Self {
        let mut d = input.numel();
        let mut fc_layers = vec![];
        for &h in hidden {
            fc_layers.push(linear_with(d, h, bias.linear(), device));
            d = h;
        }
        Self {
            fc_layers,
            fc: linear_with(d, classes, bias.linear(), device),
        }
    }
}

impl<B: FusedOps> Mlp<B> {
    /// Logits.
    pub fn forward(&self, x: Tensor<B, 4>, s: &mut Switches<B>) -> Tensor<B, 2> {
        let mut x: Tensor<B, 2> = x.flatten(1, 3);
        for l in &self.fc_layers {
            x = s.relu(l.forward(x));
        }
        self.fc.forward(x)
    }
}

/// LeNet-5 (LeCun et al. 1998) with ReLU and max pooling: conv 6@5×5, pool, conv 16@5×5, pool,
/// 120, 84, classes. A 28×28 input is padded by 2 in the first convolution, as usual for MNIST.
#[derive(Module, Debug)]
pub struct LeNet5<B: Backend> {
    /// First convolution.
    pub conv1: Conv2d<B>,
    /// Second convolution.
    pub conv2: Conv2d<B>,
    /// First fully connected layer.
    pub fc1: Linear<B>,
    /// Second fully connected layer.
    pub fc2: Linear<B>,
    /// Output layer.
    pub fc3: Linear<B>,
}

impl<B: Backend> LeNet5<B> {
    /// LeNet-5 for the given input; biases as `bias` says.
    pub fn new(input: InputShape, classes: usize, bias: BiasLayout, device: &B::Device) -> Self {
        let pad = if input.height < 32 {
            (32 - input.height).div_ceil(2)
        } else {
            0
        };
        let h = ((input.height + 2 * pad - 4) / 2 - 4) / 2;
        let w = ((input.width + 2 * pad - 4) / 2 - 4) / 2;
        Self {
            conv1: conv(input.channels, 6, 5, 1, pad, bias.convolutions(), device),
            conv2: conv(6, 16, 5, 1, 0, bias.convolutions(), device),
            fc1: linear_with(16 * h * w, 120, bias.linear(), device),
            fc2: linear_with(120, 84, bias.linear(), device),
            fc3: linear_with(84, classes, bias.linear(), device),
        }
    }
}

impl<B: FusedOps> LeNet5<B> {
    /// Logits.
    pub fn forward(&self, x: Tensor<B, 4>, s: &mut Switches<B>) -> Tensor<B, 2> {
        let x = s.relu(conv2d(&self.conv1, x));
        let x = s.max_pool2(x);
        let x = s.relu(conv2d(&self.conv2, x));
        let x = s.max_pool2(x);
        let x: Tensor<B, 2> = x.flatten(1, 3);
        let x = s.relu(self.fc1.forward(x));
        let x = s.relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }
}

/// One entry of a VGG-style plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A convolution with this many filters.
    Conv(usize),
    /// 2×2 max pooling.
    Pool,
}

/// A stack of convolutions and pools, then fully connected layers: the Conv-2/4/6 networks of
/// Frankle & Carbin (no batch norm) and VGG-11/16/19 with batch norm (OpenLTH's CIFAR VGG: global
/// average pooling, one linear classifier).
#[derive(Module, Debug)]
pub struct ConvNet<B: Backend> {
    /// Convolution modules, indexed like PyTorch's `nn.Sequential` (pools count).
    pub layers: Vec<ConvModule<B>>,
    /// Hidden fully connected layers (empty for VGG).
    pub fc_layers: Vec<Linear<B>>,
    /// Output layer.
    pub fc: Linear<B>,
    /// For each entry of `layers`, whether a pool follows it.
    #[module(skip)]
    pools_after: Vec<bool>,
    /// Global average pooling before the classifier (VGG) rather than flattening (Conv-k).
    #[module(skip)]
    global_pool: bool,
    /// Position of each entry of `layers` in the PyTorch `nn.Sequential` (pools take indices).
    #[module(skip)]
    torch_index: Vec<usize>,
}

impl<B: Backend> ConvNet<B> {
    /// Builds the network of `plan` followed by fully connected `hidden` widths, biases as
    /// `bias` says.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: InputShape,
        plan: &[Plan],
        hidden: &[usize],
        batch_norm: bool,
        global_pool: bool,
        classes: usize,
        bias: BiasLayout,
        device: &B::Device,
    ) -> Self {
        let mut layers = vec![];
        let mut pools_after = vec![];
        let mut torch_index = vec![];
        let (mut c, mut h, mut w) = (input.channels, input.height, input.width);
        for (i, p) in plan.iter().enumerate() {
            match *p {
                Plan::Conv(f) => {
                    layers.push(ConvModule::new(
                        c,
                        f,
                        3,
                        batch_norm,
                        bias.convolutions(),
                        device,
                    ));
                    pools_after.push(false);
                    torch_index.push(i);
                    c = f;
                }
                Plan::Pool => {
                    if let Some(last) = pools_after.last_mut() {
                        *last = true;
                    }
                    h /= 2;
                    w /= 2;
                }
            }
        }
        let mut d = if global_pool { c } else { c * h * w };
        let mut fc_layers = vec![];
        for &n in hidden {
            fc_layers.push(linear_with(d, n, bias.linear(), device));
            d = n;
        }
        Self {
            layers,
            fc_layers,
            fc: linear_with(d, classes, bias.linear(), device),
            pools_after,
            global_pool,
            torch_index,
        }
    }

    /// PyTorch `nn.Sequential` index of `layers[i]`.
    pub fn torch_index(&self, i: usize) -> usize {
        self.torch_index[i]
    }
}

impl<B: FusedOps> ConvNet<B> {
    /// Logits, batch norm in `mode`.
    pub fn forward(&self, mut x: Tensor<B, 4>, mode: BnMode, s: &mut Switches<B>) -> Tensor<B, 2> {
        for (layer, &pool) in self.layers.iter().zip(&self.pools_after) {
            x = layer.forward(x, mode, s);
            if pool {
                x = s.max_pool2(x);
            }
        }
        let mut x: Tensor<B, 2> = if self.global_pool {
            global_avg_pool(x)
        } else {
            x.flatten(1, 3)
        };
        for l in &self.fc_layers {
            x = s.relu(l.forward(x));
        }
        self.fc.forward(x)
    }
}

/// The 1×1 projection shortcut of a downsampling residual block.
#[derive(Module, Debug)]
pub struct Shortcut<B: Backend> {
    /// 1×1 convolution, stride 2.
    pub conv: Conv2d<B>,
    /// Batch norm.
    pub bn: BatchNorm<B>,
}

/// A basic residual block (two 3×3 convolutions).
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// First convolution (carries the stride).
    pub conv1: Conv2d<B>,
    /// Its batch norm.
    pub bn1: BatchNorm<B>,
    /// Second convolution.
    pub conv2: Conv2d<B>,
    /// Its batch norm.
    pub bn2: BatchNorm<B>,
    /// Projection when the shape changes; identity otherwise.
    pub shortcut: Option<Shortcut<B>>,
}

impl<B: Backend> BasicBlock<B> {
    fn new(c_in: usize, c_out: usize, stride: usize, device: &B::Device) -> Self {
        let shortcut = (stride != 1 || c_in != c_out).then(|| Shortcut {
            conv: conv(c_in, c_out, 1, stride, 0, false, device),
            bn: BatchNormConfig::new(c_out).init(device),
        });
        Self {
            conv1: conv(c_in, c_out, 3, stride, 1, false, device),
            bn1: BatchNormConfig::new(c_out).init(device),
            conv2: conv(c_out, c_out, 3, 1, 1, false, device),
            bn2: BatchNormConfig::new(c_out).init(device),
            shortcut,
        }
    }
}

impl<B: FusedOps> BasicBlock<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: BnMode, s: &mut Switches<B>) -> Tensor<B, 4> {
        let out = s.relu(batch_norm(&self.bn1, conv2d(&self.conv1, x.clone()), mode));
        let out = batch_norm(&self.bn2, conv2d(&self.conv2, out), mode);
        let skip = match &self.shortcut {
            Some(s) => batch_norm(&s.bn, conv2d(&s.conv, x), mode),
            None => x,
        };
        s.relu(out + skip)
    }
}

/// The CIFAR ResNets of He et al. 2016 (ResNet-20/32/56): depth 6n+2, widths 16/32/64, projection
/// shortcuts where the shape changes (OpenLTH's `cifar_resnet_N`).
#[derive(Module, Debug)]
pub struct CifarResNet<B: Backend> {
    /// Stem convolution.
    pub conv: Conv2d<B>,
    /// Stem batch norm.
    pub bn: BatchNorm<B>,
    /// Residual blocks, all stages in order.
    pub blocks: Vec<BasicBlock<B>>,
    /// Classifier.
    pub fc: Linear<B>,
}

impl<B: Backend> CifarResNet<B> {
    /// ResNet of the given depth (6n + 2); its convolutions never carry a bias, the classifier
    /// as `bias` says.
    pub fn new(
        input: InputShape,
        depth: usize,
        classes: usize,
        bias: BiasLayout,
        device: &B::Device,
    ) -> Self {
        assert!(
            depth >= 8 && (depth - 2).is_multiple_of(6),
            "CIFAR ResNet depth must be 6n+2, got {depth}"
        );
        let n = (depth - 2) / 6;
        let mut blocks = vec![];
        let mut c = 16;
        for (stage, width) in [16usize, 32, 64].into_iter().enumerate() {
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(c, width, stride, device));
                c = width;
            }
        }
        Self {
            conv: conv(input.channels, 16, 3, 1, 1, false, device),
            bn: BatchNormConfig::new(16).init(device),
            blocks,
            fc: linear_with(64, classes, bias.linear(), device),
        }
    }
}

impl<B: FusedOps> CifarResNet<B> {
    /// Logits, batch norm in `mode`.
    pub fn forward(&self, x: Tensor<B, 4>, mode: BnMode, s: &mut Switches<B>) -> Tensor<B, 2> {
        let mut x = s.relu(batch_norm(&self.bn, conv2d(&self.conv, x), mode));
        for b in &self.blocks {
            x = b.forward(x, mode, s);
        }
        self.fc.forward(global_avg_pool(x))
    }
}

/// Every image classifier, as one module type so that training code is written once.
// One model exists per run, so the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ImageModel<B: Backend> {
    /// Multilayer perceptron.
    Mlp(Mlp<B>),
    /// LeNet-5.
    LeNet5(LeNet5<B>),
    /// Conv-k and VGG.
    ConvNet(ConvNet<B>),
    /// CIFAR ResNet.
    ResNet(CifarResNet<B>),
}

impl<B: FusedOps> ImageModel<B> {
    /// Logits `[N, classes]` of images `[N, C, H, W]`, batch norm as burn runs it (batch
    /// statistics when gradients are tracked, running statistics otherwise).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_with(x, BnMode::Train)
    }

    /// Logits with batch norm in `mode` ([`BnMode::Eval`]: running statistics on every backend).
    pub fn forward_with(&self, x: Tensor<B, 4>, mode: BnMode) -> Tensor<B, 2> {
        self.forward_switched(x, mode, &mut Switches::Free)
    }

    /// Logits with batch norm in `mode` and every ReLU and max pool switched as `switches` says
    /// (recorded, or replayed from a recording).
    pub fn forward_switched(
        &self,
        x: Tensor<B, 4>,
        mode: BnMode,
        switches: &mut Switches<B>,
    ) -> Tensor<B, 2> {
        match self {
            Self::Mlp(m) => m.forward(x, switches),
            Self::LeNet5(m) => m.forward(x, switches),
            Self::ConvNet(m) => m.forward(x, mode, switches),
            Self::ResNet(m) => m.forward(x, mode, switches),
        }
    }
}

impl<B: Backend> ImageModel<B> {
    /// Every batch-norm scale γ of the network (as tracked tensors: a penalty on them trains them).
    pub fn norm_scales(&self) -> Vec<Tensor<B, 1>> {
        match self {
            Self::Mlp(_) | Self::LeNet5(_) => vec![],
            Self::ConvNet(n) => n
                .layers
                .iter()
                .filter_map(|l| l.bn.as_ref().map(|bn| bn.gamma.val()))
                .collect(),
            Self::ResNet(r) => {
                let mut out = vec![r.bn.gamma.val()];
                for b in &r.blocks {
                    out.push(b.bn1.gamma.val());
                    out.push(b.bn2.gamma.val());
                    if let Some(s) = &b.shortcut {
                        out.push(s.bn.gamma.val());
                    }
                }
                out
            }
        }
    }

    /// Which layers carry a bias: what [`Architecture::build_with`] needs to build this network
    /// again.
    pub fn bias_layout(&self) -> BiasLayout {
        let (conv, linear) = match self {
            Self::Mlp(m) => (true, m.fc.bias.is_some()),
            Self::LeNet5(m) => (m.conv1.bias.is_some(), m.fc3.bias.is_some()),
            Self::ConvNet(n) => (
                n.layers.first().is_none_or(|l| l.conv.bias.is_some()),
                n.fc.bias.is_some(),
            ),
            // The ResNets' convolutions never carry a bias.
            Self::ResNet(r) => (true, r.fc.bias.is_some()),
        };
        match (conv, linear) {
            (_, false) => BiasLayout::None,
            (true, true) => BiasLayout::All,
            (false, true) => BiasLayout::LinearOnly,
        }
    }

    /// The architecture, read back from the module, to build the same network elsewhere (with
    /// [`ImageModel::bias_layout`]).
    pub fn architecture(&self) -> Architecture {
        match self {
            Self::Mlp(m) => Architecture::Mlp {
                hidden: m.fc_layers.iter().map(|l| l.weight.dims()[1]).collect(),
            },
            Self::LeNet5(_) => Architecture::LeNet5,
            Self::ConvNet(n) => {
                let mut plan = vec![];
                for (layer, &pool) in n.layers.iter().zip(&n.pools_after) {
                    plan.push(Plan::Conv(layer.conv.weight.dims()[0]));
                    if pool {
                        plan.push(Plan::Pool);
                    }
                }
                Architecture::ConvNet {
                    plan,
                    hidden: n.fc_layers.iter().map(|l| l.weight.dims()[1]).collect(),
                    batch_norm: n.layers.first().is_some_and(|l| l.bn.is_some()),
                    global_pool: n.global_pool,
                }
            }
            Self::ResNet(r) => Architecture::ResNet {
                depth: 2 * r.blocks.len() + 2,
            },
        }
    }
}

/// A network's shape without its weights: what the model registry holds, generic over backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Architecture {
    /// [`Mlp`] with these hidden widths.
    Mlp {
        /// Hidden widths.
        hidden: Vec<usize>,
    },
    /// [`LeNet5`].
    LeNet5,
    /// [`ConvNet`].
    ConvNet {
        /// Convolutions and pools.
        plan: Vec<Plan>,
        /// Hidden fully connected widths.
        hidden: Vec<usize>,
        /// Batch norm after each convolution.
        batch_norm: bool,
        /// Global average pooling before the classifier.
        global_pool: bool,
    },
    /// [`CifarResNet`] of this depth.
    ResNet {
        /// 6n + 2.
        depth: usize,
    },
}

impl Architecture {
    /// The network on backend `B` for `input` and `classes` (weights still to be initialised),
    /// every layer with its bias.
    pub fn build<B: Backend>(
        &self,
        input: InputShape,
        classes: usize,
        device: &B::Device,
    ) -> ImageModel<B> {
        self.build_with(input, classes, BiasLayout::All, device)
    }

    /// [`Architecture::build`] with biases as `bias` says.
    pub fn build_with<B: Backend>(
        &self,
        input: InputShape,
        classes: usize,
        bias: BiasLayout,
        device: &B::Device,
    ) -> ImageModel<B> {
        match self {
            Self::Mlp { hidden } => ImageModel::Mlp(Mlp::new(input, hidden, classes, bias, device)),
            Self::LeNet5 => ImageModel::LeNet5(LeNet5::new(input, classes, bias, device)),
            Self::ConvNet {
                plan,
                hidden,
                batch_norm,
                global_pool,
            } => ImageModel::ConvNet(ConvNet::new(
                input,
                plan,
                hidden,
                *batch_norm,
                *global_pool,
                classes,
                bias,
                device,
            )),
            Self::ResNet { depth } => {
                ImageModel::ResNet(CifarResNet::new(input, *depth, classes, bias, device))
            }
        }
    }
}

/// VGG plans of OpenLTH's `cifar_vgg_N`.
pub fn vgg_plan(depth: usize) -> Option<Vec<Plan>> {
    use Plan::{Conv as C, Pool as P};
    Some(match depth {
        11 => vec![
            C(64),
            P,
            C(128),
            P,
            C(256),
            C(256),
            P,
            C(512),
            C(512),
            P,
            C(512),
            C(512),
        ],
        13 => vec![
            C(64),
            C(64),
            P,
            C(128),
            C(128),
            P,
            C(256),
            C(256),
            P,
            C(512),
            C(512),
            P,
            C(512),
            C(512),
        ],
        16 => vec![
            C(64),
            C(64),
            P,
            C(128),
            C(128),
            P,
            C(256),
            C(256),
            C(256),
            P,
            C(512),
            C(512),
            C(512),
            P,
            C(512),
            C(512),
            C(512),
        ],
        19 => vec![
            C(64),
            C(64),
            P,
            C(128),
            C(128),
            P,
            C(256),
            C(256),
            C(256),
            C(256),
            P,
            C(512),
            C(512),
            C(512),
            C(512),
            P,
            C(512),
            C(512),
            C(512),
            C(512),
        ],
        _ => return None,
    })
}

/// Conv-2/4/6 plans of Frankle & Carbin (2019).
pub fn conv_k_plan(k: usize) -> Option<Vec<Plan>> {
    use Plan::{Conv as C, Pool as P};
    Some(match k {
        2 => vec![C(64), C(64), P],
        4 => vec![C(64), C(64), P, C(128), C(128), P],
        6 => vec![C(64), C(64), P, C(128), C(128), P, C(256), C(256), P],
        _ => return None,
    })
}
