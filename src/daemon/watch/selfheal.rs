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
use crate::config::Family;
use crate::daemon::kernel::netlink::{self, NFGENMSG_LEN, Received};
use crate::names::{IPT_PREFIX, NFT_TABLE};
use crate::plan::Routing;
use crate::render::iptables::JUMPS;

/// `NFNLGRP_NFTABLES`.
const NFT_GROUP: u32 = 7;
/// `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV4_RULE`, `RTNLGRP_IPV6_ROUTE`, `RTNLGRP_IPV6_RULE`.
const ROUTE_GROUPS: [u32; 4] = [7, 8, 11, 19];
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// nf_tables message types (low byte) that announce changes.
const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_DELTABLE: u8 = 2;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_DELCHAIN: u8 = 5;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_DELRULE: u8 = 8;
const NFT_MSG_DELSET: u8 = 11;
/// The table name is attribute 1 of table, chain, rule and set messages; the chain is
/// attribute 3 of a chain message and 2 of a rule message.
const NFTA_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_CHAIN: u16 = 2;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
/// `struct rtmsg` and `struct fib_rule_hdr` are both 12 bytes; the table byte is at 4.
const RT_HEADER_LEN: usize = 12;
const RTA_TABLE: u16 = 15;
const FRA_PRIORITY: u16 = 6;
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

