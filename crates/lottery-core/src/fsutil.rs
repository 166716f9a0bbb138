//! Atomic file writes (write to a temporary file beside the target, then rename over it), the
//! lock of a directory that several processes share, and setting aside what does not load.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// An exclusive advisory lock on a directory, held through its `lock` file: the operating system
/// releases it when the value is dropped or the process ends, however it ends. The `lock` file
/// is never removed (a process waiting on it would otherwise lock a file nobody else sees).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// The name of the lock file inside the directory.
    pub const FILE: &'static str = "lock";

    /// Locks `dir` (created if missing), waiting while another process holds it.
    pub fn acquire(dir: &Path) -> std::io::Result<DirLock> {
        let file = Self::open(dir)?;
        file.lock()?;
        Ok(DirLock { _file: file })
    }

    /// Locks `dir` (created if missing) if no other process holds it; `None` when one does.
    pub fn try_acquire(dir: &Path) -> std::io::Result<Option<DirLock>> {
        let file = Self::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DirLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn open(dir: &Path) -> std::io::Result<File> {
        std::fs::create_dir_all(dir)?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(Self::FILE))
    }
}

/// Moves `path` (a file or a folder) aside, to `<path>.damaged-<unix seconds>` beside it (with
/// `-2`, `-3`, ... when that name is taken), so that saved progress that does not load is kept for
/// a look and never read again; returns the new name. A `path` that does not exist is left alone
/// and the name it would have had is returned.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let named = |suffix: String| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".damaged-{stamp}{suffix}"));
        PathBuf::from(name)
    };
    let mut aside = named(String::new());
    let mut n = 2;
    while aside.symlink_metadata().is_ok() {
        aside = named(format!("-{n}"));
        n += 1;
    }
    if path.symlink_metadata().is_ok() {
        std::fs::rename(path, &aside)?;
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_aside_keeps_every_damaged_copy_under_its_own_name() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("level-3.safetensors");
        std::fs::write(&file, b"first").unwrap();
        let first = set_aside(&file).unwrap();
        assert!(!file.exists());
        assert_eq!(std::fs::read(&first).unwrap(), b"first");
        let name = first.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("level-3.safetensors.damaged-"), "{name}");

        std::fs::write(&file, b"second").unwrap();
        let second = set_aside(&file).unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read(&first).unwrap(), b"first");
        assert_eq!(std::fs::read(&second).unwrap(), b"second");

        let folder = d.path().join(".run.work");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("progress"), b"p").unwrap();
        let moved = set_aside(&folder).unwrap();
        assert_eq!(std::fs::read(moved.join("progress")).unwrap(), b"p");

        let missing = d.path().join("missing");
        let would_be = set_aside(&missing).unwrap();
        assert!(!would_be.exists());
    }

    #[test]
    fn a_directory_lock_excludes_a_second_holder_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("shared");
        let held = DirLock::acquire(&dir).unwrap();
        assert!(dir.join(DirLock::FILE).exists());
        assert!(DirLock::try_acquire(&dir).unwrap().is_none());
        drop(held);
        let again = DirLock::try_acquire(&dir).unwrap();
        assert!(again.is_some());
    }
}
