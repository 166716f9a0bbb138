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

/// Variables that cap the instruction set of LibTorch's CPU kernels (oneDNN, MKL, ATen).
const ISA_CAPS: [&str; 4] = [
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "ATEN_CPU_CAPABILITY",
];

/// The processor a run computes on, for run summaries: its model name, the widest vector
/// instruction set it offers and any variable that caps the set the kernels use, e.g.
/// `"Intel(R) Xeon(R) Processor; avx512f"`. LibTorch's CPU kernels choose their code by
/// instruction set, so one config can give other figures on another processor (or under a cap).
pub fn processor() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let mut out = format!("{model}; {}", widest_vector_isa());
    for key in ISA_CAPS {
        if let Ok(value) = std::env::var(key) {
            out.push_str(&format!("; {key}={value}"));
        }
    }
    out
}

/// The widest vector instruction set the processor offers.
fn widest_vector_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if std::arch::is_x86_feature_detected!("avx2") {
            "avx2"
        } else if std::arch::is_x86_feature_detected!("avx") {
            "avx"
        } else {
            "sse2"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("sve") {
            "sve"
        } else {
            "neon"
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processor_names_a_model_and_an_instruction_set() {
        let p = processor();
        let mut parts = p.split("; ");
        assert!(!parts.next().unwrap_or("").is_empty(), "{p}");
        let isa = parts.next().unwrap_or("");
        assert!(
            ["avx512f", "avx2", "avx", "sse2", "sve", "neon", "scalar"].contains(&isa),
            "{p}"
        );
    }
}
