//! Re-steering: when a link changes, which of its conntrack entries go, so the connections
//! behind them start over on a live link.
//!
//! A link that goes out of use always loses the entries of connections that never saw a reply:
//! the client's next retransmission then makes a new entry, which the ruleset sends to a live
//! link, so a connection caught by the failure costs one retransmission and no more. Entries
//! of connections that already talked stay on their link unless `flush_conntrack` names the
//! event (the default, `disconnected`, deletes them all). The deleting runs as [`Sweep`]s
//! that the daemon's loop advances a slice at a time.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use super::link::{Outcome, TrackedLink};
use crate::config::FlushEvent;
use crate::daemon::kernel::conntrack::{Sweep, Which};
use crate::daemon::{log, log_error};

/// One sweep under way and what it is for, for the log.
#[derive(Debug)]
struct Active {
    link: String,
    mark: u32,
    sweep: Sweep,
}

/// The sweeps under way.
#[derive(Debug, Default)]
pub struct Sweeps {
    active: Vec<Active>,
}

impl Sweeps {
    /// Starts deleting what `outcome` asks for on `link`: everything when one of its events is
    /// in the link's `flush_conntrack`, the unanswered connections when it left use.
    pub fn after_change(&mut self, mask: u32, link: &TrackedLink, outcome: &Outcome) {
        let events = outcome.events();
        let (which, why) = match events.iter().find(|e| link.flush_conntrack.contains(e)) {
            Some(event) => (
                Which::All,
                format!("its conntrack entries ({})", event.as_str()),
            ),
            None if events.contains(&FlushEvent::Disconnected) => (
                Which::Unreplied,
                "its unanswered connections, so they retry on a live link".to_string(),
            ),
            None => return,
        };
        self.start(mask, link, which, &why);
    }

    /// Deletes every conntrack entry of `link` (failback), logging `what` goes.
    pub fn delete_all(&mut self, mask: u32, link: &TrackedLink, what: &str) {
        self.start(mask, link, Which::All, what);
    }

    /// Starts a sweep of `which` entries of `link`; a sweep already running for the link is
    /// replaced unless it already deletes everything.
    fn start(&mut self, mask: u32, link: &TrackedLink, which: Which, why: &str) {
        let mark = link.route.mark;
        if let Some(running) = self.active.iter().position(|a| a.mark == mark) {
            if self.active[running].sweep.which == Which::All {
                return;
            }
            self.active.remove(running);
        }
        match Sweep::start(mark, mask, which) {
            Ok(sweep) => {
                log(&format!("{}: deleting {why}", link.name));
                self.active.push(Active {
                    link: link.name.clone(),
                    mark,
                    sweep,
                });
            }
            Err(e) => log_error(&format!(
                "{}: deleting its conntrack entries failed: {e}",
                link.name
            )),
        }
    }

    /// The dump sockets to poll.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.active.iter().map(|a| a.sweep.as_fd())
    }

    /// Advances the sweeps whose sockets are `ready` (same order as [`Sweeps::fds`]); logs and
    /// drops the finished ones.
    pub fn advance(&mut self, ready: &[bool]) {
        let mut index = 0;
        self.active.retain_mut(|active| {
            let go = ready.get(index).copied().unwrap_or(false);
            index += 1;
            if !go {
                return true;
            }
            match active.sweep.advance() {
                Ok(false) => true,
                Ok(true) => {
                    let sweep = &active.sweep;
                    log(&format!(
                        "{}: deleted {} conntrack entries in {} ms (longest pause {} ms)",
                        active.link,
                        sweep.deleted,
                        Instant::now().duration_since(sweep.started).as_millis(),
                        sweep.longest_slice.as_millis()
                    ));
                    false
                }
                Err(e) => {
                    log_error(&format!(
                        "{}: deleting its conntrack entries failed: {e}",
                        active.link
                    ));
                    false
                }
            }
        });
    }
}
