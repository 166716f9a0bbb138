//! Learning-rate schedules with linear warm-up.

use lottery_core::config::{LrSchedule, TrainSection};

/// Learning rate at optimiser step `step` (0-based) of a run with `steps_per_epoch` steps per epoch.
pub fn lr_at(cfg: &TrainSection, step: usize, steps_per_epoch: usize) -> f64 {
    let spe = steps_per_epoch.max(1);
    let warmup = cfg.warmup_epochs * spe;
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    let epoch = step / spe;
    match cfg.lr_schedule {
        LrSchedule::Constant => cfg.lr,
        LrSchedule::Step => cfg.lr * cfg.gamma.powi((epoch / cfg.step_epochs.max(1)) as i32),
        LrSchedule::Multistep => {
            cfg.lr
                * cfg
                    .gamma
                    .powi(cfg.milestones.iter().filter(|&&m| epoch >= m).count() as i32)
        }
        LrSchedule::Cosine => {
            let total = (cfg.epochs * spe).saturating_sub(warmup).max(1);
            let t = (step - warmup).min(total) as f64 / total as f64;
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
        LrSchedule::Linear => {
            let total = cfg.epochs * spe;
            let left = total.saturating_sub(step) as f64;
            cfg.lr * left / total.saturating_sub(warmup).max(1) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: LrSchedule) -> TrainSection {
        TrainSection {
            lr: 1.0,
            epochs: 10,
            lr_schedule: s,
            milestones: vec![3, 6],
            gamma: 0.1,
            step_epochs: 4,
            ..Default::default()
        }
    }

    #[test]
    fn schedules_follow_their_definitions() {
        assert_eq!(lr_at(&cfg(LrSchedule::Constant), 95, 10), 1.0);
        let m = cfg(LrSchedule::Multistep);
        assert_eq!(lr_at(&m, 29, 10), 1.0);
        assert!((lr_at(&m, 30, 10) - 0.1).abs() < 1e-12);
        assert!((lr_at(&m, 60, 10) - 0.01).abs() < 1e-12);
        let s = cfg(LrSchedule::Step);
        assert!((lr_at(&s, 40, 10) - 0.1).abs() < 1e-12);
        let c = cfg(LrSchedule::Cosine);
        assert_eq!(lr_at(&c, 0, 10), 1.0);
        assert!((lr_at(&c, 50, 10) - 0.5).abs() < 1e-12);
        assert!(lr_at(&c, 99, 10) < 0.001);
    }

    #[test]
    fn linear_decay_is_hugging_faces_schedule() {
        // get_linear_schedule_with_warmup(num_warmup_steps=0, num_training_steps=100):
        // factor (100 - k) / 100 at step k.
        let l = cfg(LrSchedule::Linear);
        assert_eq!(lr_at(&l, 0, 10), 1.0);
        assert!((lr_at(&l, 25, 10) - 0.75).abs() < 1e-12);
        assert!((lr_at(&l, 99, 10) - 0.01).abs() < 1e-12);
        assert_eq!(lr_at(&l, 100, 10), 0.0);
        // With 10 warm-up steps: (100 - k) / 90 after the warm-up.
        let mut w = cfg(LrSchedule::Linear);
        w.warmup_epochs = 1;
        assert!((lr_at(&w, 4, 10) - 0.5).abs() < 1e-12);
        assert!((lr_at(&w, 10, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(&w, 55, 10) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn warmup_is_linear() {
        let mut c = cfg(LrSchedule::Constant);
        c.warmup_epochs = 1;
        assert!((lr_at(&c, 0, 10) - 0.1).abs() < 1e-12);
        assert!((lr_at(&c, 4, 10) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(&c, 10, 10), 1.0);
    }
}
