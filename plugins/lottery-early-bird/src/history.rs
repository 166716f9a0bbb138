//! The batch-norm scales a search has watched at its checks, kept as it goes (in the run's work
//! folder, or in the folder the runs of other densities share), so that a search resumed from a
//! saved training state rebuilds its masks, its detector, its distance rows and its draw: the
//! resumed training replays its restored epochs without the values watched at them. The scales,
//! not the masks, are kept so that one search serves every density (a mask is the scales at a
//! density).
//!
//! One JSON line per check (`{"step":…,"epoch":…,"scales":{"<scale>":[<f32 bits>,…]}}`, each value
//! as its IEEE bits, so that it reads back exactly), appended as the check is made. Reading keeps
//! the last line of each step (a step checked again after a resume), and drops a last line a kill
//! cut short.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use lottery_core::{FlatTensor, ParamValues, PruneError};
use serde::{Deserialize, Serialize};

/// One check of a search: the epoch it was made in and the scales watched.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The epoch the check was recorded under.
    pub epoch: usize,
    /// The batch-norm scales at the check.
    pub scales: ParamValues,
}

/// The checks made so far, by step.
pub type ChecksByStep = BTreeMap<usize, Check>;

/// One line of the file.
#[derive(Serialize, Deserialize)]
struct Line {
    step: usize,
    epoch: usize,
    /// Each scale's values as IEEE bits.
    scales: BTreeMap<String, Vec<u32>>,
}

/// The file a search appends its checks to.
#[derive(Debug)]
pub struct ScaleHistory {
    path: PathBuf,
}

impl ScaleHistory {
    /// The history at `path` (created on the first append).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checks saved so far (none when there is no file). A line that does not read is
    /// [`PruneError::DamagedProgress`], except an unterminated last one (a kill while it was
    /// written), which is cut off the file.
    pub fn read(&self) -> Result<ChecksByStep, PruneError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ChecksByStep::new()),
            Err(e) => return Err(PruneError::damaged_progress(&self.path, e)),
        };
        let mut checks = ChecksByStep::new();
        let mut complete = 0; // bytes up to the end of the last complete line
        for (i, line) in text.split_inclusive('\n').enumerate() {
            if !line.ends_with('\n') {
                break; // the last line, cut short by a kill
            }
            let parsed: Line = serde_json::from_str(line.trim_end()).map_err(|e| {
                PruneError::damaged_progress(&self.path, format!("line {}: {e}", i + 1))
            })?;
            checks.insert(parsed.step, decode(parsed.epoch, parsed.scales));
            complete += line.len();
        }
        if complete < text.len() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| PruneError::progress(&self.path, e))?;
            file.set_len(complete as u64)
                .map_err(|e| PruneError::progress(&self.path, e))?;
        }
        Ok(checks)
    }

    /// Removes the file (a search that starts afresh).
    pub fn clear(&self) -> Result<(), PruneError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PruneError::progress(&self.path, e)),
        }
    }

    /// Appends the check made at `step` (in `epoch`).
    pub fn append(
        &self,
        step: usize,
        epoch: usize,
        scales: &ParamValues,
    ) -> Result<(), PruneError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PruneError::progress(dir, e))?;
        }
        let mut text =
            encode_line(step, epoch, scales).map_err(|e| PruneError::progress(&self.path, e))?;
        text.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| PruneError::progress(&self.path, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| PruneError::progress(&self.path, e))
    }
}

fn line(step: usize, epoch: usize, scales: &ParamValues) -> Line {
    Line {
        step,
        epoch,
        scales: scales
            .iter()
            .map(|(name, t)| (name.clone(), t.values.iter().map(|v| v.to_bits()).collect()))
            .collect(),
    }
}

fn encode_line(
    step: usize,
    epoch: usize,
    scales: &ParamValues,
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&line(step, epoch, scales))
}

fn decode(epoch: usize, scales: BTreeMap<String, Vec<u32>>) -> Check {
    let scales = scales
        .into_iter()
        .map(|(name, bits)| {
            let values: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
            (name, FlatTensor::new(vec![values.len()], values))
        })
        .collect();
    Check { epoch, scales }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scales(values: &[f32]) -> ParamValues {
        ParamValues::from([(
            "bn.weight".to_string(),
            FlatTensor::new(vec![values.len()], values.to_vec()),
        )])
    }

    #[test]
    fn checks_read_back_exactly_by_step_and_the_last_line_of_a_step_wins() {
        let d = tempfile::tempdir().unwrap();
        let h = ScaleHistory::new(d.path().join("eb/scales.jsonl"));
        assert!(h.read().unwrap().is_empty());
        // Values that a decimal round trip could change, and a NaN.
        let odd = [0.1f32, -1e-38, f32::MIN_POSITIVE / 3.0, f32::NAN];
        h.append(0, 0, &scales(&[0.5, 0.25])).unwrap();
        h.append(4, 1, &scales(&[1.0, 2.0])).unwrap();
        h.append(4, 1, &scales(&odd)).unwrap();
        let checks = h.read().unwrap();
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[&0].scales, scales(&[0.5, 0.25]));
        assert_eq!(checks[&4].epoch, 1);
        let back: Vec<u32> = checks[&4].scales["bn.weight"]
            .values
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let want: Vec<u32> = odd.iter().map(|v| v.to_bits()).collect();
        assert_eq!(back, want);
        h.clear().unwrap();
        assert!(h.read().unwrap().is_empty());
        h.clear().unwrap();
    }

    #[test]
    fn a_line_cut_short_is_dropped_and_a_damaged_one_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let h = ScaleHistory::new(d.path().join("scales.jsonl"));
        h.append(0, 0, &scales(&[1.0, 0.0])).unwrap();
        let whole = std::fs::read_to_string(h.path()).unwrap();
        std::fs::write(h.path(), format!("{whole}{{\"step\":3,\"ep")).unwrap();
        assert_eq!(h.read().unwrap().len(), 1);
        // The torn tail is cut off, so the next append starts a line of its own.
        assert_eq!(std::fs::read_to_string(h.path()).unwrap(), whole);
        h.append(3, 0, &scales(&[0.0, 0.0])).unwrap();
        assert_eq!(h.read().unwrap().len(), 2);

        std::fs::write(h.path(), format!("garbage\n{whole}")).unwrap();
        match h.read() {
            Err(PruneError::DamagedProgress { why, .. }) => {
                assert!(why.contains("line 1"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // A line from before the scales were kept (a mask history) does not read either.
        std::fs::write(h.path(), "{\"step\":0,\"keep\":{\"a\":\"01\"}}\n").unwrap();
        assert!(matches!(h.read(), Err(PruneError::DamagedProgress { .. })));
    }
}
