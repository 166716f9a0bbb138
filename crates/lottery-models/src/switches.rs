//! The piecewise-linear switches of a forward pass: which ReLU inputs are positive, and which
//! entry of each max-pooling window is taken. Recorded at one point and replayed at another,
//! they turn the network into the smooth function that agrees with it near the recording point:
//! its gradients there are the network's, and its second derivatives are the almost-everywhere
//! ones that autodiff's double backward gives (ReLU'' = 0, pooling routes fixed). GraSP's
//! Hessian-gradient product is a central difference of gradients of that function.

use burn::prelude::*;
use lottery_core::relu::{FusedRelu, relu};

/// One recorded switch.
#[derive(Debug, Clone)]
pub enum Switch<B: Backend> {
    /// Where a ReLU's input was ≤ 0 (its output and gradient are zero there).
    ReluOff(Tensor<B, 1, Bool>),
    /// For each pooling output, the index within its `H·W` input plane it was taken from.
    PoolRoute(Tensor<B, 4, Int>),
}

/// How a forward pass sets its switches.
#[derive(Debug, Clone)]
pub enum Switches<B: Backend> {
    /// From its own inputs, as a network does.
    Free,
    /// From its own inputs, each recorded in forward order.
    Record(Vec<Switch<B>>),
    /// As recorded: the `next` recorded switch is set by the next ReLU or pool.
    Replay {
        /// The recording.
        recorded: Vec<Switch<B>>,
        /// The switch the next ReLU or pool reads.
        next: usize,
    },
}

impl<B: Backend> Switches<B> {
    /// An empty recording.
    pub fn record() -> Self {
        Self::Record(vec![])
    }

    /// This recording, replayed from its first switch.
    ///
    /// # Panics
    /// When `self` is not a recording.
    pub fn replay(&self) -> Self {
        match self {
            Self::Record(recorded) | Self::Replay { recorded, .. } => Self::Replay {
                recorded: recorded.clone(),
                next: 0,
            },
            Self::Free => panic!("only a recording can be replayed"),
        }
    }

    /// Switches recorded (or replayed so far).
    pub fn len(&self) -> usize {
        match self {
            Self::Free => 0,
            Self::Record(r) => r.len(),
            Self::Replay { next, .. } => *next,
        }
    }

    /// Whether nothing was recorded (or replayed) yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&mut self) -> Switch<B> {
        let Self::Replay { recorded, next } = self else {
            unreachable!("only a replay takes switches")
        };
        let switch = recorded
            .get(*next)
            .unwrap_or_else(|| panic!("the replay has {} switches, the network more", *next))
            .clone();
        *next += 1;
        switch
    }

    /// 2×2 max pooling, stride 2, with this forward pass's switches.
    pub fn max_pool2(&mut self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        const K: [usize; 2] = [2, 2];
        match self {
            Self::Free => burn::tensor::module::max_pool2d(x, K, K, [0, 0], [1, 1], false),
            Self::Record(recorded) => {
                let (out, route) =
                    burn::tensor::module::max_pool2d_with_indices(x, K, K, [0, 0], [1, 1], false);
                recorded.push(Switch::PoolRoute(route));
                out
            }
            Self::Replay { .. } => match self.take() {
                Switch::PoolRoute(route) => {
                    let [n, c, h, w] = x.dims();
                    let [_, _, oh, ow] = route.dims();
                    x.reshape([n, c, h * w])
                        .gather(2, route.reshape([n, c, oh * ow]))
                        .reshape([n, c, oh, ow])
                }
                Switch::ReluOff(_) => panic!("the replay has a ReLU where the network a pool"),
            },
        }
    }
}

impl<B: FusedRelu> Switches<B> {
    /// ReLU with this forward pass's switches.
    pub fn relu<const D: usize>(&mut self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Free => relu(x),
            Self::Record(recorded) => {
                let off = x.clone().lower_equal_elem(0.0);
                let n = off.shape().num_elements();
                recorded.push(Switch::ReluOff(off.clone().reshape([n])));
                x.mask_fill(off, 0.0)
            }
            Self::Replay { .. } => match self.take() {
                Switch::ReluOff(off) => {
                    let shape = x.shape();
                    x.mask_fill(off.reshape(shape), 0.0)
                }
                Switch::PoolRoute(_) => panic!("the replay has a pool where the network a ReLU"),
            },
        }
    }
}
