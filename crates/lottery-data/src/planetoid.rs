//! The Planetoid citation graphs (Yang et al. 2016) in their original file format, as Kipf &
//! Welling's GCN and the graph-ticket references read them: `ind.<name>.{x, y, tx, ty, allx,
//! ally, graph}` (pickles: scipy CSR features, numpy one-hot labels, a `defaultdict` of
//! neighbour lists) and `ind.<name>.test.index` (one node per line).
//!
//! Node `i < len(allx)` has row `i` of `allx`/`ally`; test node `test.index[k]` has row `k` of
//! `tx`/`ty`; nodes in the test range but absent from the index (CiteSeer's isolated nodes) get
//! zero features and label 0, as the reference's zero-padding gives them. Standard split: the
//! first `len(y)` nodes train, the next 500 validate, the test index tests.

use std::path::Path;

use crate::error::DataError;
use crate::graph::Graph;
use crate::pickle::{self, Py};

/// The most feature values (nodes × features) a graph may have: far above the real Planetoid
/// graphs (PubMed: 19,717 × 500), far below what would exhaust memory.
pub const MAX_FEATURE_VALUES: usize = 1 << 28;

/// Loads `<root>/ind.<name>.*`.
pub fn load(root: &Path, name: &str) -> Result<Graph, DataError> {
    let hint = "the Planetoid files (ind.<name>.x, …, ind.<name>.test.index); set data.root";
    let read = |part: &str| -> Result<(std::path::PathBuf, Py), DataError> {
        let path = root.join(format!("ind.{name}.{part}"));
        let bytes = DataError::read(&path, hint)?;
        let v = pickle::load(&bytes).map_err(|e| DataError::Format {
            path: path.clone(),
            why: e.to_string(),
        })?;
        Ok((path, v))
    };
    let csr = |part: &str| -> Result<pickle::Csr, DataError> {
        let (path, v) = read(part)?;
        pickle::csr_matrix(&v).map_err(|why| DataError::Format { path, why })
    };
    let labels = |part: &str| -> Result<pickle::Array, DataError> {
        let (path, v) = read(part)?;
        let a = pickle::ndarray(&v).map_err(|why| DataError::Format {
            path: path.clone(),
            why,
        })?;
        if a.shape.len() != 2 {
            return Err(DataError::Format {
                path,
                why: format!("labels of shape {:?}, expected 2-D one-hot", a.shape),
            });
        }
        Ok(a)
    };
    let x = csr("x")?;
    let y = labels("y")?;
    let tx = csr("tx")?;
    let ty = labels("ty")?;
    let allx = csr("allx")?;
    let ally = labels("ally")?;
    let (graph_path, graph) = read("graph")?;
    let index_path = root.join(format!("ind.{name}.test.index"));
    let index_text =
        String::from_utf8(DataError::read(&index_path, hint)?).map_err(|e| DataError::Format {
            path: index_path.clone(),
            why: e.to_string(),
        })?;
    let mut test_index = vec![];
    for (i, line) in index_text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        test_index.push(t.parse::<usize>().map_err(|_| DataError::Format {
            path: index_path.clone(),
            why: format!("line {}: {t:?} is not a node number", i + 1),
        })?);
    }
    let format = |path: &Path, why: String| DataError::Format {
        path: path.to_path_buf(),
        why,
    };
    let header = |part: &str, field: &str, value: usize, why: String| DataError::Header {
        path: root.join(format!("ind.{name}.{part}")),
        field: field.into(),
        value: value as u64,
        why,
    };
    let f = allx.shape.1;
    let classes = ally.shape[1];
    if f == 0 {
        return Err(header("allx", "shape[1]", 0, "no features".into()));
    }
    if classes == 0 {
        return Err(header("ally", "shape[1]", 0, "no classes".into()));
    }
    if y.shape[0] > allx.shape.0 {
        return Err(header(
            "y",
            "shape[0]",
            y.shape[0],
            format!("more training nodes than allx's {} rows", allx.shape.0),
        ));
    }
    if ally.shape[0] != allx.shape.0 {
        return Err(header(
            "ally",
            "shape[0]",
            ally.shape[0],
            format!("allx has {} rows", allx.shape.0),
        ));
    }
    if tx.shape.1 != f || x.shape.1 != f || ty.shape[1] != classes || y.shape[1] != classes {
        return Err(format(
            &root.join(format!("ind.{name}.tx")),
            "feature or class counts differ between the files".into(),
        ));
    }
    if tx.shape.0 != test_index.len() || ty.shape[0] != test_index.len() {
        return Err(format(
            &index_path,
            format!(
                "{} test nodes listed, tx has {} rows and ty {}",
                test_index.len(),
                tx.shape.0,
                ty.shape[0]
            ),
        ));
    }
    let max_test = test_index.iter().copied().max().unwrap_or(0);
    let nodes = allx
        .shape
        .0
        .checked_add(tx.shape.0)
        .zip(max_test.checked_add(1))
        .map(|(a, b)| a.max(b))
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| {
            format(
                &index_path,
                format!("test node {max_test} is too large a node number"),
            )
        })?;
    if nodes.saturating_mul(f) > MAX_FEATURE_VALUES {
        return Err(header(
            "allx",
            "shape[1]",
            f,
            format!("{nodes} nodes × {f} features passes the limit of {MAX_FEATURE_VALUES} values"),
        ));
    }
    let mut features = vec![0f32; nodes * f];
    let mut label = vec![0u32; nodes];
    let argmax = |a: &pickle::Array, r: usize| -> u32 {
        let row = &a.values[r * classes..(r + 1) * classes];
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        best as u32
    };
    let dense_allx = allx.to_dense();
    features[..allx.shape.0 * f].copy_from_slice(&dense_allx);
    for (i, l) in label.iter_mut().enumerate().take(allx.shape.0) {
        *l = argmax(&ally, i);
    }
    let dense_tx = tx.to_dense();
    for (k, &node) in test_index.iter().enumerate() {
        features[node * f..(node + 1) * f].copy_from_slice(&dense_tx[k * f..(k + 1) * f]);
        label[node] = argmax(&ty, k);
    }
    let mut pairs = vec![];
    let entries: &[(Py, Py)] = match &graph {
        Py::Dict(d) => d,
        Py::Object { items, .. } => items,
        _ => return Err(format(&graph_path, "not a dict of neighbour lists".into())),
    };
    for (k, v) in entries {
        let u = k
            .as_int()
            .ok_or_else(|| format(&graph_path, format!("node key {k:?}")))?;
        for w in v
            .items()
            .ok_or_else(|| format(&graph_path, format!("neighbours of {u} are not a list")))?
        {
            let w = w
                .as_int()
                .ok_or_else(|| format(&graph_path, format!("neighbour {w:?} of {u}")))?;
            if u as usize >= nodes || w as usize >= nodes || u < 0 || w < 0 {
                return Err(format(
                    &graph_path,
                    format!("edge ({u}, {w}) outside {nodes} nodes"),
                ));
            }
            pairs.push((u as u32, w as u32));
        }
    }
    let mut test: Vec<u32> = test_index.iter().map(|&i| i as u32).collect();
    test.sort();
    let n_train = y.shape[0];
    let g = {
        let mut g = Graph {
            name: name.to_string(),
            nodes,
            edges: Graph::undirected_edges(pairs),
            features,
            feature_dim: f,
            labels: label,
            classes,
            train: (0..n_train as u32).collect(),
            val: (n_train as u32..(n_train + 500).min(nodes) as u32).collect(),
            test,
        };
        g.row_normalise_features();
        g
    };
    g.validate(&graph_path)?;
    Ok(g)
}
