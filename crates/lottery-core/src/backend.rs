//! The one backend of a build, chosen by cargo feature: burn-flex on the CPU by default, burn-cuda
//! with `--features cuda`. Registries hold plain `fn` pointers monomorphised for these aliases.

/// Backend without autodiff (evaluation, data-free scoring).
#[cfg(not(feature = "cuda"))]
pub type Backend = burn::backend::Flex;
/// Backend without autodiff (evaluation, data-free scoring).
#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;

/// Backend with autodiff, for training and gradient scores.
pub type TrainBackend = burn::backend::Autodiff<Backend>;

/// Device of [`Backend`].
pub type Device = burn::tensor::Device<Backend>;

/// The device runs use: the CPU for flex, GPU 0 for CUDA.
pub fn default_device() -> Device {
    Device::default()
}

/// Name of the backend compiled in, for run summaries.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "burn-cuda"
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
