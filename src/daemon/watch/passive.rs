//! Passive health: the LAN's own new connections tell when a link stops answering, long before
//! a probe round would.
//!
//! The daemon joins ctnetlink's event groups (`NFNLGRP_CONNTRACK_NEW` and `_UPDATE`). A new
//! entry that was source-NATed (it leaves through a WAN link) and carries one of our link marks
//! is *pending*; the update that says it saw a reply (`IPS_SEEN_REPLY`) makes it *answered*.
//! A pending entry still without a reply after [`LinkWatch::patience`] (a few hundred ms, more
//! on a slow link) is *unanswered*. A link becomes suspect when, since its last answered
//! connection, [`SUSPECT_UNANSWERED`] connections to [`SUSPECT_DESTINATIONS`] distinct
//! destinations went unanswered while another link answered one recently: the daemon then
//! probes it at once (a burst) and takes it down if the burst is not answered either.
//!
//! Why events and not nft counters read over netlink: a counter can say how many connections
//! a link started and how many of its packets came back, but not which connection got no
//! answer, to which destination, or for how long; events carry exactly that, cost nothing
//! while the LAN is quiet, and arrive in the daemon's poll loop as soon as the kernel confirms
//! the entry. What keeps false alarms away: one destination that does not answer (a dead
//! server, a client hammering a dead address) never counts as several; a server down on every
//! link at once makes no link look worse than the others; random loss lets some connections
//! through, and each answered one starts the count over; and the burst decides, not the
//! connections: a link whose probes are answered stays up.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::SockProtocol;

use crate::daemon::kernel::conntrack::{
    CTA_ID, CTA_MARK, CTA_STATUS, CTA_TUPLE_ORIG, IPCTNL_MSG_CT_NEW, IPS_SEEN_REPLY, ct_type,
};
use crate::daemon::kernel::netlink::{self, NFGENMSG_LEN, Received};
use crate::error::Result;

/// `NFNLGRP_CONNTRACK_NEW` and `NFNLGRP_CONNTRACK_UPDATE`.
const GROUPS: [u32; 2] = [1, 2];
/// `IPS_SRC_NAT`: the entry was source-NATed, so it leaves through a WAN link.
const IPS_SRC_NAT: u32 = 1 << 4;
/// Nested attributes of a tuple: `CTA_TUPLE_IP`, then `CTA_IP_V4_DST` or `CTA_IP_V6_DST`.
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_DST: u16 = 4;
/// Unanswered connections, and distinct destinations among them, that make a link suspect.
pub const SUSPECT_UNANSWERED: usize = 3;
pub const SUSPECT_DESTINATIONS: usize = 2;
/// How long an answer on another link counts as "the other links answer".
const OTHERS_ANSWERED_WITHIN: Duration = Duration::from_secs(10);
/// Evidence older than this is forgotten.
const EVIDENCE_WINDOW: Duration = Duration::from_secs(5);
/// The shortest wait for a reply before a connection counts as unanswered, and the longest.
const MIN_PATIENCE: Duration = Duration::from_millis(250);
const MAX_PATIENCE: Duration = Duration::from_millis(1500);
/// After a suspicion the burst cleared, the link is not suspected again for this long, doubled
/// after every further cleared suspicion up to [`MAX_HOLD_OFF`], so a LAN that keeps many
/// dead destinations busy costs a few probes, not a log line a second.
const HOLD_OFF: Duration = Duration::from_secs(1);
const MAX_HOLD_OFF: Duration = Duration::from_secs(64);
/// Pending entries kept at most; beyond it new ones are not watched until some are settled.
const MAX_PENDING: usize = 16_384;
const SOCKET_NAME: &str = "ctnetlink event socket";

/// What the watcher knows about one link.
#[derive(Debug, Clone)]
pub struct LinkWatch {
    /// The link's mark under the mask.
    pub mark: u32,
    /// Passive health on, and the link can be confirmed by probes.
    pub enabled: bool,
    /// How long a new connection may wait for its reply.
    pub patience: Duration,
    last_answer: Option<Instant>,
    /// Unanswered connections since the last answer: destination and start.
    unanswered: VecDeque<(IpAddr, Instant)>,
    hold_off: Duration,
    quiet_until: Option<Instant>,
}

impl LinkWatch {
    /// A link with passive health `enabled`, waiting [`MIN_PATIENCE`] for replies.
    pub fn new(mark: u32, enabled: bool) -> LinkWatch {
        LinkWatch {
            mark,
            enabled,
            patience: MIN_PATIENCE,
            last_answer: None,
            unanswered: VecDeque::new(),
            hold_off: HOLD_OFF,
            quiet_until: None,
        }
    }

