//! The lock every change of the system holds: an exclusive `flock` on the state directory's
//! lock file, so overlapping applies, stops and daemon updates run one after the other.

use super::{prepare_dir, refused};
use crate::error::{Error, Result};
use crate::names::LOCK_FILE;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a change waits for another one to finish before giving up with an error naming it.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// An exclusive `flock` on the state directory's lock file, released when dropped (or when the
/// process dies). Every verb that changes the system holds it for the whole change.
#[derive(Debug)]
pub struct Lock {
    _file: Flock<File>,
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
        let mut file = file;
        let locked = loop {
            let errno = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => break locked,
                Err((back, errno)) => {
                    file = back;
                    errno
                }
            };
            if errno != Errno::EWOULDBLOCK {
                return Err(Error::io(path.display(), errno.into()));
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
        };
        // Who holds it, for the message of whoever waits next; the lock works without it.
        let pid = format!("{}\n", std::process::id());
        let _ = locked
            .set_len(0)
            .and_then(|()| locked.write_all_at(pid.as_bytes(), 0));
        Ok(Lock { _file: locked })
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

#[cfg(test)]
mod tests {
    use super::super::tests::temp;
    use super::*;

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
