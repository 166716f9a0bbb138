//! Under the `tch` feature, records the libtorch library folder that torch-sys linked against as
//! the binaries' (and tests') run-time search path, so that `lottery` finds libtorch without
//! LD_LIBRARY_PATH. Does nothing for the flex and CUDA builds.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    // torch-sys (`links = "tch"`) publishes `cargo:libtorch_lib=DIR` on Linux and macOS.
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) if !dir.is_empty() => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
        _ => println!(
            "cargo:warning=torch-sys did not report its libtorch folder: set LD_LIBRARY_PATH to run"
        ),
    }
}
