//! The Planetoid reader on generated files in the real format (see
//! `scripts/make_planetoid_fixture.py`): Python 2 style pickles and Python 3 protocol 4.

use std::path::Path;

use lottery_data::planetoid;

fn fixture(folder: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/planetoid")
        .join(folder)
}

/// Row of node `n` before row normalisation, as the generator wrote it.
fn features_of(n: usize) -> Vec<f32> {
    let mut row = vec![0.0; 5];
    row[n % 5] = 1.0;
    row[(n * 2 + 1) % 5] = 2.0;
    row
}

fn check(folder: &str) {
    let g = planetoid::load(&fixture(folder), "tiny").unwrap();
    assert_eq!(g.nodes, 12);
    assert_eq!(g.feature_dim, 5);
    assert_eq!(g.classes, 3);
    assert_eq!(g.train, vec![0, 1, 2]);
    assert_eq!(g.val, (3..12).collect::<Vec<u32>>());
    assert_eq!(g.test, vec![8, 10, 11]);
    // Edges: both directions folded, the self-loop (2, 2) dropped.
    assert_eq!(
        g.edges,
        vec![
            (0, 1),
            (0, 3),
            (0, 11),
            (1, 2),
            (1, 9),
            (2, 3),
            (4, 5),
            (4, 7),
            (5, 6),
            (6, 7),
            (8, 10),
            (10, 11)
        ]
    );
    for n in [0usize, 5, 7, 8, 10, 11] {
        let raw = features_of(n);
        let s: f32 = raw.iter().sum();
        let want: Vec<f32> = raw.iter().map(|x| x / s).collect();
        assert_eq!(&g.features[n * 5..n * 5 + 5], want.as_slice(), "node {n}");
        assert_eq!(g.labels[n], (n % 3) as u32, "label of node {n}");
    }
    // Node 9: in the test range, not in the test index: zero features, label 0.
    assert!(g.features[45..50].iter().all(|&x| x == 0.0));
    assert_eq!(g.labels[9], 0);
}

#[test]
fn reads_python2_planetoid_pickles() {
    check("tiny");
}

#[test]
fn reads_python3_planetoid_pickles() {
    check("tiny3");
}

#[test]
fn a_missing_file_is_named() {
    let e = planetoid::load(&fixture("tiny"), "cora")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ind.cora.x") && e.contains("missing"), "{e}");
}

#[test]
fn a_corrupt_file_names_file_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let y = dir.path().join("ind.tiny.y");
    let mut bytes = std::fs::read(&y).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&y, bytes).unwrap();
    let e = planetoid::load(dir.path(), "tiny").unwrap_err().to_string();
    assert!(e.contains("ind.tiny.y") && e.contains("pickle byte"), "{e}");
}
