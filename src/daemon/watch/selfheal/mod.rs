//! Self-healing: noticing when our rules, ip rules or routes disappear or change behind the
//! daemon's back (`nft flush ruleset`, a firewall restart, `iptables -t mangle -F`,
//! `ip rule flush`, an address or interface change that drops routes), and applying again.
//!
//! Two sockets in the daemon's poll loop carry the kernel's own announcements: nfnetlink's
//! `NFNLGRP_NFTABLES` (every committed nftables change, which includes iptables-nft's tables)
//! and rtnetlink's IPv4 route and rule groups. Each message names what changed, so the log
//! says exactly what went missing, and only changes to what is ours count: our nft table, our
//! iptables chains and the built-in chains holding our jumps, ip rules in our priority span,
//! routes in our tables.
//!
//! Not fighting ourselves: our own applies raise the same announcements, but they all reach
//! the sockets before the apply returns, so the daemon drains and drops them right after each
//! of its own applies ([`SelfHeal::ignore_own_changes`]). Not looping with another tool: a
//! re-apply waits [`SETTLE`] so one burst of changes (a whole `nft flush ruleset`, a firewall
//! reload) causes one re-apply, and at most [`BUDGET`] re-applies happen within [`PERIOD`]; a
//! program that keeps removing our rules gets one log line and a pause, not a storm.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::SockProtocol;

use crate::apply::Backend;
use crate::daemon::kernel::netlink::{self, Received};
use crate::daemon::kernel::nftables;
use crate::names::NFT_TABLE;
use crate::plan::Routing;

mod changes;

use changes::Note;

/// `NFNLGRP_NFTABLES`.
const NFT_GROUP: u32 = 7;
/// `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV4_RULE`, `RTNLGRP_IPV6_ROUTE`, `RTNLGRP_IPV6_RULE`.
const ROUTE_GROUPS: [u32; 4] = [7, 8, 11, 19];
/// How long to let a burst of changes finish before applying again.
pub const SETTLE: Duration = Duration::from_millis(100);
/// At most this many re-applies within [`PERIOD`].
pub const BUDGET: usize = 5;
pub const PERIOD: Duration = Duration::from_secs(60);
/// Distinct descriptions kept.
const MAX_NOTES: usize = 64;
/// Descriptions shown in one log line.
const SHOWN: usize = 4;
const NFT_NAME: &str = "nftables event socket";
const ROUTE_NAME: &str = "rtnetlink route and rule event socket";

/// The watcher: its sockets, what it noticed, and the re-apply budget.
#[derive(Debug)]
pub struct SelfHeal {
    nft: OwnedFd,
    route: OwnedFd,
    buffer: Vec<u8>,
    backend: Backend,
    /// Exactly the ip rules and link tables the running config owns.
    routing: Routing,
    /// What went missing or changed since the last re-apply, for the log.
    notes: Vec<Note>,
    /// More changes than [`MAX_NOTES`] were seen.
    more: usize,
    /// When to apply again.
    due: Option<Instant>,
    /// When the re-applies within the last [`PERIOD`] ran.
    recent: VecDeque<Instant>,
    /// Re-applies since the daemon started, for status.
    pub reapplies: u64,
    /// Whether the pause after an exhausted budget has been logged.
    paused: bool,
}

/// What to do after reading the sockets.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Nothing,
    /// Apply again now; the text says what was missing.
    Reapply(String),
    /// The budget is spent: the text says so (logged once); apply again later.
    Paused(String),
}

impl SelfHeal {
    /// Joins the event groups; `backend` and `routing` say what is ours.
    pub fn open(backend: Backend, routing: Routing) -> crate::error::Result<SelfHeal> {
        Ok(SelfHeal {
            nft: netlink::open(
                SockProtocol::NetlinkNetFilter,
                &[NFT_GROUP],
                1 << 20,
                NFT_NAME,
            )?,
            route: netlink::open(
                SockProtocol::NetlinkRoute,
                &ROUTE_GROUPS,
                1 << 20,
                ROUTE_NAME,
            )?,
            buffer: vec![0; 64 * 1024],
            backend,
            routing,
            notes: Vec::new(),
            more: 0,
            due: None,
            recent: VecDeque::new(),
            reapplies: 0,
            paused: false,
        })
    }

    /// A reload may change the backend and what is ours.
    pub fn reconfigure(&mut self, backend: Backend, routing: Routing) {
        self.backend = backend;
        self.routing = routing;
    }

