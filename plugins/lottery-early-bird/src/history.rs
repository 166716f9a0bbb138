//! The channel masks a search has drawn, kept in the run's work folder as it goes, so that a search
//! resumed from a saved training state rebuilds its detector, its distance rows and its draw:
//! the resumed training replays its restored epochs without the values watched at them.
//!
//! One JSON line per check (`{"step":…,"keep":{"<scale>":"0110…"}}`), appended as the check is
//! made. Reading keeps the last line of each step (a step checked again after a resume), and drops
//! a last line a kill cut short.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use lottery_core::PruneError;
use lottery_models::channel_masks::ChannelKeep;
use serde::{Deserialize, Serialize};

/// The masks drawn so far, by step.
pub type MasksByStep = BTreeMap<usize, ChannelKeep>;

/// One check of the search.
#[derive(Serialize, Deserialize)]
struct Line {
    step: usize,
    /// Each scale's kept channels as a string of `0` and `1`.
    keep: BTreeMap<String, String>,
}

/// The file a search appends its masks to.
#[derive(Debug)]
pub struct MaskHistory {
    path: PathBuf,
}

impl MaskHistory {
    /// The history at `path` (created on the first append).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The masks saved so far (none when there is no file). A line that does not read is
    /// [`PruneError::DamagedProgress`], except an unterminated last one (a kill while it was
    /// written), which is cut off the file.
    pub fn read(&self) -> Result<MasksByStep, PruneError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(MasksByStep::new()),
            Err(e) => return Err(PruneError::damaged_progress(&self.path, e)),
        };
        let mut masks = MasksByStep::new();
        let mut complete = 0; // bytes up to the end of the last complete line
        for (i, line) in text.split_inclusive('\n').enumerate() {
            if !line.ends_with('\n') {
                break; // the last line, cut short by a kill
            }
            let parsed = serde_json::from_str::<Line>(line.trim_end())
                .map_err(|e| e.to_string())
                .and_then(decode)
                .map_err(|e| {
                    PruneError::damaged_progress(&self.path, format!("line {}: {e}", i + 1))
                })?;
            masks.insert(parsed.0, parsed.1);
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
        Ok(masks)
    }

    /// Removes the file (a search that starts afresh).
    pub fn clear(&self) -> Result<(), PruneError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PruneError::progress(&self.path, e)),
        }
    }

    /// Appends the mask drawn at `step`.
    pub fn append(&self, step: usize, keep: &ChannelKeep) -> Result<(), PruneError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PruneError::progress(dir, e))?;
        }
        let line = Line {
            step,
            keep: keep
                .iter()
                .map(|(name, flags)| {
                    let bits = flags.iter().map(|&k| if k { '1' } else { '0' }).collect();
                    (name.clone(), bits)
                })
                .collect(),
        };
        let mut text =
            serde_json::to_string(&line).map_err(|e| PruneError::progress(&self.path, e))?;
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

fn decode(line: Line) -> Result<(usize, ChannelKeep), String> {
    let mut keep = ChannelKeep::new();
    for (name, bits) in line.keep {
        let flags = bits
            .chars()
            .map(|c| match c {
                '1' => Ok(true),
                '0' => Ok(false),
                other => Err(format!("`{name}` holds {other:?}, not 0 or 1")),
            })
            .collect::<Result<Vec<bool>, String>>()?;
        keep.insert(name, flags);
    }
    Ok((line.step, keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::keep;

    #[test]
    fn masks_read_back_by_step_and_the_last_line_of_a_step_wins() {
        let d = tempfile::tempdir().unwrap();
        let h = MaskHistory::new(d.path().join("eb/masks.jsonl"));
        assert!(h.read().unwrap().is_empty());
        h.append(0, &keep(&[true, false])).unwrap();
        h.append(4, &keep(&[false, true])).unwrap();
        h.append(4, &keep(&[true, true])).unwrap();
        let masks = h.read().unwrap();
        assert_eq!(
            masks,
            MasksByStep::from([(0, keep(&[true, false])), (4, keep(&[true, true]))])
        );
        h.clear().unwrap();
        assert!(h.read().unwrap().is_empty());
        h.clear().unwrap();
    }

    #[test]
    fn a_line_cut_short_is_dropped_and_a_damaged_one_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let h = MaskHistory::new(d.path().join("masks.jsonl"));
        h.append(0, &keep(&[true, false])).unwrap();
        let whole = std::fs::read_to_string(h.path()).unwrap();
        std::fs::write(h.path(), format!("{whole}{{\"step\":3,\"ke")).unwrap();
        assert_eq!(h.read().unwrap().len(), 1);
        // The torn tail is cut off, so the next append starts a line of its own.
        assert_eq!(std::fs::read_to_string(h.path()).unwrap(), whole);
        h.append(3, &keep(&[false, false])).unwrap();
        assert_eq!(h.read().unwrap().len(), 2);

        std::fs::write(h.path(), format!("garbage\n{whole}")).unwrap();
        match h.read() {
            Err(PruneError::DamagedProgress { why, .. }) => {
                assert!(why.contains("line 1"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(h.path(), "{\"step\":0,\"keep\":{\"a\":\"01x\"}}\n").unwrap();
        assert!(matches!(h.read(), Err(PruneError::DamagedProgress { .. })));
    }
}
