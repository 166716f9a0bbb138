//! A training's state saved at its epoch ends, so that a run killed in the middle of its training
//! continues from the last saved epoch and finishes with the figures of an uninterrupted run.
//!
//! A state is a folder `epoch-<step>` in the saver's directory: every parameter and buffer
//! (`values.safetensors`), the optimiser's state (`optimizer.mpk`), the rewind checkpoints taken so
//! far and `state.json` (clock, metric rows, the loop's own variables and the key of the training).
//! It is written under a temporary name and renamed into place, and the states before it are then
//! removed, so a kill at any moment leaves the last complete state. A training only takes a state
//! whose key matches its own: the same start step, end step, mask and starting weights.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lottery_core::plugin::EpochReport;
use lottery_core::{MaskSet, MetricRow, ParamValues, PruneError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::task::Checkpoints;

/// What a training needs to continue exactly where it was saved.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedTraining {
    /// Optimiser steps taken.
    pub step: usize,
    /// Every parameter and buffer of the model.
    pub values: ParamValues,
    /// Every metric row recorded so far (those before the training included).
    pub metrics: Vec<MetricRow>,
    /// The reports of this training's epochs so far, replayed to the caller on resuming.
    pub reports: Vec<EpochReport>,
    /// The optimiser's state ([`crate::RunOptimizer::state_bytes`]).
    pub optimizer: Vec<u8>,
    /// Variables of the training loop that outlive an epoch (the GCN's best validation).
    pub loop_state: serde_json::Value,
    /// Rewind checkpoints taken so far.
    pub checkpoints: Checkpoints,
}

/// The optimiser's state of a training to save, keyed by the parameters' positions in `order`.
pub fn optimizer_bytes<M: burn::module::AutodiffModule<lottery_core::backend::TrainBackend>>(
    optim: &crate::RunOptimizer<M>,
    order: &[burn::module::ParamId],
) -> Result<Vec<u8>, PruneError> {
    optim
        .state_bytes(order)
        .map_err(|e| PruneError::Target(format!("saving the optimiser's state: {e}")))
}

/// `optim` with the state of `saved` (saved in `dir`), mapped onto the parameters of `order`.
pub fn restore_optimizer<M: burn::module::AutodiffModule<lottery_core::backend::TrainBackend>>(
    optim: crate::RunOptimizer<M>,
    saved: &SavedTraining,
    order: &[burn::module::ParamId],
    dir: &Path,
) -> Result<crate::RunOptimizer<M>, PruneError> {
    optim
        .with_state_bytes(&saved.optimizer, order)
        .map_err(|e| PruneError::damaged_progress(dir, e))
}

/// Passes the reports of the epochs a resumed training restored to its caller's `on_epoch`, as if
/// they had just run: the last with `restored` (the watched values of the restored state, which
/// are those at the end of that epoch), the earlier ones with no watched values (they are not
/// saved); stops at the first that breaks.
pub fn replay(
    reports: &[EpochReport],
    restored: &ParamValues,
    on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> std::ops::ControlFlow<()>,
) -> std::ops::ControlFlow<()> {
    let none = ParamValues::new();
    for (i, r) in reports.iter().enumerate() {
        let watched = if i + 1 == reports.len() {
            restored
        } else {
            &none
        };
        on_epoch(r, watched)?;
    }
    std::ops::ControlFlow::Continue(())
}

/// The part of a state kept as JSON.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    key: String,
    step: usize,
    metrics: Vec<MetricRow>,
    reports: Vec<EpochReport>,
    loop_state: serde_json::Value,
    checkpoints: Vec<usize>,
}

const FORMAT: &str = "lottery-training-state/1";

/// Saves a training's state at its epoch ends, at most once every `every`, and finds the state
/// a resumed training continues from.
#[derive(Debug, Clone)]
pub struct TrainingSaver {
    dir: PathBuf,
    every: Duration,
    last: Instant,
    /// The key and folder of the state this saver last wrote or loaded: its rewind checkpoints
    /// are the same files for the next save of that training (they never change once taken).
    previous: Option<(String, PathBuf)>,
}

impl TrainingSaver {
    /// A saver into `dir` (created on the first save) that saves at an epoch end once `every` has
    /// passed since the training began or was last saved (zero: every epoch).
    pub fn new(dir: PathBuf, every: Duration) -> Self {
        Self {
            dir,
            every,
            last: Instant::now(),
            previous: None,
        }
    }

