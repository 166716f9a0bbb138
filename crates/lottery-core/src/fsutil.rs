//! Atomic file writes (write to a temporary file beside the target, then rename over it) and
//! the lock of a directory that several processes share.

use std::fs::File;
use std::io::Write;
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

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