/// One thing that went missing or changed: `whole` when it is a whole table, which then
/// stands for everything in it (`scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Note {
    scope: String,
    whole: bool,
    text: String,
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
                        self.nft_change(message.kind, message.payload)
                    } else {
                        self.route_change(message.kind, message.payload)
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
        if self.backend == Backend::Nftables && !nft_table_exists() {
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

    /// What an nf_tables announcement changed of ours, if anything.
    fn nft_change(&self, kind: u16, payload: &[u8]) -> Option<Note> {
        if kind >> 8 != NFNL_SUBSYS_NFTABLES {
            return None;
        }
        let message = (kind & 0xff) as u8;
        let family = *payload.first()?;
        let attrs = payload.get(NFGENMSG_LEN..)?;
        let table = netlink::attr(attrs, NFTA_TABLE)?.text().to_string();
        let chain = match message {
            NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN => netlink::attr(attrs, NFTA_CHAIN_NAME),
            NFT_MSG_NEWRULE | NFT_MSG_DELRULE => netlink::attr(attrs, NFTA_RULE_CHAIN),
            _ => None,
        }
        .map(|a| a.text().to_string());
        let deleted = matches!(
            message,
            NFT_MSG_DELTABLE | NFT_MSG_DELCHAIN | NFT_MSG_DELRULE | NFT_MSG_DELSET
        );
        // Set elements (NEWSETELEM, DELSETELEM) come and go by themselves (timeouts,
        // dnsmasq's `nftset=`, the ruleset's own `update @set`): data, not a change to our
        // rules, so they fall through to `None` below.
        let whole = matches!(message, NFT_MSG_NEWTABLE | NFT_MSG_DELTABLE);
        let what = match (message, &chain) {
            _ if whole => String::new(),
            (NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN, Some(chain)) => format!("chain {chain} of "),
            (NFT_MSG_NEWRULE | NFT_MSG_DELRULE, Some(chain)) => {
                format!("rules of chain {chain} of ")
            }
            (NFT_MSG_DELSET, _) => "a set of ".to_string(),
            _ => return None,
        };
        let verb = if deleted { "deleted" } else { "changed" };
        let note = |scope: String| Note {
            text: format!("{what}{scope} {verb}"),
            scope,
            whole,
        };
        match self.backend {
            Backend::Nftables => {
                let ours = NFT_TABLE.strip_prefix("inet ").unwrap_or(NFT_TABLE);
                (family == NFPROTO_INET && table == ours)
                    .then(|| note(format!("nft table {NFT_TABLE}")))
            }
            Backend::Iptables => {
                // Other programs add to these tables all the time; only a removal can be ours.
                let ours = chain.as_deref().is_none_or(|c| {
                    c.starts_with(IPT_PREFIX)
                        || JUMPS
                            .iter()
                            .any(|(t, builtin, _)| *t == table && *builtin == c)
                });
                let table_ours = JUMPS.iter().any(|(t, _, _)| *t == table);
                let family_ours = family == NFPROTO_IPV4 || family == NFPROTO_IPV6;
                (family_ours && deleted && table_ours && ours)
                    .then(|| note(format!("iptables table {table}")))
            }
        }
    }

    /// What an rtnetlink route or rule announcement changed of ours, if anything.
    fn route_change(&self, kind: u16, payload: &[u8]) -> Option<Note> {
        let header = payload.get(..RT_HEADER_LEN)?;
        let attrs = payload.get(RT_HEADER_LEN..)?;
        let family = match i32::from(header[0]) {
            libc::AF_INET => Family::Ipv4,
            libc::AF_INET6 => Family::Ipv6,
            _ => return None,
        };
        let table = netlink::attr(attrs, RTA_TABLE)
            .and_then(|a| a.ne32())
            .unwrap_or(u32::from(header[4]));
        match kind {
            RTM_NEWROUTE | RTM_DELROUTE if self.routing.has_table(family, table) => {
                let verb = if kind == RTM_DELROUTE {
                    "deleted"
                } else {
                    "changed"
                };
                Some(Note {
                    scope: format!("table {table}"),
                    whole: false,
                    text: format!("route in table {table} {verb}"),
                })
            }
            RTM_NEWRULE | RTM_DELRULE => {
                let priority = netlink::attr(attrs, FRA_PRIORITY)?.ne32()?;
                let ours = self
                    .routing
                    .rules(family)
                    .iter()
                    .any(|r| r.priority == priority);
                ours.then(|| {
                    let verb = if kind == RTM_DELRULE {
                        "deleted"
                    } else {
                        "added"
                    };
                    Note {
                        scope: "ip rules".to_string(),
                        whole: false,
                        text: format!("ip rule {priority} {verb}"),
                    }
                })
            }
            _ => None,
        }
    }
}

/// Whether our nft table exists, asked over nfnetlink (`NFT_MSG_GETTABLE`); an error other than
/// "no such table" counts as existing, so a failing question never causes a re-apply.
fn nft_table_exists() -> bool {
    const NFT_MSG_GETTABLE: u16 = 1;
    let name = NFT_TABLE.strip_prefix("inet ").unwrap_or(NFT_TABLE);
    let Ok(fd) = netlink::open(SockProtocol::NetlinkNetFilter, &[], 1 << 16, NFT_NAME) else {
        return true;
    };
    let value = format!("{name}\0");
    let attr_len = 4 + value.len();
    let len = netlink::HEADER_LEN + NFGENMSG_LEN + attr_len.next_multiple_of(4);
    let mut request = Vec::with_capacity(len);
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    netlink::push_header(
        &mut request,
        len,
        NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE,
        flags,
        1,
    );
    request.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
    request.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    request.extend_from_slice(&NFTA_TABLE.to_ne_bytes());
    request.extend_from_slice(value.as_bytes());
    request.resize(len, 0);
    if netlink::send_all(&fd, &request, NFT_NAME).is_err() {
        return true;
    }
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        match netlink::receive(&fd, &mut buffer, NFT_NAME) {
            Ok(Received::Data(len)) => {
                for message in netlink::messages(&buffer[..len]) {
                    if let Some(code) = message.error_code() {
                        return code != -libc::ENOENT;
                    }
                }
            }
            Ok(Received::Empty) => std::thread::sleep(Duration::from_micros(200)),
            _ => return true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heal(backend: Backend) -> SelfHeal {
        SelfHeal::open(
            backend,
            Routing {
                footprint: crate::plan::Footprint {
                    mask: 0x3f00,
                    priority_base: 4000,
                    table_base: 4000,
                },
                links: vec![1, 2],
                links6: Vec::new(),
            },
        )
        .unwrap()
    }

    /// An nf_tables message payload: family, then table (and chain) name attributes.
    fn nft(family: u8, table: &str, chain: Option<(u16, &str)>) -> Vec<u8> {
        let mut out = vec![family, 0, 0, 0];
        let mut push = |kind: u16, text: &str| {
            let value = format!("{text}\0");
            out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(value.as_bytes());
            out.resize(out.len().next_multiple_of(4), 0);
        };
        push(NFTA_TABLE, table);
        if let Some((kind, chain)) = chain {
            push(kind, chain);
        }
        out
    }

    fn text(note: Option<Note>) -> Option<String> {
        note.map(|n| n.text)
    }

    const NFT_MSG_DELSETELEM: u8 = 14;

    fn kind(message: u8) -> u16 {
        NFNL_SUBSYS_NFTABLES << 8 | u16::from(message)
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user opens no NETLINK_NETFILTER socket")]
    fn only_changes_to_our_objects_count() {
        let h = heal(Backend::Nftables);
        let ours = nft(NFPROTO_INET, "connmark_lb", None);
        assert_eq!(
            text(h.nft_change(kind(NFT_MSG_DELTABLE), &ours)).as_deref(),
            Some("nft table inet connmark_lb deleted")
        );
        let rule = nft(
            NFPROTO_INET,
            "connmark_lb",
            Some((NFTA_RULE_CHAIN, "prerouting")),
        );
        assert_eq!(
            text(h.nft_change(kind(NFT_MSG_NEWRULE), &rule)).as_deref(),
            Some("rules of chain prerouting of nft table inet connmark_lb changed")
        );
        assert_eq!(
            h.nft_change(kind(NFT_MSG_DELTABLE), &nft(NFPROTO_INET, "fw4", None)),
            None
        );
        assert_eq!(
            h.nft_change(kind(NFT_MSG_DELSETELEM), &ours),
            None,
            "set elements expire by themselves"
        );
        assert_eq!(
            h.nft_change(
                kind(NFT_MSG_DELTABLE),
                &nft(NFPROTO_IPV4, "connmark_lb", None)
            ),
            None
        );

        let h = heal(Backend::Iptables);
        let jump = nft(
            NFPROTO_IPV4,
            "mangle",
            Some((NFTA_RULE_CHAIN, "PREROUTING")),
        );
        assert_eq!(
            text(h.nft_change(kind(NFT_MSG_DELRULE), &jump)).as_deref(),
            Some("rules of chain PREROUTING of iptables table mangle deleted")
        );
        assert_eq!(
            h.nft_change(kind(NFT_MSG_NEWRULE), &jump),
            None,
            "others add rules"
        );
        let foreign = nft(NFPROTO_IPV4, "mangle", Some((NFTA_RULE_CHAIN, "FORWARD")));
        assert_eq!(h.nft_change(kind(NFT_MSG_DELRULE), &foreign), None);
        let filter = nft(NFPROTO_IPV4, "filter", Some((NFTA_RULE_CHAIN, "CMLB_X")));
        assert_eq!(h.nft_change(kind(NFT_MSG_DELRULE), &filter), None);

        let mut rule = vec![2u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        netlink::push_be32(&mut rule, FRA_PRIORITY, 0);
        let at = rule.len() - 4;
        rule[at..].copy_from_slice(&4001u32.to_ne_bytes());
        assert_eq!(
            text(h.route_change(RTM_DELRULE, &rule)).as_deref(),
            Some("ip rule 4001 deleted")
        );
        rule[at..].copy_from_slice(&32766u32.to_ne_bytes());
        assert_eq!(h.route_change(RTM_DELRULE, &rule), None);
        let mut route = vec![2u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        netlink::push_be32(&mut route, RTA_TABLE, 0);
        let at = route.len() - 4;
        route[at..].copy_from_slice(&4002u32.to_ne_bytes());
        assert_eq!(
            text(h.route_change(RTM_DELROUTE, &route)).as_deref(),
            Some("route in table 4002 deleted")
        );
        route[at..].copy_from_slice(&254u32.to_ne_bytes());
        assert_eq!(h.route_change(RTM_DELROUTE, &route), None);
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user opens no NETLINK_NETFILTER socket")]
    fn the_table_is_looked_up_over_netlink() {
        let ns = crate::daemon::testns::Netns::new("heal");
        assert!(!ns.enter(nft_table_exists));
        ns.nft("table inet connmark_lb {\n chain c {\n }\n}\n");
        assert!(ns.enter(nft_table_exists));
        ns.nft("delete table inet connmark_lb");
        assert!(!ns.enter(nft_table_exists));
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
            let note = h.nft_change(kind(message), &nft(NFPROTO_INET, "connmark_lb", chain));
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
