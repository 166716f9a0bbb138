//! The idx format of (Fashion-)MNIST, plain or gzip-compressed.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::{ImageDataset, ImageShape, ImageSplit};

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_ROOT: &str = "/usr/share/datasets/fashion-mnist";
const HINT: &str =
    "install the Debian package dataset-fashion-mnist (just setup), or set data.root";

/// A decoded idx array: dimensions and u8 data.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions from the header.
    pub dims: Vec<usize>,
    /// Row-major data.
    pub data: Vec<u8>,
}

/// Decodes idx bytes (gzip is detected by its magic number).
pub fn decode(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                why: format!("bad gzip stream: {e}"),
            })?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            why: "not an idx file (bad magic number)".into(),
        });
    }
    if bytes[2] != 0x08 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            why: format!(
                "idx element type 0x{:02x}, only unsigned bytes (0x08) are supported",
                bytes[2]
            ),
        });
    }
    let ndim = bytes[3] as usize;
    let header_err = |field: String, value: u64, why: &str| DataError::Header {
        path: path.to_path_buf(),
        field,
        value,
        why: why.into(),
    };
    if ndim == 0 {
        return Err(header_err(
            "number of dimensions".into(),
            0,
            "an idx array needs at least one dimension",
        ));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header,
            found: bytes.len(),
        });
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut n: usize = 1;
    for i in 0..ndim {
        let raw = u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes"));
        let field = format!("dimension {} of {ndim}", i + 1);
        if raw == 0 {
            return Err(header_err(field, 0, "a dimension must be at least 1"));
        }
        let d = usize::try_from(raw)
            .map_err(|_| header_err(field.clone(), raw.into(), "does not fit this platform"))?;
        n = n.checked_mul(d).ok_or_else(|| {
            header_err(
                field,
                raw.into(),
                "the product of the dimensions overflows the size of an array",
            )
        })?;
        dims.push(d);
    }
    let found = bytes.len() - header;
    if found < n {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: n,
            found,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..header + n].to_vec(),
    })
}

/// Reads an idx file.
pub fn read(path: &Path) -> Result<IdxArray, DataError> {
    decode(&DataError::read(path, HINT)?, path)
}

fn find(root: &Path, stem: &str) -> PathBuf {
    let gz = root.join(format!("{stem}.gz"));
    if gz.exists() { gz } else { root.join(stem) }
}

/// Reads one split: images `[N, 28, 28]` and labels `[N]`, scaled to [0, 1].
pub fn read_split(
    root: &Path,
    images: &str,
    labels: &str,
) -> Result<(ImageShape, ImageSplit), DataError> {
    let ip = find(root, images);
    let lp = find(root, labels);
    let img = read(&ip)?;
    let lab = read(&lp)?;
    if img.dims.len() != 3 {
        return Err(DataError::Format {
            path: ip,
            why: format!("expected 3 dimensions [N, H, W], found {:?}", img.dims),
        });
    }
    if lab.dims.len() != 1 || lab.dims[0] != img.dims[0] {
        return Err(DataError::Format {
            path: lp,
            why: format!(
                "expected {} labels, header says {:?}",
                img.dims[0], lab.dims
            ),
        });
    }
    if let Some(bad) = lab.data.iter().find(|&&l| l > 9) {
        return Err(DataError::Format {
            path: lp,
            why: format!("label {bad} outside 0..=9"),
        });
    }
    let shape = ImageShape {
        channels: 1,
        height: img.dims[1],
        width: img.dims[2],
    };
    Ok((
        shape,
        ImageSplit {
            images: img.data.iter().map(|&v| v as f32 / 255.0).collect(),
            labels: lab.data,
        },
    ))
}

/// Loads (Fashion-)MNIST from a folder with the four standard idx files.
pub fn load_mnist_like(name: &str, root: &Path) -> Result<ImageDataset, DataError> {
    let (shape, train) = read_split(root, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let (test_shape, test) = read_split(root, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    if shape != test_shape {
        return Err(DataError::Format {
            path: root.to_path_buf(),
            why: format!("train images are {shape:?}, test images {test_shape:?}"),
        });
    }
    Ok(ImageDataset {
        name: name.into(),
        shape,
        classes: 10,
        train,
        test,
    })
}

/// Encodes an idx u8 array (used by tests and fixtures).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_set(dir: &Path, n: usize, gz: bool) {
        let imgs: Vec<u8> = (0..n * 28 * 28).map(|i| (i % 251) as u8).collect();
        let labs: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for (stem, bytes) in [
            ("train-images-idx3-ubyte", encode(&[n, 28, 28], &imgs)),
            ("train-labels-idx1-ubyte", encode(&[n], &labs)),
            ("t10k-images-idx3-ubyte", encode(&[n, 28, 28], &imgs)),
            ("t10k-labels-idx1-ubyte", encode(&[n], &labs)),
        ] {
            if gz {
                let f = std::fs::File::create(dir.join(format!("{stem}.gz"))).unwrap();
                let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                e.write_all(&bytes).unwrap();
                e.finish().unwrap();
            } else {
                std::fs::write(dir.join(stem), bytes).unwrap();
            }
        }
    }

    #[test]
    fn reads_plain_and_gzip() {
        for gz in [false, true] {
            let d = tempfile::tempdir().unwrap();
            write_set(d.path(), 5, gz);
            let ds = load_mnist_like("x", d.path()).unwrap();
            assert_eq!(ds.train.len(), 5);
            assert_eq!(ds.train.labels, vec![0, 1, 2, 3, 4]);
            assert_eq!(ds.train.images[1], 1.0 / 255.0);
        }
    }

    #[test]
    fn truncated_file_names_path_and_sizes() {
        let d = tempfile::tempdir().unwrap();
        write_set(d.path(), 5, false);
        let p = d.path().join("train-images-idx3-ubyte");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
        let e = load_mnist_like("x", d.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected: 3920,
                    found: 3820,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    }

    #[test]
    fn missing_file_and_bad_magic_are_named() {
        let d = tempfile::tempdir().unwrap();
        let e = load_mnist_like("x", d.path()).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("dataset-fashion-mnist"));
        write_set(d.path(), 2, false);
        std::fs::write(d.path().join("train-labels-idx1-ubyte"), b"garbage!").unwrap();
        let e = load_mnist_like("x", d.path()).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
    }

    #[test]
    fn wrong_shape_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        write_set(d.path(), 3, false);
        std::fs::write(
            d.path().join("train-labels-idx1-ubyte"),
            encode(&[4], &[0, 1, 2, 3]),
        )
        .unwrap();
        let e = load_mnist_like("x", d.path()).unwrap_err();
        assert!(e.to_string().contains("expected 3 labels"), "{e}");
    }
}
