//! Under the `tch` feature, compiles `native/libtorch_backward.cpp` (LibTorch's convolution and
//! batch-norm backward kernels for `libtorch_backward`) against the libtorch that torch-sys links.
//! Does nothing for the flex and CUDA builds.

fn main() {
    #[cfg(feature = "tch")]
    compile_libtorch_backward();
}

#[cfg(feature = "tch")]
fn compile_libtorch_backward() {
    use std::path::PathBuf;

    const SOURCE: &str = "native/libtorch_backward.cpp";
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // torch-sys (`links = "tch"`) publishes `cargo:libtorch_lib=DIR`; the headers sit beside it,
    // in a libtorch download as in a torch wheel.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_else(|_| {
        panic!("torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB)")
    });
    let include = PathBuf::from(&lib)
        .parent()
        .map(|root| root.join("include"))
        .filter(|dir| dir.join("ATen").is_dir())
        .unwrap_or_else(|| panic!("no libtorch headers (include/ATen) beside {lib}"));
    // The ABI torch-sys assumes when it is not told otherwise; the torch 2.9 wheels use it.
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .warnings(false)
        .file(SOURCE)
        .compile("lottery_libtorch_backward");
}