    /// The folder the states go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of a training from `start_step` to `end_step` under `mask`, starting from `values`.
    pub fn key(start_step: usize, end_step: usize, mask: &MaskSet, values: &ParamValues) -> String {
        let mut h = Sha256::new();
        h.update(format!("{start_step}:{end_step}\n").as_bytes());
        for (name, m) in mask.iter() {
            h.update(format!("mask {name} {:?}\n", m.shape).as_bytes());
            let bits: Vec<u8> = m.keep.iter().map(|&k| k as u8).collect();
            h.update(&bits);
        }
        for (name, t) in values {
            h.update(format!("value {name} {:?}\n", t.shape).as_bytes());
            // One update per tensor (the same bytes, so the same key, as one per value).
            let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            h.update(&bytes);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Restarts the interval (at the start of a training).
    pub fn restart_interval(&mut self) {
        self.last = Instant::now();
    }

    /// Whether an epoch end now is due for a save.
    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.every
    }

    /// Starts a training from `start_step` to `end_step` under `mask` from `values`: restarts the
    /// saving interval and returns the training's key with the state it resumes from, if any.
    pub fn start(
        &mut self,
        start_step: usize,
        end_step: usize,
        mask: &MaskSet,
        values: &ParamValues,
    ) -> Result<(String, Option<SavedTraining>), PruneError> {
        self.restart_interval();
        let key = Self::key(start_step, end_step, mask, values);
        let saved = self.load(&key)?;
        if let Some(s) = &saved {
            tracing::info!(
                "training resumed at step {} from {}",
                s.step,
                self.dir.display()
            );
        }
        Ok((key, saved))
    }

    /// Saves the state that `state` builds (only when due) as the training with `key`.
    pub fn save_when_due(
        &mut self,
        key: &str,
        state: impl FnOnce() -> Result<SavedTraining, PruneError>,
    ) -> Result<(), PruneError> {
        if !self.due() {
            return Ok(());
        }
        let state = state()?;
        self.save(key, &state)
    }

    /// The folder of the latest saved state, if any.
    pub fn latest(&self) -> Option<PathBuf> {
        self.states().pop().map(|(_, folder)| folder)
    }

    /// The saved states, as (step, folder), oldest first.
    fn states(&self) -> Vec<(usize, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut out: Vec<(usize, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let step = name.strip_prefix("epoch-")?.parse::<usize>().ok()?;
                Some((step, e.path()))
            })
            .collect();
        out.sort();
        out
    }

    /// The latest saved state of the training with `key`; `None` when there is none (or the
    /// latest belongs to another training). A state that does not load is
    /// [`PruneError::DamagedProgress`].
    pub fn load(&mut self, key: &str) -> Result<Option<SavedTraining>, PruneError> {
        let Some((_, folder)) = self.states().pop() else {
            return Ok(None);
        };
        let json = folder.join("state.json");
        let text =
            std::fs::read_to_string(&json).map_err(|e| PruneError::damaged_progress(&json, e))?;
        let state: StateFile =
            serde_json::from_str(&text).map_err(|e| PruneError::damaged_progress(&json, e))?;
        if state.format != FORMAT {
            return Err(PruneError::damaged_progress(
                &json,
                format!("format `{}`", state.format),
            ));
        }
        if state.key != key {
            tracing::info!(
                "{} was saved by another training (another mask, start or schedule): starting this one afresh",
                folder.display()
            );
            return Ok(None);
        }
        let read_values = |path: &Path| {
            lottery_core::weights::read(path).map_err(|e| PruneError::damaged_progress(path, e))
        };
        let values = read_values(&folder.join("values.safetensors"))?;
        let optimizer_path = folder.join("optimizer.mpk");
        let optimizer = std::fs::read(&optimizer_path)
            .map_err(|e| PruneError::damaged_progress(&optimizer_path, e))?;
        let mut checkpoints = Checkpoints::new();
        for step in state.checkpoints {
            let path = folder.join(format!("checkpoint-step{step}.safetensors"));
            checkpoints.insert(step, read_values(&path)?);
        }
        self.previous = Some((key.to_string(), folder));
        Ok(Some(SavedTraining {
            step: state.step,
            values,
            metrics: state.metrics,
            reports: state.reports,
            optimizer,
            loop_state: state.loop_state,
            checkpoints,
        }))
    }

