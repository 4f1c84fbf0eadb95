//! The state directory: the lock that serialises every change of the system, the record of the
//! last apply, the daemon's status.
//!
//! The directory is private (created 0700, refused when it is not a directory owned by us or is
//! writable by group or others), and files in it are replaced through fresh temp files created
//! with `O_EXCL|O_NOFOLLOW`, mode 0600, then renamed: a planted symlink or a loose umask can
//! neither redirect a write nor expose a file.

use crate::error::{Error, Result};
use crate::names::{APPLIED_FILE, LOCK_FILE};
use crate::plan::{Footprint, Routing};
use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a change waits for another one to finish before giving up with an error naming it.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// What the last successful apply installed: lets `stop` and the next apply remove exactly
/// what was ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub backend: String,
    /// Its ip rules and link tables.
    pub routing: Routing,
    /// The firewall chains it defined (nft chains of our table, or iptables chains).
    pub chains: Vec<String>,
    /// The nft sets it declared (`NAME { type ...; flags ...; }`), so the next apply deletes
    /// those it drops.
    pub sets: Vec<String>,
    /// The static set entries it added (`SET ENTRY`), so the next apply removes those the
    /// config drops and never the ones others added.
    pub elements: Vec<String>,
}

/// An error about the state directory or a file in it.
fn refused(path: &Path, why: String) -> Error {
    Error::io(path.display(), std::io::Error::other(why))
}

/// Creates the state directory (mode 0700) if needed and checks it is safe to keep state in: a
/// real directory (not a symlink), owned by our user, not writable by group or others.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display(), e))?;
    }
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| Error::io(dir.display(), e.into()))?;
    // SAFETY: mkdir reads the NUL-terminated path only during the call.
    if unsafe { libc::mkdir(path.as_ptr(), 0o700) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::AlreadyExists {
            return Err(Error::io(dir.display(), e));
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir.display(), e))?;
    let uid = unsafe { libc::geteuid() };
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

/// An exclusive `flock` on the state directory's lock file, released when dropped (or when the
/// process dies). Every verb that changes the system holds it for the whole change.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock, waiting at most `wait` for another holder; the error names the holder.
    pub fn acquire(dir: &Path, wait: Duration) -> Result<Lock> {
        prepare_dir(dir)?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(2);
        // SAFETY: flock on a descriptor we own; no memory is involved.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != ErrorKind::WouldBlock {
                return Err(Error::io(path.display(), error));
            }
            if Instant::now() >= deadline {
                return Err(refused(
                    &path,
                    format!(
                        "another change of the rules is still running after {} s ({}): try again later",
                        wait.as_secs(),
                        holder(&file)
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        // Who holds it, for the message of whoever waits next; the lock works without it.
        let pid = format!("{}\n", std::process::id());
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0));
        Ok(Lock { _file: file })
    }
}

