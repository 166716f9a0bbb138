//! The operations the networks run through the backend's own kernels where burn's generic ones
//! are slower: train-mode batch norm ([`FusedBatchNorm`]), the 2-D convolution
//! ([`NativeConv2d`]) and ReLU ([`FusedRelu`]). On burn-flex and CUDA they are burn's operations
//! (batch norm as one node with a closed-form backward); on LibTorch they run LibTorch's forward
//! and backward kernels, the ones PyTorch runs.

pub use crate::batch_norm::FusedBatchNorm;
pub use crate::conv::NativeConv2d;
pub use crate::relu::FusedRelu;

/// A backend with all three; every backend of this project is one.
pub trait FusedOps: FusedBatchNorm + NativeConv2d + FusedRelu {}

impl<B: FusedBatchNorm + NativeConv2d + FusedRelu> FusedOps for B {}
