//! Time of one GCN epoch on this build's backend, as the graph-ticket studies run it: the
//! registered `sbm` graph (1,200 nodes, about 2,300 edges, 300 bag-of-words features, 4 classes),
//! the 2-layer bias-free GCN at the references' 512 hidden units, full batch: one Adam step
//! (dropout 0.5 on the hidden layer, cross-entropy on the training nodes, weight decay 5e-4) and
//! the evaluation forward pass on the validation and test nodes.
//!
//! Writes the graph to `sbm.json` in the benchmark's scratch folder (printed as `graph=`) so that
//! `benches/torch_gcn.py` runs PyTorch on the very same graph, and prints
//! `gcn sbm hidden=512 median_ms=<t> min_ms=<t> backend=<name> graph=<path>`: the median over
//! `CHUNKS` chunks of the mean epoch time of `EPOCHS` epochs, after one warm-up chunk.
//!
//! `cargo bench -p lottery-gcn --bench gcn_epoch [--features simd,rayon]`

use std::sync::Arc;
use std::time::Instant;

use lottery_core::backend::backend_name;
use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::{MaskSet, PruneTarget};
use lottery_data::graph::{SbmSpec, stochastic_block_model};
use lottery_gcn::GcnTask;

const HIDDEN: usize = 512;
const EPOCHS: usize = 10;
const CHUNKS: usize = 5;

fn main() {
    let allocator = lottery_core::allocator::keep_large_buffers_in_heap();
    eprintln!("allocator settings: {allocator:?}");
    let graph = stochastic_block_model(&SbmSpec::standard());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbm.json");
    let json = format!(
        "{{\"nodes\": {}, \"feature_dim\": {}, \"classes\": {}, \"edges\": {:?}, \"features\": {:?}, \"labels\": {:?}, \"train\": {:?}, \"val\": {:?}, \"test\": {:?}}}",
        graph.nodes,
        graph.feature_dim,
        graph.classes,
        graph.edges.iter().map(|&(u, v)| [u, v]).collect::<Vec<_>>(),
        graph.features,
        graph.labels,
        graph.train,
        graph.val,
        graph.test
    );
    std::fs::write(&path, json).expect("scratch folder");
    let train = TrainSection {
        epochs: 200,
        optimizer: OptimizerKind::Adam,
        lr: 0.01,
        weight_decay: 5e-4,
        lr_schedule: LrSchedule::Constant,
        ..Default::default()
    };
    let mut gcn = GcnTask::new(Arc::new(graph), HIDDEN, train, 0);
    let dense = MaskSet::new();
    let mut chunk_ms = vec![];
    for chunk in 0..=CHUNKS {
        let end = gcn.clock().step + EPOCHS;
        let t = Instant::now();
        gcn.train_until(&dense, end, &mut |_| {}).expect("epochs");
        if chunk > 0 {
            chunk_ms.push(t.elapsed().as_secs_f64() * 1e3 / EPOCHS as f64);
        }
    }
    chunk_ms.sort_by(f64::total_cmp);
    println!(
        "gcn sbm hidden={HIDDEN} median_ms={:.2} min_ms={:.2} backend={} graph={}",
        chunk_ms[chunk_ms.len() / 2],
        chunk_ms[0],
        backend_name().replace(' ', "_"),
        path.display()
    );
}