    /// Sets the wait from the link's recent probe round-trip time: three times it, within
    /// [`MIN_PATIENCE`]..[`MAX_PATIENCE`].
    pub fn set_rtt(&mut self, rtt: Option<Duration>) {
        self.patience = rtt.map_or(MIN_PATIENCE, |rtt| {
            (rtt * 3).clamp(MIN_PATIENCE, MAX_PATIENCE)
        });
    }
}

/// Why a link is suspect, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspicion {
    /// Index into the watcher's links.
    pub link: usize,
    pub unanswered: usize,
    pub destinations: usize,
}

impl std::fmt::Display for Suspicion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} new connections to {} destinations unanswered since its last answer",
            self.unanswered, self.destinations
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    link: usize,
    destination: IpAddr,
    at: Instant,
}

/// The event socket and what it has seen.
#[derive(Debug)]
pub struct PassiveWatcher {
    socket: OwnedFd,
    buffer: Vec<u8>,
    mask: u32,
    pub links: Vec<LinkWatch>,
    pending: HashMap<u32, Pending>,
    /// Pending ids in arrival order, for the nearest deadline (settled ones are skipped).
    order: VecDeque<(Instant, u32)>,
    /// Events lost to a full socket buffer since the start, for status and the log.
    pub overruns: u64,
}

impl PassiveWatcher {
    /// Joins the conntrack event groups of the current network namespace.
    pub fn open(mask: u32, links: Vec<LinkWatch>) -> Result<PassiveWatcher> {
        Ok(PassiveWatcher {
            socket: netlink::open(
                SockProtocol::NetlinkNetFilter,
                &GROUPS,
                4 << 20,
                SOCKET_NAME,
            )?,
            buffer: vec![0; 64 * 1024],
            mask,
            links,
            pending: HashMap::new(),
            order: VecDeque::new(),
            overruns: 0,
        })
    }

    /// New links (a reload): what was learned about the old ones is dropped.
    pub fn reset(&mut self, mask: u32, links: Vec<LinkWatch>) {
        self.mask = mask;
        self.links = links;
        self.pending.clear();
        self.order.clear();
    }