    /// Saves `state` of the training with `key` and removes the states before it.
    pub fn save(&mut self, key: &str, state: &SavedTraining) -> Result<(), PruneError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| PruneError::progress(&self.dir, e))?;
        let name = format!("epoch-{:010}", state.step);
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| PruneError::progress(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| PruneError::progress(&tmp, e))?;
        let write = |file: &str, bytes: &[u8]| {
            let path = tmp.join(file);
            std::fs::write(&path, bytes).map_err(|e| PruneError::progress(&path, e))
        };
        let meta = std::collections::BTreeMap::new();
        write(
            "values.safetensors",
            &lottery_core::weights::to_bytes(&state.values, &meta),
        )?;
        write("optimizer.mpk", &state.optimizer)?;
        let earlier = self
            .previous
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, folder)| folder.clone());
        for (step, values) in &state.checkpoints {
            let file = format!("checkpoint-step{step}.safetensors");
            // A checkpoint the last state of this training holds is linked, not written again.
            let linked = earlier.as_ref().is_some_and(|folder| {
                std::fs::hard_link(folder.join(&file), tmp.join(&file)).is_ok()
            });
            if !linked {
                write(&file, &lottery_core::weights::to_bytes(values, &meta))?;
            }
        }
        let file = StateFile {
            format: FORMAT.into(),
            key: key.into(),
            step: state.step,
            metrics: state.metrics.clone(),
            reports: state.reports.clone(),
            loop_state: state.loop_state.clone(),
            checkpoints: state.checkpoints.keys().copied().collect(),
        };
        let json = serde_json::to_string(&file).map_err(|e| PruneError::progress(&tmp, e))?;
        write("state.json", json.as_bytes())?;
        let target = self.dir.join(&name);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| PruneError::progress(&target, e))?;
        }
        std::fs::rename(&tmp, &target).map_err(|e| PruneError::progress(&target, e))?;
        self.previous = Some((key.to_string(), target.clone()));
        for (step, folder) in self.states() {
            if step != state.step {
                std::fs::remove_dir_all(&folder).map_err(|e| PruneError::progress(&folder, e))?;
            }
        }
        self.last = Instant::now();
        tracing::debug!("saved the training's state at step {}", state.step);
        Ok(())
    }
}