    /// The two sockets to poll.
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.nft.as_fd(), self.route.as_fd()]
    }

    /// When [`SelfHeal::check`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// Reads what both sockets announced; a change to something of ours schedules a
    /// re-apply [`SETTLE`] from now (not later for further changes: within a second).
    pub fn read(&mut self, now: Instant) -> crate::error::Result<()> {
        for nft in [true, false] {
            loop {
                let fd = if nft { &self.nft } else { &self.route };
                let name = if nft { NFT_NAME } else { ROUTE_NAME };
                let len = match netlink::receive(fd, &mut self.buffer, name)? {
                    Received::Empty => break,
                    Received::Overrun => {
                        self.note(Note {
                            scope: name.to_string(),
                            whole: false,
                            text: format!("{name} overflowed: some changes unknown"),
                        });
                        continue;
                    }
                    Received::Data(len) => len,
                };
                let mut found = Vec::new();
                for message in netlink::messages(&self.buffer[..len]) {
                    let note = if nft {
                        changes::nft_change(self.backend, message.kind, message.payload)
                    } else {
                        changes::route_change(&self.routing, message.kind, message.payload)
                    };
                    found.extend(note);
                }
                for note in found {
                    self.note(note);
                }
            }
        }
        if !self.notes.is_empty() && self.due.is_none() {
            self.due = Some(now + SETTLE);
        }
        Ok(())
    }

    /// Our own apply just ran: what it announced is dropped, and a pending re-apply is done.
    /// A deletion by someone else while our apply ran would be dropped with it, so with
    /// nftables the table is looked up once (one netlink request, no process): if it is gone,
    /// that counts as a change like any other.
    pub fn ignore_own_changes(&mut self) {
        for fd in [&self.nft, &self.route] {
            while let Ok(Received::Data(_) | Received::Overrun) =
                netlink::receive(fd, &mut self.buffer, NFT_NAME)
            {}
        }
        self.notes.clear();
        self.more = 0;
        self.due = None;
        if self.backend == Backend::Nftables && !nftables::table_exists() {
            self.note(Note {
                scope: format!("nft table {NFT_TABLE}"),
                whole: true,
                text: format!("nft table {NFT_TABLE} deleted"),
            });
            self.due = Some(Instant::now() + SETTLE);
        }
    }

    /// Whether a re-apply is due now, within the budget.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.due.is_none_or(|due| now < due) {
            return Verdict::Nothing;
        }
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= PERIOD)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= BUDGET {
            let until = self.recent[0] + PERIOD;
            self.due = Some(until);
            if self.paused {
                return Verdict::Nothing;
            }
            self.paused = true;
            return Verdict::Paused(format!(
                "another program keeps changing our rules ({} re-applies in {} s; now {}): \
                 applying again in {} s",
                BUDGET,
                PERIOD.as_secs(),
                self.summary(),
                until.duration_since(now).as_secs() + 1
            ));
        }
        self.paused = false;
        self.recent.push_back(now);
        self.reapplies += 1;
        let summary = self.summary();
        self.notes.clear();
        self.more = 0;
        self.due = None;
        Verdict::Reapply(summary)
    }

    fn summary(&self) -> String {
        let texts: Vec<&str> = self
            .notes
            .iter()
            .take(SHOWN)
            .map(|n| n.text.as_str())
            .collect();
        let mut text = texts.join(", ");
        let more = self.notes.len().saturating_sub(SHOWN) + self.more;
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    }

    fn note(&mut self, note: Note) {
        if self
            .notes
            .iter()
            .any(|n| *n == note || (n.whole && n.scope == note.scope))
        {
            return;
        }
        if note.whole {
            self.notes.retain(|n| n.scope != note.scope);
            self.more = 0;
        }
        if self.notes.len() < MAX_NOTES {
            self.notes.push(note);
        } else {
            self.more += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::changes::tests::{kind, nft, routing};
    use super::changes::{
        NFT_MSG_DELCHAIN, NFT_MSG_DELRULE, NFT_MSG_DELTABLE, NFTA_CHAIN_NAME, NFTA_RULE_CHAIN,
    };
    use super::*;
    use crate::daemon::kernel::nftables::NFPROTO_INET;

    fn heal(backend: Backend) -> SelfHeal {
        SelfHeal::open(backend, routing()).unwrap()
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user opens no NETLINK_NETFILTER socket")]
    fn a_deleted_table_stands_for_everything_in_it() {
        let mut h = heal(Backend::Nftables);
        for (message, chain) in [
            (NFT_MSG_DELRULE, Some((NFTA_RULE_CHAIN, "prerouting"))),
            (NFT_MSG_DELCHAIN, Some((NFTA_CHAIN_NAME, "prerouting"))),
            (NFT_MSG_DELTABLE, None),
            (NFT_MSG_DELCHAIN, Some((NFTA_CHAIN_NAME, "output"))),
        ] {
            let payload = nft(NFPROTO_INET, "connmark_lb", chain);
            let note = changes::nft_change(Backend::Nftables, kind(message), &payload);
            h.note(note.unwrap());
        }
        assert_eq!(h.summary(), "nft table inet connmark_lb deleted");
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user opens no NETLINK_NETFILTER socket")]
    fn reapplies_settle_and_stay_within_the_budget() {
        let mut h = heal(Backend::Nftables);
        let t0 = Instant::now();
        let mut reapplies = 0;
        let mut paused = Vec::new();
        for round in 0..20u32 {
            let now = t0 + Duration::from_secs(u64::from(round));
            h.note(Note {
                scope: String::new(),
                whole: false,
                text: format!("change {round}"),
            });
            h.due.get_or_insert(now + SETTLE);
            assert_eq!(h.check(now), Verdict::Nothing, "settling");
            match h.check(now + SETTLE) {
                Verdict::Reapply(text) => {
                    assert_eq!(text, format!("change {round}"));
                    reapplies += 1;
                }
                Verdict::Paused(text) => paused.push(text),
                Verdict::Nothing => {}
            }
        }
        assert_eq!(reapplies, BUDGET, "{paused:?}");
        assert_eq!(paused.len(), 1, "the pause is logged once: {paused:?}");
        assert!(
            paused[0].starts_with("another program keeps changing our rules (5 re-applies in 60 s"),
            "{paused:?}"
        );
        assert_eq!(h.reapplies, BUDGET as u64);
        let later = t0 + PERIOD + Duration::from_secs(1);
        assert!(
            matches!(h.check(later), Verdict::Reapply(_)),
            "budget back after the period"
        );
    }
}
