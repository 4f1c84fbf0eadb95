//! The state directory: the lock that serialises every change of the system, the record of the
//! last apply, the daemon's status.
//!
//! The directory is private (created 0700, refused when it is not a directory owned by us or is
//! writable by group or others), and files in it are replaced through fresh temp files created
//! with `O_EXCL|O_NOFOLLOW`, mode 0600, then renamed: a planted symlink or a loose umask can
//! neither redirect a write nor expose a file.
//!
//! - `mod.rs`: the directory and its files (checked creation, atomic replace, safe reads);
//! - `lock`: the `flock` every change holds;
//! - `applied`: the record of the last apply;
//! - `status`: reading the daemon's `status.json` (the daemon writes it).

mod applied;
mod lock;
mod status;

pub use applied::{Applied, clear_applied, load_applied, stage_applied};
pub use lock::{LOCK_WAIT, Lock};
pub use status::daemon_status;

use crate::error::{Error, Result};
use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// An error about the state directory or a file in it.
pub(crate) fn refused(path: &Path, why: String) -> Error {
    Error::io(path.display(), std::io::Error::other(why))
}

/// Creates the state directory (mode 0700) if needed and checks it is safe to keep state in: a
/// real directory (not a symlink), owned by our user, not writable by group or others.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display(), e))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(Error::io(dir.display(), e)),
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir.display(), e))?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        Err(refused(
            dir,
            "the state directory is a symlink: refusing to use it".into(),
        ))
    } else if !meta.is_dir() {
        Err(refused(
            dir,
            "the state directory is not a directory".into(),
        ))
    } else if meta.uid() != uid {
        Err(refused(
            dir,
            format!(
                "the state directory is owned by uid {}, not by us (uid {uid}): refusing to use it",
                meta.uid()
            ),
        ))
    } else if meta.mode() & 0o022 != 0 {
        Err(refused(
            dir,
            format!(
                "the state directory is writable by others (mode {:o}): refusing to use it \
                 (chmod 700 it)",
                meta.mode() & 0o7777
            ),
        ))
    } else {
        Ok(())
    }
}

/// A file written in full under a fresh temp name, waiting to be renamed over its target;
/// removed when dropped uncommitted.
#[derive(Debug)]
pub struct Pending {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Pending {
    /// Writes `bytes` to a new temp file next to `target` (mode 0600, never through a symlink,
    /// never over an existing file).
    pub fn write(target: &Path, bytes: &[u8]) -> Result<Pending> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut pending = Pending {
            tmp,
            target: target.to_path_buf(),
            committed: true,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&pending.tmp)
            .map_err(|e| Error::io(pending.tmp.display(), e))?;
        pending.committed = false;
        file.write_all_at(bytes, 0)
            .map_err(|e| Error::io(pending.tmp.display(), e))?;
        Ok(pending)
    }

    /// Renames the temp file over the target, so readers never see half a file.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| Error::io(self.target.display(), e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Replaces `path` (in a state directory) atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    prepare_dir(path.parent().unwrap_or(Path::new(".")))?;
    Pending::write(path, bytes)?.commit()
}

/// Reads a state file, never through a symlink; `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<String>> {
    let mut text = String::new();
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|f| f.take(crate::names::MAX_INPUT).read_to_string(&mut text))
    {
        Ok(_) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh path for a state directory of the test named `tag`.
    pub fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cmlb-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn unsafe_state_dirs_are_refused() {
        let dir = temp("unsafe");
        prepare_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by others (mode 777)"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, "").unwrap();
        let e = prepare_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        std::fs::remove_file(&dir).unwrap();
        let target = temp("unsafe-target");
        prepare_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        let e = prepare_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        std::fs::remove_file(&dir).unwrap();
        std::fs::remove_dir_all(&target).unwrap();
    }
}
