//! The signals the daemon handles, read from a descriptor so they arrive in the loop like any
//! other event: SIGHUP reloads, SIGTERM and SIGINT end the daemon, SIGCHLD reaps the hook.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::{Error, Result};

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGHUP: read the config again.
    Reload,
    /// SIGTERM or SIGINT: exit, leaving the rules in place.
    Stop(Signal),
    /// SIGCHLD: a hook run ended.
    Reap,
}

/// The blocked signals' descriptor.
pub struct Signals(SignalFd);

impl Signals {
    /// Blocks the signals we handle and opens a descriptor to read them from (children
    /// started later get a clean mask from std).
    pub fn open() -> Result<Signals> {
        let mut mask = SigSet::empty();
        for signal in [
            Signal::SIGHUP,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGCHLD,
        ] {
            mask.add(signal);
        }
        mask.thread_block()
            .map_err(|e| Error::io("blocking signals", e.into()))?;
        SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map(Signals)
            .map_err(|e| Error::io("signalfd", e.into()))
    }

    /// The next pending signal's request; `None` when none is pending.
    pub fn next(&self) -> Result<Option<Asked>> {
        while let Some(info) = self
            .0
            .read_signal()
            .map_err(|e| Error::io("signalfd", e.into()))?
        {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => return Ok(Some(Asked::Reload)),
                Ok(signal @ (Signal::SIGTERM | Signal::SIGINT)) => {
                    return Ok(Some(Asked::Stop(signal)));
                }
                Ok(Signal::SIGCHLD) => return Ok(Some(Asked::Reap)),
                _ => {}
            }
        }
        Ok(None)
    }
}

impl AsFd for Signals {
    /// Readable while a signal is pending.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
