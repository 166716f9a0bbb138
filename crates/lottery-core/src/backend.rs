//! The one backend of a build, chosen by cargo feature: burn-flex on the CPU by default, burn-cuda
//! with `--features cuda`, burn-tch (LibTorch, on the CPU) with `--features tch`. Registries hold
//! plain `fn` pointers monomorphised for these aliases.

#[cfg(all(feature = "cuda", feature = "tch"))]
compile_error!("the features `cuda` and `tch` each choose the backend: enable one of them");

/// Backend without autodiff (evaluation, data-free scoring).
#[cfg(not(any(feature = "cuda", feature = "tch")))]
pub type Backend = burn::backend::Flex;
/// Backend without autodiff (evaluation, data-free scoring).
#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;
/// Backend without autodiff (evaluation, data-free scoring).
#[cfg(all(feature = "tch", not(feature = "cuda")))]
pub type Backend = burn::backend::LibTorch<f32>;

/// Backend with autodiff, for training and gradient scores.
pub type TrainBackend = burn::backend::Autodiff<Backend>;

/// Device of [`Backend`].
pub type Device = burn::tensor::Device<Backend>;

/// The device runs use: the CPU for flex and LibTorch, GPU 0 for CUDA.
#[cfg(not(feature = "tch"))]
pub fn default_device() -> Device {
    Device::default()
}

/// The device runs use: the CPU for flex and LibTorch, GPU 0 for CUDA.
#[cfg(feature = "tch")]
pub fn default_device() -> Device {
    burn::backend::libtorch::LibTorchDevice::Cpu
}

/// Name of the backend compiled in, for run summaries.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "burn-cuda"
    } else if cfg!(feature = "tch") {
        // torch-sys 0.22 refuses to build against any other libtorch.
        "burn-tch (libtorch 2.9.0, cpu)"
    } else if cfg!(feature = "rayon") && cfg!(feature = "simd") {
        "burn-flex (simd, rayon)"
    } else if cfg!(feature = "simd") {
        "burn-flex (simd)"
    } else if cfg!(feature = "rayon") {
        "burn-flex (rayon)"
    } else {
        "burn-flex"
    }
}
