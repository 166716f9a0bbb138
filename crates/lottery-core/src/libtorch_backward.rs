//! LibTorch's own backward kernels for the convolution and the train-mode batch norm.
//!
//! tch 0.22 exposes LibTorch's forward kernels but not these two backward ones, so burn-tch
//! differentiates a convolution with a transposed convolution and a convolution over swapped axes,
//! and a batch norm would need its closed form in about ten passes. `native/libtorch_backward.cpp`
//! (compiled by this crate's build script against the libtorch that torch-sys links) calls
//! `at::convolution_backward` and `at::native_batch_norm_backward` on tch's tensors: the kernels
//! PyTorch's autograd runs for `conv2d` and `BatchNorm2d`, with nothing in between.

use std::ffi::{CStr, c_char};

use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn lottery_convolution_backward(
        grad_output: *const C_tensor,
        input: *const C_tensor,
        weight: *const C_tensor,
        bias_size: i64,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        groups: i64,
        wanted: *const bool,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;

    fn lottery_batch_norm_backward(
        grad_output: *const C_tensor,
        input: *const C_tensor,
        weight: *const C_tensor,
        save_mean: *const C_tensor,
        save_invstd: *const C_tensor,
        eps: f64,
        wanted: *const bool,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;

    fn lottery_free_error(message: *mut c_char);
}

/// Three gradients, `None` where not wanted.
pub type Grads3 = [Option<Tensor>; 3];

/// The 2-D convolution's geometry, as burn's `ConvOptions<2>`.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    /// Stride per spatial axis.
    pub stride: [i64; 2],
    /// Symmetric zero padding per spatial axis.
    pub padding: [i64; 2],
    /// Dilation per spatial axis.
    pub dilation: [i64; 2],
    /// Channel groups.
    pub groups: i64,
}

/// The gradients of `conv2d(input, weight, bias)` with respect to input, weight and bias, given
/// the output's gradient. `bias_size`: the bias's length, `None` without a bias; `wanted`: which
/// of the three to compute.
pub fn convolution_backward(
    grad_output: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    bias_size: Option<i64>,
    geometry: &ConvGeometry,
    wanted: [bool; 3],
) -> Grads3 {
    let wanted = [wanted[0], wanted[1], wanted[2] && bias_size.is_some()];
    let mut out = [std::ptr::null_mut(); 3];
    // SAFETY: every pointer is a live tch tensor handle or a live array of the length the C
    // function reads; the function writes three handles it hands over (or null).
    let error = unsafe {
        lottery_convolution_backward(
            grad_output.as_ptr(),
            input.as_ptr(),
            weight.as_ptr(),
            bias_size.unwrap_or(-1),
            geometry.stride.as_ptr(),
            geometry.padding.as_ptr(),
            geometry.dilation.as_ptr(),
            geometry.groups,
            wanted.as_ptr(),
            out.as_mut_ptr(),
        )
    };
    take(error, out, "convolution_backward")
}

/// The gradients of the train-mode `native_batch_norm(input, weight, bias)` with respect to
/// input, weight and bias, from the forward's saved per-channel mean and `1 / sqrt(var + ε)`.
pub fn batch_norm_backward(
    grad_output: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    save_mean: &Tensor,
    save_invstd: &Tensor,
) -> Grads3 {
    let wanted = [true; 3];
    let mut out = [std::ptr::null_mut(); 3];
    // SAFETY: as in `convolution_backward`. ε is read only in eval mode, so 0 here.
    let error = unsafe {
        lottery_batch_norm_backward(
            grad_output.as_ptr(),
            input.as_ptr(),
            weight.as_ptr(),
            save_mean.as_ptr(),
            save_invstd.as_ptr(),
            0.0,
            wanted.as_ptr(),
            out.as_mut_ptr(),
        )
    };
    take(error, out, "native_batch_norm_backward")
}

/// The handed-over gradients as owned tensors, or a panic with LibTorch's message (a backward
/// pass has no error channel; tch's own operations panic the same way).
fn take(error: *mut c_char, out: [*mut C_tensor; 3], kernel: &str) -> Grads3 {
    if !error.is_null() {
        // SAFETY: a non-null error is a NUL-terminated string the C side allocated for us.
        let message = unsafe { CStr::from_ptr(error) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: freed once, by the allocator that made it.
        unsafe { lottery_free_error(error) };
        panic!("LibTorch's {kernel} failed: {message}");
    }
    // SAFETY: each non-null handle is a new `at::Tensor` the caller now owns; tch frees it.
    out.map(|p| (!p.is_null()).then(|| unsafe { Tensor::from_ptr(p) }))
}