/// Conformance check of a prune target's resumable training, for the targets' tests: trains one
/// target from `new_target` to `end_step` under `mask` uninterrupted; trains another that saves
/// its state at every epoch end and stops after epoch `stop_after` (as a kill after that epoch's
/// save would); resumes a third from that state; and panics unless the third reports the same
/// epochs, records the same rows and ends with the same values of `names`, bit for bit. Then
/// damages the state left behind and panics unless a fourth stops with
/// [`PruneError::DamagedProgress`].
pub fn assert_resumes_exactly<T: lottery_core::PruneTarget>(
    new_target: impl Fn() -> T,
    mask: &MaskSet,
    end_step: usize,
    stop_after: usize,
    names: &[String],
) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let saving = |target: &mut T| {
        target
            .save_training_in(Some(dir.path().to_path_buf()), Duration::ZERO)
            .expect("the target saves its training's state");
    };
    let mut whole = new_target();
    let mut whole_reports = vec![];
    whole
        .train_until(mask, end_step, &mut |r| whole_reports.push(r.clone()))
        .expect("uninterrupted training");
    assert!(
        whole_reports.len() > stop_after,
        "stop after epoch {stop_after} of {}",
        whole_reports.len()
    );

    let mut first = new_target();
    saving(&mut first);
    first
        .train_watching(mask, end_step, &[], &mut |r, _| {
            if r.epoch == stop_after {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .expect("interrupted training");
    let mut resumed = new_target();
    saving(&mut resumed);
    let mut resumed_reports = vec![];
    resumed
        .train_until(mask, end_step, &mut |r| resumed_reports.push(r.clone()))
        .expect("resumed training");
    assert_eq!(resumed.clock().step, end_step);
    assert_eq!(resumed_reports, whole_reports, "the epochs' reports");
    assert_eq!(resumed.metrics(), whole.metrics(), "the metric rows");
    assert_eq!(
        resumed.values(names).expect("values"),
        whole.values(names).expect("values"),
        "the trained values"
    );

    // The same training takes the state it left (the one saved before its last epoch): a damaged
    // one stops it as damaged progress instead of being ignored.
    let latest = TrainingSaver::new(dir.path().to_path_buf(), Duration::ZERO).latest();
    let latest = latest.expect("the resumed training saved its state");
    std::fs::write(latest.join("values.safetensors"), b"garbage").expect("write");
    let mut damaged = new_target();
    saving(&mut damaged);
    assert!(matches!(
        damaged.train_until(mask, end_step, &mut |_| {}),
        Err(PruneError::DamagedProgress { .. })
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery_core::{FlatTensor, Mask};

    fn state(step: usize) -> SavedTraining {
        let values =
            ParamValues::from([("w".to_string(), FlatTensor::new(vec![2], vec![1.5, -0.0]))]);
        SavedTraining {
            step,
            values: values.clone(),
            metrics: vec![MetricRow {
                round: 0,
                phase: "ticket".into(),
                step: step as u64,
                epoch: 1,
                split: "test".into(),
                metric: "accuracy".into(),
                value: 0.25,
            }],
            reports: vec![EpochReport {
                epoch: 1,
                step,
                train_loss: 0.5,
                train_accuracy: 0.75,
                test_loss: None,
                test_accuracy: Some(0.25),
                lr: 0.1,
            }],
            optimizer: vec![1, 2, 3],
            loop_state: serde_json::json!({ "best": [0.5, 0.25] }),
            checkpoints: Checkpoints::from([(0, values)]),
        }
    }

    #[test]
    fn a_saved_state_loads_as_saved_and_replaces_the_one_before() {
        let d = tempfile::tempdir().unwrap();
        let mut saver = TrainingSaver::new(d.path().join("train"), Duration::ZERO);
        assert!(saver.load("k").unwrap().is_none());
        saver.save("k", &state(4)).unwrap();
        saver.save("k", &state(8)).unwrap();
        assert_eq!(saver.load("k").unwrap(), Some(state(8)));
        let names: Vec<String> = std::fs::read_dir(saver.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["epoch-0000000008"]);
        // Another training's key does not take it.
        assert!(saver.load("other").unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn a_rewind_checkpoint_is_written_once_per_training() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let mut saver = TrainingSaver::new(d.path().to_path_buf(), Duration::ZERO);
        let inode = |step: usize| {
            let folder = d.path().join(format!("epoch-{step:010}"));
            std::fs::metadata(folder.join("checkpoint-step0.safetensors"))
                .unwrap()
                .ino()
        };
        saver.save("k", &state(4)).unwrap();
        let first = inode(4);
        saver.save("k", &state(8)).unwrap();
        assert_eq!(inode(8), first, "the same training links its checkpoint");
        // Another training (another key) writes its own, and a fresh saver that loaded the
        // state links from it.
        saver.save("other", &state(12)).unwrap();
        let other = inode(12);
        assert_ne!(other, first);
        let mut resumed = TrainingSaver::new(d.path().to_path_buf(), Duration::ZERO);
        assert_eq!(resumed.load("other").unwrap(), Some(state(12)));
        resumed.save("other", &state(16)).unwrap();
        assert_eq!(inode(16), other);
        assert_eq!(resumed.load("other").unwrap(), Some(state(16)));
    }

    #[test]
    fn a_damaged_state_is_reported_as_damaged() {
        let d = tempfile::tempdir().unwrap();
        let mut saver = TrainingSaver::new(d.path().to_path_buf(), Duration::ZERO);
        saver.save("k", &state(4)).unwrap();
        let folder = d.path().join("epoch-0000000004");
        std::fs::write(folder.join("values.safetensors"), b"garbage").unwrap();
        match saver.load("k") {
            Err(PruneError::DamagedProgress { path, .. }) => {
                assert!(path.ends_with("values.safetensors"), "{}", path.display())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_key_tells_masks_starts_and_weights_apart() {
        let values = state(0).values;
        let mask_of = |keep: Vec<bool>| {
            let mut m = MaskSet::new();
            m.insert(
                "w",
                Mask {
                    shape: vec![2],
                    keep,
                },
            );
            m
        };
        let mask = mask_of(vec![true, false]);
        let key = TrainingSaver::key(0, 10, &mask, &values);
        assert_eq!(key, TrainingSaver::key(0, 10, &mask, &values));
        assert_ne!(key, TrainingSaver::key(1, 10, &mask, &values));
        assert_ne!(key, TrainingSaver::key(0, 11, &mask, &values));
        let other_mask = mask_of(vec![true, true]);
        assert_ne!(key, TrainingSaver::key(0, 10, &other_mask, &values));
        let mut other_values = values.clone();
        other_values.get_mut("w").unwrap().values[1] = 0.0; // +0 vs −0
        assert_ne!(key, TrainingSaver::key(0, 10, &mask, &other_values));
    }

    #[test]
    fn saving_waits_for_its_interval() {
        let d = tempfile::tempdir().unwrap();
        let saver = TrainingSaver::new(d.path().to_path_buf(), Duration::from_secs(3600));
        assert!(!saver.due());
        let saver = TrainingSaver::new(d.path().to_path_buf(), Duration::ZERO);
        assert!(saver.due());
    }
}
