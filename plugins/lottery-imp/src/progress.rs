//! Saved progress: the rewind point (with the weights an image task kept at checkpoint steps up to
//! it, which no later training passes again) and the mask of every finished level, and resuming
//! from them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lottery_core::{MaskSet, MetricRow, ParamValues, PruneError, weights};
use lottery_train::Checkpoints;

/// Saved progress: the rewind point and the masks of finished levels.
pub(crate) struct Progress {
    pub(crate) dir: Option<PathBuf>,
}

/// What a resumed run starts from.
pub(crate) struct Resumed {
    pub(crate) level: usize,
    pub(crate) mask: MaskSet,
    pub(crate) metrics: Vec<MetricRow>,
    pub(crate) finished: bool,
    pub(crate) rewind: ParamValues,
    /// The weights kept at checkpoint steps up to the rewind point.
    pub(crate) checkpoints: Checkpoints,
}

impl Progress {
    fn rewind_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("rewind.safetensors"))
    }

    pub(crate) fn level_path(&self, r: usize) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("level-{r:03}.safetensors")))
    }

    pub(crate) fn final_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("final.safetensors"))
    }

    /// Saves the rewind point's `values` and the `checkpoints` kept so far.
    pub(crate) fn save_rewind(
        &self,
        values: &ParamValues,
        checkpoints: &Checkpoints,
    ) -> Result<(), PruneError> {
        let Some(path) = self.rewind_path() else {
            return Ok(());
        };
        let mut tensors = values.clone();
        lottery_train::put_checkpoints(&mut tensors, checkpoints);
        let bytes = weights::to_bytes(&tensors, &BTreeMap::new());
        lottery_core::fsutil::write_atomic(&path, &bytes)
            .map_err(|e| PruneError::progress(&path, e))
    }

    /// The rewind point and the checkpoints saved with it (none in a file of an earlier build).
    fn load_rewind(path: &Path) -> Result<(ParamValues, Checkpoints), PruneError> {
        let mut values = weights::read(path).map_err(|e| PruneError::damaged_progress(path, e))?;
        let checkpoints = lottery_train::take_checkpoints(&mut values)
            .map_err(|e| PruneError::damaged_progress(path, e))?;
        Ok((values, checkpoints))
    }

    pub(crate) fn save_mask(
        &self,
        path: Option<PathBuf>,
        mask: &MaskSet,
        metrics: &[MetricRow],
    ) -> Result<(), PruneError> {
        match path {
            Some(path) => lottery_core::progress::save_mask_progress(&path, mask, metrics),
            None => Ok(()),
        }
    }

    fn load_mask(path: &Path) -> Result<(MaskSet, Vec<MetricRow>), PruneError> {
        lottery_core::progress::load_mask_progress(path).map_err(PruneError::into_damaged)
    }

    /// The furthest saved point that loads, if the rewind point was saved. A level's file that
    /// does not load is set aside and the level before it is tried; a rewind point that does not
    /// load is an error.
    pub(crate) fn resume(&self, levels: usize) -> Result<Option<Resumed>, PruneError> {
        let Some(rewind_path) = self.rewind_path().filter(|p| p.exists()) else {
            return Ok(None);
        };
        let (rewind, checkpoints) = Self::load_rewind(&rewind_path)?;
        let saved = self
            .final_path()
            .map(|p| (p, levels, true))
            .into_iter()
            .chain(
                (1..=levels)
                    .rev()
                    .filter_map(|r| self.level_path(r).map(|p| (p, r, false))),
            );
        for (path, level, finished) in saved {
            if !path.exists() {
                continue;
            }
            match Self::load_mask(&path) {
                Ok((mask, metrics)) => {
                    return Ok(Some(Resumed {
                        level,
                        mask,
                        metrics,
                        finished,
                        rewind,
                        checkpoints,
                    }));
                }
                Err(e) => set_aside(&path, &e)?,
            }
        }
        Ok(None)
    }
}

/// Renames a file of saved progress that does not load to `<file>.damaged-<unix seconds>`, with a warning, so
/// that the run goes on from an earlier one.
fn set_aside(path: &Path, error: &PruneError) -> Result<(), PruneError> {
    let aside = lottery_core::fsutil::set_aside(path)
        .map_err(|e| PruneError::progress(path, format!("setting it aside: {e}")))?;
    tracing::warn!(
        "{error}; set aside as {} and going on from earlier progress, if any",
        aside.display()
    );
    Ok(())
}
