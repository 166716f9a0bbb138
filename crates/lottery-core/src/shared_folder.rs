//! What the runs sharing a folder ([`crate::PruneContext::shared_dir`]) tell one another: the
//! densities they are planned at. A method whose search serves several densities at once
//! (Early-Bird's detectors, one per density, on one training) serves every density announced
//! there, so that the runs planned together train one search whatever order they start in.
//! The command that plans the runs announces them ([`announce_density`]); a run announces its
//! own density too.

use std::path::Path;

use crate::density::Density;

/// The folder of announcements inside a shared folder.
const ANNOUNCED: &str = "densities";

/// Announces that a run at `density` shares `dir` (creating it): an empty file named by the
/// density. Announcing twice is harmless.
pub fn announce_density(dir: &Path, density: Density) -> std::io::Result<()> {
    let announced = dir.join(ANNOUNCED);
    std::fs::create_dir_all(&announced)?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(announced.join(f64::from(density).to_string()))?;
    Ok(())
}

/// The densities announced in `dir`, largest first, each once (none when nothing was
/// announced). A file whose name is not a density is not an announcement and is passed over.
pub fn announced_densities(dir: &Path) -> std::io::Result<Vec<Density>> {
    let entries = match std::fs::read_dir(dir.join(ANNOUNCED)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut densities = vec![];
    for entry in entries {
        let name = entry?.file_name();
        let parsed = name.to_str().and_then(|n| n.parse::<f64>().ok());
        if let Some(d) = parsed.and_then(|v| Density::new(v).ok()) {
            densities.push(d);
        }
    }
    densities.sort_by(|a, b| f64::from(*b).total_cmp(&f64::from(*a)));
    densities.dedup();
    Ok(densities)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_densities_read_back_exactly_largest_first_and_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(announced_densities(dir.path()).unwrap().is_empty());
        for v in [0.3, 0.7, 0.1 + 0.2, 0.7] {
            announce_density(dir.path(), Density::new(v).unwrap()).unwrap();
        }
        std::fs::write(dir.path().join(ANNOUNCED).join("notes.txt"), "").unwrap();
        let read: Vec<f64> = announced_densities(dir.path())
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        assert_eq!(read, vec![0.7, 0.1 + 0.2, 0.3]);
    }
}
