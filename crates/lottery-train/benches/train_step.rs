//! Time of one SGD step (forward, loss, backward, momentum update) on this build's backend:
//! LeNet-300-100 at batch 128 (1×28×28); Conv-2, VGG-16 with batch norm and ResNet-20 at batch 64
//! (3×32×32).
//! Prints one line per model: `step <model> batch=<n> median_ms=<t> min_ms=<t> backend=<name>`.
//!
//! `cargo bench -p lottery-train --bench train_step [--features simd,rayon]`

use std::time::Instant;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use lottery_core::backend::{TrainBackend, backend_name, default_device};
use lottery_models::InputShape;
use lottery_train::task::loss_and_correct;

fn bench(model: &str, input: InputShape, batch: usize, warmup: usize, reps: usize) {
    let device = default_device();
    let mut m =
        lottery_models::build(model, input, 10, 0, Default::default(), &device).expect("model");
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }))
        .init::<TrainBackend, lottery_models::ImageModel<TrainBackend>>();
    let n = batch * input.numel();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let y: Vec<i64> = (0..batch).map(|i| (i % 10) as i64).collect();
    let mut times = vec![];
    let mut phases = vec![];
    for i in 0..warmup + reps {
        let xt = Tensor::<TrainBackend, 4>::from_data(
            TensorData::new(
                x.clone(),
                [batch, input.channels, input.height, input.width],
            ),
            &device,
        );
        let yt =
            Tensor::<TrainBackend, 1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device);
        let t = Instant::now();
        let (loss, _) = loss_and_correct(m.forward(xt), yt);
        // burn-flex runs eagerly; reading the loss makes sure the forward is done.
        let _ = loss.clone().into_scalar();
        let t_fwd = t.elapsed();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let t_bwd = t.elapsed();
        m = optim.step(0.01, m, grads);
        let total = t.elapsed();
        if i >= warmup {
            times.push(total.as_secs_f64() * 1e3);
            phases.push((
                t_fwd.as_secs_f64() * 1e3,
                (t_bwd - t_fwd).as_secs_f64() * 1e3,
                (total - t_bwd).as_secs_f64() * 1e3,
            ));
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let k = phases.len() as f64;
    let (f, b, o) = phases.iter().fold((0.0, 0.0, 0.0), |a, p| {
        (a.0 + p.0 / k, a.1 + p.1 / k, a.2 + p.2 / k)
    });
    println!(
        "step {model} batch={batch} median_ms={:.2} min_ms={:.2} mean_forward_ms={f:.2} mean_backward_ms={b:.2} mean_optimizer_ms={o:.2} backend={}",
        sorted[sorted.len() / 2],
        sorted[0],
        backend_name().replace(' ', "_")
    );
}

fn main() {
    let allocator = lottery_core::allocator::keep_large_buffers_in_heap();
    eprintln!("allocator settings: {allocator:?}");
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    if only.as_deref().is_none_or(|o| o == "lenet") {
        bench(
            "lenet-300-100",
            InputShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            128,
            5,
            50,
        );
    }
    let cifar = InputShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    if only.as_deref().is_none_or(|o| o == "conv2") {
        bench("conv-2", cifar, 64, 3, 20);
    }
    if only.as_deref().is_none_or(|o| o == "resnet20") {
        bench("resnet-20", cifar, 64, 2, 10);
    }
    if only.as_deref().is_none_or(|o| o == "vgg") {
        bench(
            "vgg-16",
            InputShape {
                channels: 3,
                height: 32,
                width: 32,
            },
            64,
            1,
            5,
        );
    }
}