/// "pid N: its command line", from the pid the holder wrote into the lock file.
fn holder(file: &File) -> String {
    let mut buf = [0u8; 16];
    let len = file.read_at(&mut buf, 0).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..len]);
    let Ok(pid) = text.trim().parse::<u32>() else {
        return "holder unknown".into();
    };
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("held by pid {pid}: {}", crate::error::printable(&command))
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
        .and_then(|f| f.take(crate::source::MAX_INPUT).read_to_string(&mut text))
    {
        Ok(_) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

/// Reads the last apply's record; a missing or unreadable file means "nothing recorded".
pub fn load_applied(dir: &Path) -> Option<Applied> {
    let text = read(&dir.join(APPLIED_FILE)).ok()??;
    let value: Value = serde_json::from_str(&text).ok()?;
    let number =
        |key: &str| -> Option<u32> { u32::try_from(value["footprint"][key].as_u64()?).ok() };
    let list = |key: &str| value[key].as_array().cloned().unwrap_or_default();
    let ids = |key: &str| -> Vec<u32> {
        list(key)
            .iter()
            .filter_map(|id| u32::try_from(id.as_u64()?).ok())
            .filter(|id| (1..=crate::config::MAX_LINKS).contains(id))
            .collect()
    };
    Some(Applied {
        backend: value["backend"].as_str()?.to_string(),
        routing: Routing {
            footprint: Footprint {
                mask: number("mask")?,
                priority_base: number("priority_base")?,
                table_base: number("table_base")?,
            },
            links: ids("links"),
            links6: ids("links6"),
        },
        // Only names we could have made: they are written into nft and iptables input.
        chains: list("chains")
            .iter()
            .filter_map(Value::as_str)
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(str::to_string)
            .collect(),
        sets: list("sets")
            .iter()
            .filter_map(Value::as_str)
            .filter(|d| crate::render::nft::is_set_declaration(d))
            .map(str::to_string)
            .collect(),
        elements: list("elements")
            .iter()
            .filter_map(Value::as_str)
            .filter(|e| {
                e.split_once(' ').is_some_and(|(set, entry)| {
                    set.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && crate::config::Cidr::parse(entry).is_some()
                })
            })
            .map(str::to_string)
            .collect(),
    })
}

/// The record of an apply, written in full before the apply touches the system (so an
/// unwritable state directory changes nothing) and committed once it succeeded.
pub fn stage_applied(dir: &Path, applied: &Applied) -> Result<Pending> {
    let f = &applied.routing.footprint;
    let value = json!({
        "backend": applied.backend,
        "footprint": {
            "mask": f.mask,
            "priority_base": f.priority_base,
            "table_base": f.table_base,
        },
        "links": applied.routing.links,
        "links6": applied.routing.links6,
        "chains": applied.chains,
        "sets": applied.sets,
        "elements": applied.elements,
    });
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| Error::Protocol(format!("encoding {APPLIED_FILE}: {e}")))?;
    Pending::write(&dir.join(APPLIED_FILE), text.as_bytes())
}

/// Forgets the last apply (after stop).
pub fn clear_applied(dir: &Path) -> Result<()> {
    let path = dir.join(APPLIED_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path.display(), e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cmlb-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn applied() -> Applied {
        Applied {
            backend: "nftables".into(),
            routing: Routing {
                footprint: Footprint {
                    mask: 0x3f00,
                    priority_base: 4000,
                    table_base: 4000,
                },
                links: vec![1, 3],
                links6: vec![4],
            },
            chains: vec!["mark_wan".into(), "prerouting".into()],
            sets: vec!["vpn_v4 { type ipv4_addr; flags interval,timeout; }".into()],
            elements: vec!["vpn_v4 192.0.2.0/24".into()],
        }
    }

    #[test]
    fn applied_round_trips_and_clears_with_private_modes() {
        let dir = temp("round");
        prepare_dir(&dir).unwrap();
        stage_applied(&dir, &applied()).unwrap().commit().unwrap();
        assert_eq!(load_applied(&dir), Some(applied()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(APPLIED_FILE)), 0o600);
        clear_applied(&dir).unwrap();
        assert_eq!(load_applied(&dir), None);
        clear_applied(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uncommitted_record_leaves_no_file_and_the_old_record() {
        let dir = temp("pending");
        prepare_dir(&dir).unwrap();
        stage_applied(&dir, &applied()).unwrap().commit().unwrap();
        let mut other = applied();
        other.routing.links = vec![2];
        drop(stage_applied(&dir, &other).unwrap());
        assert_eq!(load_applied(&dir), Some(applied()));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
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

    #[test]
    fn a_second_lock_waits_then_names_the_holder() {
        let dir = temp("lock");
        let held = Lock::acquire(&dir, LOCK_WAIT).unwrap();
        let started = Instant::now();
        let e = Lock::acquire(&dir, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            e.contains(&format!("held by pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        let again = Lock::acquire(&dir, Duration::from_millis(300));
        assert!(again.is_ok(), "{again:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
