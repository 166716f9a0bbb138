//! The C allocator's settings for training: large tensors reuse heap memory instead of fresh
//! mappings.
//!
//! burn's optimizers and gradient clipping build a new tensor for each element-wise pass, and
//! LibTorch allocates its CPU tensors with the C `malloc`. glibc serves any request above its mmap
//! threshold (adjusted at run time, never above 32 MB) with a fresh mapping, which the kernel
//! faults in and zeroes page by page and which is unmapped again when freed. Embedding-sized
//! tensors (BERT's word embeddings and their Adam moments are 47 MB each) take that path on every
//! step: profiled, the page faults and zeroing were about half of the gap between burn-tch's BERT
//! step and PyTorch's. [`keep_large_buffers_in_heap`] raises the threshold so that such buffers
//! come from the heap and are reused, and keeps freed memory instead of returning it to the
//! operating system at once. The price is that the process's resident memory stays near its peak.

/// glibc's mmap threshold set by [`keep_large_buffers_in_heap`]: requests up to 1 GiB come from
/// the heap.
pub const MMAP_THRESHOLD_BYTES: i32 = 1 << 30;
/// glibc's trim threshold set by [`keep_large_buffers_in_heap`]: free memory at the top of the
/// heap is returned to the operating system only above this (the largest value `mallopt` takes).
pub const TRIM_THRESHOLD_BYTES: i32 = i32::MAX;
/// glibc's top pad set by [`keep_large_buffers_in_heap`]: how much more than asked for the heap
/// grows by at a time.
pub const TOP_PAD_BYTES: i32 = 512 << 20;

/// Set (to any value) to keep glibc's allocator defaults.
pub const OPT_OUT_VARIABLE: &str = "LOTTERY_MALLOC_DEFAULTS";

/// What [`keep_large_buffers_in_heap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocatorTuning {
    /// The three settings were applied.
    Applied,
    /// Left as it was: the named environment variable asks for the defaults or sets glibc's
    /// allocator itself.
    LeftToEnvironment(String),
    /// glibc refused the named setting (an older glibc caps the mmap threshold at 32 MB).
    Refused(&'static str),
    /// Not a glibc target: nothing to tune.
    Unsupported,
}

/// The environment variable, read through `var`, by which a user sets glibc's allocator or opts
/// out of the tuning; [`keep_large_buffers_in_heap`] leaves the allocator alone when there is one.
fn environment_override(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    [
        OPT_OUT_VARIABLE,
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
    ]
    .into_iter()
    .find(|name| var(name).is_some())
    .map(str::to_string)
    .or_else(|| {
        var("GLIBC_TUNABLES")
            .is_some_and(|t| t.contains("glibc.malloc."))
            .then(|| "GLIBC_TUNABLES".to_string())
    })
}

fn process_environment(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Raises glibc's mmap, trim and top-pad thresholds (see the module's documentation) unless the
/// environment sets them or [`OPT_OUT_VARIABLE`] is set. Call it first thing in `main`, before
/// other threads start; a second call sets the same values again.
pub fn keep_large_buffers_in_heap() -> AllocatorTuning {
    if let Some(variable) = environment_override(process_environment) {
        return AllocatorTuning::LeftToEnvironment(variable);
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> AllocatorTuning {
    let settings = [
        (
            "M_MMAP_THRESHOLD",
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD_BYTES,
        ),
        (
            "M_TRIM_THRESHOLD",
            libc::M_TRIM_THRESHOLD,
            TRIM_THRESHOLD_BYTES,
        ),
        ("M_TOP_PAD", libc::M_TOP_PAD, TOP_PAD_BYTES),
    ];
    for (name, parameter, value) in settings {
        // SAFETY: mallopt takes glibc's arena lock; the parameters are glibc's own constants and
        // the values are within the ranges it documents.
        if unsafe { libc::mallopt(parameter, value) } != 1 {
            return AllocatorTuning::Refused(name);
        }
    }
    AllocatorTuning::Applied
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> AllocatorTuning {
    AllocatorTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_thresholds_and_a_buffer_over_32_mb_then_comes_from_the_heap() {
        if environment_override(process_environment).is_some() {
            return;
        }
        assert_eq!(keep_large_buffers_in_heap(), AllocatorTuning::Applied);
        // 40 MB, above glibc's largest default mmap threshold (32 MB): by default a fresh
        // mapping, counted in `hblkhd`; now heap memory, which `hblkhd` does not count.
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let mapped_before = unsafe { libc::mallinfo2() }.hblkhd;
        let buffer = vec![1u8; 40 << 20];
        let mapped_after = unsafe { libc::mallinfo2() }.hblkhd;
        assert!(
            mapped_after < mapped_before + (40 << 20),
            "a 40 MB buffer was mapped on its own ({mapped_before} -> {mapped_after} bytes)"
        );
        assert_eq!(buffer.iter().map(|&b| b as usize).sum::<usize>(), 40 << 20);
    }

    #[test]
    fn the_opt_out_and_glibcs_own_malloc_variables_leave_the_allocator_alone() {
        let environment = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(environment_override(environment(&[])), None);
        assert_eq!(
            environment_override(environment(&[("LOTTERY_MALLOC_DEFAULTS", "")])).as_deref(),
            Some("LOTTERY_MALLOC_DEFAULTS")
        );
        assert_eq!(
            environment_override(environment(&[("MALLOC_TOP_PAD_", "0")])).as_deref(),
            Some("MALLOC_TOP_PAD_")
        );
        assert_eq!(
            environment_override(environment(&[(
                "GLIBC_TUNABLES",
                "glibc.malloc.mmap_threshold=65536"
            )]))
            .as_deref(),
            Some("GLIBC_TUNABLES")
        );
        assert_eq!(
            environment_override(environment(&[("GLIBC_TUNABLES", "glibc.cpu.x86_ibt=on")])),
            None
        );
    }
}
