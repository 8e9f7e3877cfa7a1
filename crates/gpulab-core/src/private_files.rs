//! Files only the user may read, written so a reader never sees half of one: the lab's state, the
//! kubeconfig, SSH configuration and keys.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Create `dir` (and its parents) if missing; a directory this makes is private to the user (0700), as
/// `~/.ssh` must be.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))
}

/// A name for a temporary file beside `path` that no other process can predict: `.NAME.RANDOM.tmp`.
pub(crate) fn temp_path(path: &Path) -> Result<PathBuf> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::io(
            "read the system's random source",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(dir.join(format!(
        ".{}.{suffix}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    )))
}

/// Write `bytes` to `path` through a new temporary file of an unpredictable name in the same directory
/// and a rename, with mode 0600 on Unix: used for state, kubeconfigs and keys. The temporary file is
/// created exclusively, so a planted file or link there is never written through.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path)?;
    let write = || -> std::io::Result<()> {
        let mut options = OpenOptions::new();
        options.create_new(true).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("write {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_unpredictable_and_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_ne!(temp_path(&path).unwrap(), temp_path(&path).unwrap());
        write_private_atomically(&path, b"one").unwrap();
        write_private_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }
}
