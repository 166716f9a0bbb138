//! Seeded "fuzzing" of the binary readers: hundreds of garbled headers and files (zero and huge
//! dimensions, truncation, wrong magic, flipped bytes), each written to a file. Every reader must
//! return an error naming that file, never panic, overflow or attempt a huge allocation.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use lottery_data::{DataError, cifar, idx, planetoid};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CASES: usize = 400;

fn be(d: u32) -> [u8; 4] {
    d.to_be_bytes()
}

/// An idx header with these raw dimensions, then `data` bytes.
fn idx_bytes(dims: &[u32], data: usize) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&be(d));
    }
    out.extend((0..data).map(|i| (i % 7) as u8));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn huge(rng: &mut ChaCha8Rng) -> u32 {
    match rng.random_range(0..3) {
        0 => u32::MAX,
        1 => rng.random_range(1 << 24..=u32::MAX),
        _ => 1 << 31,
    }
}

/// A garbled idx file, and a description for failure messages.
fn garbled_idx(rng: &mut ChaCha8Rng) -> (Vec<u8>, String) {
    let ndim = rng.random_range(1..=4usize);
    let mut dims: Vec<u32> = (0..ndim).map(|_| rng.random_range(1..=6)).collect();
    let kind = rng.random_range(0..9);
    let bytes = match kind {
        // A zero dimension somewhere.
        0 => {
            let at = rng.random_range(0..ndim);
            dims[at] = 0;
            let data = rng.random_range(0..64);
            idx_bytes(&dims, data)
        }
        // Huge dimensions: the size overflows or the data is missing.
        1 => {
            for d in dims.iter_mut() {
                if rng.random_bool(0.6) {
                    *d = huge(rng);
                }
            }
            let at = rng.random_range(0..ndim);
            dims[at] = huge(rng);
            let data = rng.random_range(0..64);
            idx_bytes(&dims, data)
        }
        // Valid header, data cut short.
        2 => {
            let n: usize = dims.iter().map(|&d| d as usize).product();
            let data = rng.random_range(0..n);
            idx_bytes(&dims, data)
        }
        // Header itself cut short.
        3 => {
            let full = idx_bytes(&dims, 0);
            let keep = rng.random_range(0..full.len());
            full[..keep].to_vec()
        }
        // Wrong magic.
        4 => {
            let mut b = idx_bytes(&dims, 8);
            let at = rng.random_range(0..2);
            b[at] = rng.random_range(1..=255);
            b
        }
        // Unsupported element type.
        5 => {
            let mut b = idx_bytes(&dims, 8);
            b[2] = loop {
                let t: u8 = rng.random();
                if t != 0x08 {
                    break t;
                }
            };
            b
        }
        // No dimensions.
        6 => idx_bytes(&[], rng.random_range(0..8)),
        // A broken gzip stream.
        7 => {
            let mut b = gzip(&idx_bytes(&dims, 4));
            let keep = rng.random_range(2..b.len() - 1);
            b.truncate(keep);
            b
        }
        // Any of the above, gzip-compressed.
        _ => {
            dims[rng.random_range(0..ndim)] = if rng.random_bool(0.5) { 0 } else { u32::MAX };
            gzip(&idx_bytes(&dims, rng.random_range(0..32)))
        }
    };
    (bytes, format!("kind {kind}, dims {dims:?}"))
}

/// Runs `f`, failing the test (not aborting it) on a panic.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("{what}: the reader panicked"))
}

#[test]
fn garbled_idx_headers_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0x1d8);
    let mut header_errors = 0;
    for case in 0..CASES {
        let (bytes, what) = garbled_idx(&mut rng);
        let path = dir.path().join(format!("case-{case}-idx3-ubyte"));
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("case {case} ({what})");
        let e = no_panic(&what, || idx::read(&path))
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("case-{case}-idx3-ubyte")),
            "{what}: {msg}"
        );
        if let DataError::Header { field, value, .. } = &e {
            header_errors += 1;
            assert!(
                msg.contains(field.as_str()) && msg.contains(&value.to_string()),
                "{what}: {msg}"
            );
        }
    }
    assert!(header_errors > CASES / 10, "{header_errors} header errors");
}

#[test]
fn zero_and_huge_idx_dimensions_are_named_header_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero-idx3-ubyte");
    std::fs::write(&path, idx_bytes(&[5, 0, 28], 100)).unwrap();
    let e = idx::read(&path).unwrap_err();
    assert!(
        matches!(&e, DataError::Header { field, value: 0, .. } if field == "dimension 2 of 3"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("zero-idx3-ubyte: header field dimension 2 of 3 = 0"),
        "{e}"
    );

    let path = dir.path().join("huge-idx3-ubyte");
    std::fs::write(&path, idx_bytes(&[u32::MAX; 3], 100)).unwrap();
    let e = idx::read(&path).unwrap_err();
    assert!(
        matches!(&e, DataError::Header { field, value, .. }
            if field == "dimension 3 of 3" && *value == u32::MAX as u64),
        "{e}"
    );
    assert!(e.to_string().contains("overflows"), "{e}");

    // Large but representable: a truncation error with the exact figure, no allocation.
    std::fs::write(&path, idx_bytes(&[u32::MAX, u32::MAX], 100)).unwrap();
    let e = idx::read(&path).unwrap_err();
    let want = (u32::MAX as usize) * (u32::MAX as usize);
    assert!(
        matches!(e, DataError::Truncated { expected, found: 100, .. } if expected == want),
        "{e}"
    );
}

