//! The loop's poll set: every descriptor the daemon waits on, tagged with what it belongs to,
//! so one `poll` says which parts of the daemon have work.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, Result};

/// What one descriptor in the poll set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdOwner {
    Signals,
    Devices,
    Passive,
    Heal,
    Bus,
    /// A conntrack sweep, by its index in the sweeps under way.
    Sweep(usize),
    /// A link's probe socket, by the link's index.
    Link(usize),
}

/// The descriptors of one turn of the loop.
#[derive(Default)]
pub struct PollSet<'fd> {
    fds: Vec<PollFd<'fd>>,
    owners: Vec<FdOwner>,
}

impl<'fd> PollSet<'fd> {
    /// Waits for `fd` to become readable.
    pub fn read(&mut self, fd: BorrowedFd<'fd>, owner: FdOwner) {
        self.watch(PollFd::new(fd, PollFlags::POLLIN), owner);
    }

    /// Waits for what `fd` asks for.
    pub fn watch(&mut self, fd: PollFd<'fd>, owner: FdOwner) {
        self.fds.push(fd);
        self.owners.push(owner);
    }

    /// Polls until a descriptor is ready or `timeout` passes (a signal ends the wait early);
    /// returns the owners of the ready descriptors.
    pub fn wait(mut self, timeout: PollTimeout) -> Result<Vec<FdOwner>> {
        match poll(&mut self.fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::io("poll", e.into())),
        }
        Ok(self
            .fds
            .iter()
            .zip(&self.owners)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, owner)| *owner)
            .collect())
    }
}

/// The poll timeout until `deadline` (forever without one), rounded up to whole milliseconds
/// so a wake-up is never early and spins.
pub fn timeout_until(deadline: Option<Instant>) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up_and_none_waits_forever() {
        assert_eq!(timeout_until(None), PollTimeout::NONE);
        assert_eq!(
            timeout_until(Some(Instant::now())),
            PollTimeout::ZERO,
            "a deadline now or past does not wait"
        );
        let later = timeout_until(Some(Instant::now() + Duration::from_micros(1500)));
        assert!(
            later == PollTimeout::from(2u8) || later == PollTimeout::from(1u8),
            "{later:?}"
        );
    }
}