    /// When [`PassiveWatcher::check`] next has work: the oldest pending entry's patience.
    pub fn deadline(&mut self) -> Option<Instant> {
        while let Some(&(at, id)) = self.order.front() {
            match self.pending.get(&id) {
                Some(p) if p.at == at => return Some(at + self.links[p.link].patience),
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Reads every queued event.
    pub fn drain(&mut self, now: Instant) -> Result<()> {
        loop {
            match netlink::receive(&self.socket, &mut self.buffer, SOCKET_NAME)? {
                Received::Empty => return Ok(()),
                Received::Overrun => {
                    // Some events are gone: what is pending may never be settled. Start over.
                    self.overruns += 1;
                    self.pending.clear();
                    self.order.clear();
                }
                Received::Data(len) => {
                    let mut events = Vec::new();
                    for message in netlink::messages(&self.buffer[..len]) {
                        if message.kind == ct_type(IPCTNL_MSG_CT_NEW) {
                            events.extend(Event::parse(message.payload));
                        }
                    }
                    for event in events {
                        self.on_event(event, now);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        if event.status & IPS_SEEN_REPLY != 0 {
            if let Some(pending) = self.pending.remove(&event.id) {
                let watch = &mut self.links[pending.link];
                watch.last_answer = Some(now);
                watch.unanswered.clear();
            }
            return;
        }
        if event.status & IPS_SRC_NAT == 0 || self.pending.len() >= MAX_PENDING {
            return;
        }
        let mark = event.mark & self.mask;
        let Some(link) = self
            .links
            .iter()
            .position(|w| w.enabled && mark != 0 && w.mark == mark)
        else {
            return;
        };
        if let Some(destination) = event.destination {
            if self
                .pending
                .insert(
                    event.id,
                    Pending {
                        link,
                        destination,
                        at: now,
                    },
                )
                .is_none()
            {
                self.order.push_back((now, event.id));
            }
        }
    }

    /// Settles pending connections that waited too long, then names the links that are
    /// suspect now (each at most once per hold-off).
    pub fn check(&mut self, now: Instant) -> Vec<Suspicion> {
        while let Some(&(at, id)) = self.order.front() {
            let Some(pending) = self.pending.get(&id).copied().filter(|p| p.at == at) else {
                self.order.pop_front();
                continue;
            };
            if now < at + self.links[pending.link].patience {
                break;
            }
            self.order.pop_front();
            self.pending.remove(&id);
            self.links[pending.link]
                .unanswered
                .push_back((pending.destination, at));
        }
        let mut suspects = Vec::new();
        for index in 0..self.links.len() {
            let others_answer = self.links.iter().enumerate().any(|(i, w)| {
                i != index
                    && w.last_answer
                        .is_some_and(|at| now.duration_since(at) < OTHERS_ANSWERED_WITHIN)
            });
            let watch = &mut self.links[index];
            while watch
                .unanswered
                .front()
                .is_some_and(|(_, at)| now.duration_since(*at) > EVIDENCE_WINDOW)
            {
                watch.unanswered.pop_front();
            }
            if !others_answer
                || watch.unanswered.len() < SUSPECT_UNANSWERED
                || watch.quiet_until.is_some_and(|until| now < until)
            {
                continue;
            }
            let mut destinations: Vec<IpAddr> = watch.unanswered.iter().map(|(d, _)| *d).collect();
            destinations.sort_unstable();
            destinations.dedup();
            if destinations.len() < SUSPECT_DESTINATIONS {
                continue;
            }
            suspects.push(Suspicion {
                link: index,
                unanswered: watch.unanswered.len(),
                destinations: destinations.len(),
            });
            watch.unanswered.clear();
        }
        suspects
    }

    /// The burst after a suspicion was answered: hold off, longer each time.
    pub fn cleared(&mut self, link: usize, now: Instant) {
        if let Some(watch) = self.links.get_mut(link) {
            watch.quiet_until = Some(now + watch.hold_off);
            watch.hold_off = (watch.hold_off * 2).min(MAX_HOLD_OFF);
        }
    }

    /// The link went down: its evidence and hold-off start over.
    pub fn confirmed(&mut self, link: usize) {
        if let Some(watch) = self.links.get_mut(link) {
            watch.unanswered.clear();
            watch.quiet_until = None;
            watch.hold_off = HOLD_OFF;
        }
    }
}

impl AsFd for PassiveWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// What one conntrack event says about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event {
    id: u32,
    status: u32,
    mark: u32,
    destination: Option<IpAddr>,
}

impl Event {
    fn parse(payload: &[u8]) -> Option<Event> {
        let v6 = match i32::from(*payload.first()?) {
            libc::AF_INET => false,
            libc::AF_INET6 => true,
            _ => return None,
        };
        let attrs = payload.get(NFGENMSG_LEN..)?;
        let ip = netlink::attr(attrs, CTA_TUPLE_ORIG)
            .and_then(|tuple| netlink::attr(tuple.value, CTA_TUPLE_IP));
        let destination = ip.and_then(|ip| {
            if v6 {
                let dst = netlink::attr(ip.value, CTA_IP_V6_DST)?;
                let octets: [u8; 16] = dst.value.get(..16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(octets)))
            } else {
                let dst = netlink::attr(ip.value, CTA_IP_V4_DST)?;
                Some(IpAddr::V4(Ipv4Addr::from(dst.be32()?)))
            }
        });
        Some(Event {
            id: netlink::attr(attrs, CTA_ID)?.be32()?,
            status: netlink::attr(attrs, CTA_STATUS)?.be32()?,
            mark: netlink::attr(attrs, CTA_MARK)
                .and_then(|a| a.be32())
                .unwrap_or(0),
            destination,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: u32 = 0x3f00;

    fn watcher() -> PassiveWatcher {
        PassiveWatcher::open(
            MASK,
            vec![LinkWatch::new(0x100, true), LinkWatch::new(0x200, true)],
        )
        .unwrap()
    }

    fn new(id: u32, mark: u32, dst: u8) -> Event {
        Event {
            id,
            status: IPS_SRC_NAT,
            mark,
            destination: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, dst))),
        }
    }

    fn reply(id: u32) -> Event {
        Event {
            id,
            status: IPS_SRC_NAT | IPS_SEEN_REPLY,
            mark: 0,
            destination: None,
        }
    }

    /// Link 1 answers connection 1; link 2 gets `dsts` unanswered connections.
    fn feed(w: &mut PassiveWatcher, t0: Instant, dsts: &[u8]) {
        w.on_event(new(1, 0x100, 1), t0);
        w.on_event(reply(1), t0);
        for (i, dst) in dsts.iter().enumerate() {
            w.on_event(new(10 + i as u32, 0x200, *dst), t0);
        }
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user opens no NETLINK_NETFILTER socket")]
    fn unanswered_connections_to_several_destinations_make_a_link_suspect() {
        let mut w = watcher();
        let t0 = Instant::now();
        feed(&mut w, t0, &[1, 2, 3]);
        assert_eq!(w.deadline(), Some(t0 + MIN_PATIENCE));
        assert!(w.check(t0 + MIN_PATIENCE / 2).is_empty(), "not yet");
        let suspects = w.check(t0 + MIN_PATIENCE);
        assert_eq!(
            suspects,
            [Suspicion {
                link: 1,
                unanswered: 3,
                destinations: 3
            }]
        );
        assert_eq!(w.deadline(), None);
        w.cleared(1, t0 + MIN_PATIENCE);
        feed(&mut w, t0 + MIN_PATIENCE, &[4, 5, 6]);
        assert!(
            w.check(t0 + MIN_PATIENCE * 2).is_empty(),
            "held off after a cleared burst"
        );
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user opens no NETLINK_NETFILTER socket")]
    fn no_suspicion_without_evidence_from_several_places() {
        let t0 = Instant::now();
        let later = t0 + MAX_PATIENCE;
        // One dead destination, however often.
        let mut w = watcher();
        feed(&mut w, t0, &[7, 7, 7, 7, 7]);
        assert!(w.check(later).is_empty());
        // An answer on the link itself starts the count over.
        let mut w = watcher();
        feed(&mut w, t0, &[1, 2, 3]);
        w.on_event(reply(11), t0);
        assert!(w.check(later).is_empty());
        // No other link answered: the trouble is not this link's.
        let mut w = watcher();
        for (i, dst) in [1, 2, 3].iter().enumerate() {
            w.on_event(new(10 + i as u32, 0x200, *dst), t0);
        }
        assert!(w.check(later).is_empty());
        // Connections that were not source-NATed, or carry no link mark, are not watched.
        let mut w = watcher();
        feed(&mut w, t0, &[]);
        for id in 20..25 {
            w.on_event(
                Event {
                    status: 0,
                    ..new(id, 0x200, id as u8)
                },
                t0,
            );
            w.on_event(new(id + 10, 0x4000, id as u8), t0);
        }
        assert!(w.check(later).is_empty());
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn patience_follows_the_round_trip_time() {
        let mut watch = LinkWatch::new(0x100, true);
        watch.set_rtt(Some(Duration::from_millis(20)));
        assert_eq!(watch.patience, MIN_PATIENCE);
        watch.set_rtt(Some(Duration::from_millis(200)));
        assert_eq!(watch.patience, Duration::from_millis(600));
        watch.set_rtt(Some(Duration::from_secs(2)));
        assert_eq!(watch.patience, MAX_PATIENCE);
    }

    #[test]
    fn events_parse_from_the_wire_format() {
        let mut payload = vec![libc::AF_INET as u8, 0, 0, 0];
        let mut ip = Vec::new();
        netlink::push_be32(&mut ip, 1, u32::from(Ipv4Addr::new(192, 168, 1, 2)));
        netlink::push_be32(
            &mut ip,
            CTA_IP_V4_DST,
            u32::from(Ipv4Addr::new(203, 0, 113, 9)),
        );
        let nest = |kind: u16, inner: &[u8]| {
            let mut out = ((4 + inner.len()) as u16).to_ne_bytes().to_vec();
            out.extend_from_slice(&(0x8000 | kind).to_ne_bytes());
            out.extend_from_slice(inner);
            out
        };
        payload.extend(nest(CTA_TUPLE_ORIG, &nest(CTA_TUPLE_IP, &ip)));
        netlink::push_be32(&mut payload, CTA_STATUS, IPS_SRC_NAT | 0x8);
        netlink::push_be32(&mut payload, CTA_MARK, 0x200);
        netlink::push_be32(&mut payload, CTA_ID, 77);
        assert_eq!(
            Event::parse(&payload),
            Some(Event {
                id: 77,
                status: IPS_SRC_NAT | 0x8,
                mark: 0x200,
                destination: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
            })
        );
        payload[0] = libc::AF_UNIX as u8;
        assert_eq!(Event::parse(&payload), None, "neither family");

        let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9);
        let mut ip = Vec::new();
        ip.extend_from_slice(&20u16.to_ne_bytes());
        ip.extend_from_slice(&CTA_IP_V6_DST.to_ne_bytes());
        ip.extend_from_slice(&dst.octets());
        let mut payload = vec![libc::AF_INET6 as u8, 0, 0, 0];
        payload.extend(nest(CTA_TUPLE_ORIG, &nest(CTA_TUPLE_IP, &ip)));
        netlink::push_be32(&mut payload, CTA_STATUS, IPS_SRC_NAT);
        netlink::push_be32(&mut payload, CTA_ID, 78);
        assert_eq!(
            Event::parse(&payload).and_then(|e| e.destination),
            Some(IpAddr::V6(dst))
        );
    }
}