/// Writes a valid four-file set with `n` 2×2 images, then `images` as the training images.
fn mnist_set(dir: &Path, images: &[u8]) {
    let n = 2;
    for (stem, bytes) in [
        ("train-images-idx3-ubyte", images.to_vec()),
        ("train-labels-idx1-ubyte", idx_bytes(&[n], n as usize)),
        ("t10k-images-idx3-ubyte", idx_bytes(&[n, 2, 2], 8)),
        ("t10k-labels-idx1-ubyte", idx_bytes(&[n], n as usize)),
    ] {
        std::fs::write(dir.join(stem), bytes).unwrap();
    }
}

#[test]
fn garbled_image_headers_fail_the_whole_load_with_the_file_named() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..CASES / 4 {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, what) = garbled_idx(&mut rng);
        mnist_set(dir.path(), &bytes);
        let what = format!("case {case} ({what})");
        let e = no_panic(&what, || idx::load_mnist_like("x", dir.path()))
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(
            e.to_string().contains("train-images-idx3-ubyte"),
            "{what}: {e}"
        );
    }
    // The same set with good images loads.
    let dir = tempfile::tempdir().unwrap();
    mnist_set(dir.path(), &idx_bytes(&[2, 2, 2], 8));
    let mut ds = idx::load_mnist_like("x", dir.path()).unwrap();
    ds.normalise();
    assert_eq!(ds.train.len(), 2);
}

#[test]
fn garbled_cifar_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0xc1fa);
    for case in 0..CASES {
        let (variant, label_bytes, classes) = if rng.random_bool(0.5) {
            (cifar::Variant::Cifar10, 1, 10)
        } else {
            (cifar::Variant::Cifar100, 2, 100)
        };
        let rec = label_bytes + 3072;
        let len = match rng.random_range(0..5) {
            0 => 0,
            1 => rec - 1,
            2 => rec + 1,
            3 => 2 * rec,
            _ => rng.random_range(0..3 * rec),
        };
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        // Labels valid unless the coin says otherwise.
        let bad_label = rng.random_bool(0.5);
        for r in bytes.chunks_mut(rec) {
            if r.len() >= label_bytes && !bad_label {
                r[label_bytes - 1] %= classes;
            }
        }
        let valid = len > 0
            && len.is_multiple_of(rec)
            && bytes
                .chunks(rec)
                .all(|r| (r[label_bytes - 1] as usize) < classes as usize);
        let path = dir.path().join(format!("case-{case}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("case {case} ({variant:?}, {len} bytes)");
        let got = no_panic(&what, || {
            cifar::decode(&std::fs::read(&path).unwrap(), variant, &path)
        });
        match got {
            Ok(split) => {
                assert!(valid, "{what}: accepted");
                assert_eq!(split.images.len(), split.len() * 3072);
            }
            Err(e) => {
                assert!(!valid, "{what}: rejected: {e}");
                assert!(e.to_string().contains(&format!("case-{case}.bin")), "{e}");
            }
        }
    }
}

fn copy_fixture(to: &Path) -> Vec<PathBuf> {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/planetoid/tiny3");
    let mut files = vec![];
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        std::fs::copy(&p, &dest).unwrap();
        files.push(dest);
    }
    files.sort();
    files
}

#[test]
fn garbled_planetoid_pickles_never_panic_and_name_a_file() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x9e7);
    let mut rejected = 0;
    for case in 0..CASES / 2 {
        let dir = tempfile::tempdir().unwrap();
        let files = copy_fixture(dir.path());
        let target = &files[rng.random_range(0..files.len())];
        let mut bytes = std::fs::read(target).unwrap();
        match rng.random_range(0..4) {
            // A few bytes changed: shapes, opcodes, lengths.
            0 | 1 => {
                for _ in 0..rng.random_range(1..=4) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = match rng.random_range(0..3) {
                        0 => 0,
                        1 => 0xff,
                        _ => rng.random(),
                    };
                }
            }
            // Cut short.
            2 => bytes.truncate(rng.random_range(0..bytes.len())),
            // Replaced by noise.
            _ => {
                bytes = vec![0; rng.random_range(0..256)];
                rng.fill_bytes(&mut bytes);
            }
        }
        std::fs::write(target, &bytes).unwrap();
        let what = format!("case {case} ({})", target.display());
        if let Err(e) = no_panic(&what, || planetoid::load(dir.path(), "tiny")) {
            rejected += 1;
            let msg = e.to_string();
            assert!(
                msg.contains(&dir.path().join("ind.tiny.").display().to_string()),
                "{what}: {msg}"
            );
        }
    }
    assert!(rejected > CASES / 8, "only {rejected} rejected");
}
