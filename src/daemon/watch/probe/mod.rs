//! ICMP and ICMPv6 echo probing through one chosen link, from inside the daemon.
//!
//! Each tracked link gets one raw ICMP (IPv6 links: ICMPv6) socket that carries the link's mark
//! (`SO_MARK`), so the `ip rule fwmark` of that link routes the probe through it, is bound to
//! the link's device (`SO_BINDTODEVICE`) and, when known, to the link's source address. No
//! `ping` binary is run, so tracking costs no fork per probe and works on images without one.
//!
//! A raw socket sees every echo reply the host receives, so a reply counts only when its
//! identifier, sequence number, source address and payload token are the ones we sent. The
//! socket's kernel filter passes echo replies only: on IPv6 links neighbour and router
//! discovery, which keep flowing while a link is dead upstream, never reach us and can never
//! count as an answer. The kernel does not verify the checksum of what it hands to raw ICMP
//! sockets; we do. For ICMPv6 it computes and verifies checksums itself.
//!
//! The socket is nonblocking. [`Prober::start`] sends a round and returns at once,
//! [`Prober::receive`] takes whatever replies are queued, and [`Round::deadline`] says when to
//! give up, so an event loop can drive many links; [`Prober::wait`] is the same driven by
//! `poll` for one link. No wait is longer than the round's `timeout`.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrStorage, bind, recvfrom,
    sendto, setsockopt, socket, sockopt,
};

use crate::config::Family;
use crate::config::family::is_link_local;
use crate::config::track::TrackConfig;
use crate::error::{Error, Result};

mod icmp;
mod round;

use icmp::{ECHO_REPLY, ECHO6_REPLY, TOKEN_LEN, echo_request, parse_echo_reply, parse_echo6_reply};
pub use round::{Round, RoundReport, RoundSummary, TargetReport};

/// `ICMP_FILTER` from `<linux/icmp.h>` (not in the libc crate): a bitmask of ICMP types a raw
/// socket does not want to receive.
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` from `<linux/icmpv6.h>`: 256 bits, one per ICMPv6 type, set = blocked.
const ICMP6_FILTER: libc::c_int = 1;
/// Large enough for our replies with any IP options; longer foreign packets arrive truncated
/// and fail the checksum, which is what we want for them anyway.
const RECEIVE_BUFFER: usize = 512;
/// Datagrams taken per [`Prober::receive`] call, so a flood of foreign ICMP cannot keep the
/// caller from its other links and its deadlines.
const RECEIVE_BATCH: usize = 64;

/// How packets of one link leave the router: what the socket is tied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRoute {
    /// The interface section name, for messages.
    pub name: String,
    /// The link's firewall mark (within the configured mask); the link's `ip rule fwmark`
    /// routes marked packets through it.
    pub mark: u32,
    /// The link's family: which ICMP its probes speak.
    pub family: Family,
    /// The link's kernel device, when known.
    pub device: Option<String>,
    /// The link's source address, when known; otherwise the kernel picks the route's.
    pub source: Option<IpAddr>,
}

/// One link's probing socket. The targets and counts come with each round, from the link's
/// options, so they are kept in one place.
#[derive(Debug)]
pub struct Prober {
    /// The link's name, for messages.
    link: String,
    family: Family,
    socket: OwnedFd,
    /// The index of the link's device (0: none), the scope of link-local targets.
    scope: u32,
    ident: u16,
    token: [u8; TOKEN_LEN],
    next_seq: u16,
}

impl Prober {
    /// Opens the link's socket. Needs `CAP_NET_RAW` (the daemon runs as root).
    pub fn open(route: &LinkRoute, track: &TrackConfig) -> Result<Prober> {
        let section = format!("interface '{}'", route.name);
        let requests = u64::from(track.count) * track.track_ip.len() as u64;
        if u16::try_from(track.count).is_err() || requests > u64::from(u16::MAX) {
            return Err(Error::config(
                &section,
                Some("count"),
                format!(
                    "{} requests to each of {} targets exceed {} per round",
                    track.count,
                    track.track_ip.len(),
                    u16::MAX
                ),
            ));
        }
        let what = |step: &str| socket_name(&route.name, step);
        let (domain, protocol) = match route.family {
            Family::Ipv4 => (AddressFamily::Inet, SockProtocol::Icmp),
            Family::Ipv6 => (AddressFamily::Inet6, SockProtocol::IcmpV6),
        };
        let socket = socket(
            domain,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(|e| Error::io(what("socket"), e.into()))?;
        setsockopt(&socket, sockopt::Mark, &route.mark)
            .map_err(|e| Error::io(what(&format!("SO_MARK {:#x}", route.mark)), e.into()))?;
        let mut scope = 0;
        if let Some(device) = &route.device {
            setsockopt(&socket, sockopt::BindToDevice, &OsString::from(device))
                .map_err(|e| Error::io(what(&format!("SO_BINDTODEVICE {device}")), e.into()))?;
            scope = nix::net::if_::if_nametoindex(device.as_str()).unwrap_or(0);
        }
        only_echo_replies(&socket, route.family)
            .map_err(|e| Error::io(what("ICMP filter"), e.into()))?;
        if let Some(source) = route.source {
            bind(
                socket.as_raw_fd(),
                &SockaddrStorage::from(SocketAddr::new(source, 0)),
            )
            .map_err(|e| Error::io(what(&format!("bind {source}")), e.into()))?;
        }
        Ok(Prober {
            link: route.name.clone(),
            family: route.family,
            socket,
            scope,
            ident: random_u64() as u16,
            token: random_u64().to_be_bytes(),
            next_seq: 0,
        })
    }

    /// Sends one round of the link's `track` options: `count` echo requests to each target,
    /// back to back, waiting `timeout` for the replies.
    pub fn start(&mut self, track: &TrackConfig) -> Round {
        let count = u16::try_from(track.count).unwrap_or(u16::MAX);
        self.start_with(&track.track_ip, count, track.timeout)
    }

    /// Sends a round of `count` requests to each of `targets` that gives up after `timeout`
    /// (a regular round, or the confirmation burst of a suspect link). A request that cannot
    /// be sent is recorded as lost with its reason; it is not an error of the round.
    pub fn start_with(&mut self, targets: &[IpAddr], count: u16, timeout: Duration) -> Round {
        let count = usize::from(count);
        let mut round = Round::begin(Instant::now(), timeout, self.next_seq, count);
        for &target in targets {
            // A link-local target is only meaningful on the link's device.
            let destination = match (target, is_link_local(&target)) {
                (IpAddr::V6(v6), true) => SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, self.scope)),
                _ => SocketAddr::new(target, 0),
            };
            let destination = SockaddrStorage::from(destination);
            for _ in 0..count {
                let packet = echo_request(self.family, self.ident, self.next_seq, &self.token);
                self.next_seq = self.next_seq.wrapping_add(1);
                let now = Instant::now();
                let sent = sendto(
                    self.socket.as_raw_fd(),
                    &packet,
                    &destination,
                    MsgFlags::empty(),
                )
                .map(|_| now);
                round.sent(target, sent);
            }
        }
        round
    }

    /// Takes the replies queued on the socket (without waiting) and matches them to `round`.
    pub fn receive(&mut self, round: &mut Round) -> Result<()> {
        let mut buffer = [0u8; RECEIVE_BUFFER];
        for _ in 0..RECEIVE_BATCH {
            let (len, from) =
                match recvfrom::<SockaddrStorage>(self.socket.as_raw_fd(), &mut buffer) {
                    Ok(received) => received,
                    Err(Errno::EAGAIN) => return Ok(()),
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        return Err(Error::io(socket_name(&self.link, "receive"), e.into()));
                    }
                };
            let now = Instant::now();
            let datagram = &buffer[..len.min(RECEIVE_BUFFER)];
            let reply = match self.family {
                Family::Ipv4 => parse_echo_reply(datagram),
                Family::Ipv6 => from
                    .as_ref()
                    .and_then(SockaddrStorage::as_sockaddr_in6)
                    .and_then(|from| parse_echo6_reply(datagram, IpAddr::V6(from.ip()))),
            };
            let Some(reply) = reply else {
                continue;
            };
            if reply.ident != self.ident || !reply.payload.starts_with(&self.token) {
                continue;
            }
            round.answered(reply.source, reply.seq, now);
        }
        Ok(())
    }

    /// Runs `round` to its end: until every reply is in or its deadline has passed.
    pub fn wait(&mut self, mut round: Round) -> Result<RoundReport> {
        loop {
            self.receive(&mut round)?;
            let left = round.deadline().saturating_duration_since(Instant::now());
            if round.is_complete() || left.is_zero() {
                return Ok(round.finish());
            }
            // Round up to whole milliseconds so the last poll does not return early and spin.
            let millis = left.as_micros().div_ceil(1000);
            let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::io(socket_name(&self.link, "poll"), e.into())),
            }
        }
    }

    /// One whole round, for callers that track a single link.
    pub fn probe(&mut self, track: &TrackConfig) -> Result<RoundReport> {
        let round = self.start(track);
        self.wait(round)
    }
}

impl AsFd for Prober {
    /// The socket to poll for readability in an event loop.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// How errors name the socket of `link` and the step that failed on it.
fn socket_name(link: &str, step: &str) -> String {
    format!("ICMP socket of link '{link}': {step}")
}

/// Tells the kernel to queue only echo replies on the socket, so the router's other ICMP
/// traffic (on IPv6: neighbour and router discovery too) does not wake us or count.
fn only_echo_replies(socket: &OwnedFd, family: Family) -> std::result::Result<(), Errno> {
    let (level, option, blocked) = match family {
        Family::Ipv4 => {
            let mut blocked = [0u32; 8];
            blocked[0] = !(1u32 << ECHO_REPLY);
            (libc::SOL_RAW, ICMP_FILTER, blocked)
        }
        Family::Ipv6 => {
            let mut blocked = [u32::MAX; 8];
            blocked[usize::from(ECHO6_REPLY >> 5)] &= !(1u32 << (ECHO6_REPLY & 31));
            (libc::IPPROTO_ICMPV6, ICMP6_FILTER, blocked)
        }
    };
    // ICMP_FILTER reads one u32, ICMP6_FILTER all eight.
    let len = match family {
        Family::Ipv4 => std::mem::size_of::<u32>(),
        Family::Ipv6 => std::mem::size_of_val(&blocked),
    };
    // SAFETY: the pointer and length describe (a prefix of) `blocked`, a live array of u32,
    // the type the kernel reads for both options; the fd is owned and open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            blocked.as_ptr().cast(),
            len as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// A fresh random value for a socket's identifier and token. Not secret: it only has to differ
/// from other pingers on the host. Every `RandomState` has new keys, seeded by std from the OS
/// without blocking, even early at boot.
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::testns::{Netns, veth};
    use std::net::Ipv4Addr;

    const TARGET_V4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
    const TARGET: IpAddr = IpAddr::V4(TARGET_V4);
    const LINK2_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 201, 2, 2));
    const LINK2_MARK: u32 = 0x200;

    #[test]
    fn oversized_round_is_a_config_error() {
        let route = LinkRoute {
            name: "wanb".into(),
            family: Family::Ipv4,
            mark: LINK2_MARK,
            device: None,
            source: None,
        };
        let track = TrackConfig {
            track_ip: vec![TARGET, TARGET],
            count: 40_000,
            ..TrackConfig::default()
        };
        let error = Prober::open(&route, &track).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error
                .to_string()
                .starts_with("interface 'wanb' option 'count'"),
            "{error}"
        );
    }

    /// A prober namespace with two links to a target namespace. Link 1 (`w1`, the main
    /// table's default route) drops echo requests; link 2 (`w2`) answers them and is reached
    /// through `ip rule fwmark 0x200/0x3f00 lookup 102`. The target counts requests per link.
    struct Testbed {
        prober: Netns,
        target: Netns,
    }

    fn testbed() -> Testbed {
        let prober = Netns::new("prb");
        let target = Netns::new("tgt");
        veth(&prober, "w1", &target, "w1");
        veth(&prober, "w2", &target, "w2");
        prober.ip(&["addr", "add", "10.201.1.2/24", "dev", "w1"]);
        prober.ip(&["addr", "add", "10.201.2.2/24", "dev", "w2"]);
        target.ip(&["addr", "add", "10.201.1.1/24", "dev", "w1"]);
        target.ip(&["addr", "add", "10.201.2.1/24", "dev", "w2"]);
        target.ip(&["addr", "add", "172.30.0.1/32", "dev", "lo"]);
        prober.ip(&["route", "add", "default", "via", "10.201.1.1"]);
        prober.ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.201.2.1",
            "dev",
            "w2",
            "table",
            "102",
        ]);
        prober.ip(&["route", "add", "unreachable", "default", "table", "103"]);
        prober.ip(&[
            "rule",
            "add",
            "fwmark",
            "0x200/0x3f00",
            "lookup",
            "102",
            "pref",
            "1002",
        ]);
        prober.ip(&[
            "rule",
            "add",
            "fwmark",
            "0x300/0x3f00",
            "lookup",
            "103",
            "pref",
            "1003",
        ]);
        target.nft(
            r#"table inet probe_test {
                counter via_w1 {}
                counter via_w2 {}
                chain input {
                    type filter hook input priority 0; policy accept;
                    iifname "w1" icmp type echo-request counter name "via_w1" drop
                    iifname "w2" ip saddr 10.201.2.2 icmp type echo-request counter name "via_w2"
                }
            }"#,
        );
        Testbed { prober, target }
    }

    fn track(count: u32, timeout_ms: u64) -> TrackConfig {
        TrackConfig {
            track_ip: vec![TARGET],
            count,
            timeout: Duration::from_millis(timeout_ms),
            ..TrackConfig::default()
        }
    }

    fn open_in(
        ns: &Netns,
        mark: u32,
        device: Option<&str>,
        source: Option<IpAddr>,
        track: &TrackConfig,
    ) -> Prober {
        let route = LinkRoute {
            name: "test".into(),
            family: Family::of(&track.track_ip[0]),
            mark,
            device: device.map(str::to_string),
            source,
        };
        ns.enter(|| Prober::open(&route, track)).unwrap()
    }

    /// A testbed, rounds of 3 requests timing out after `timeout_ms`, and two probers bound
    /// to no device: one the mark steers through w2, one unmarked.
    fn marked_and_unmarked(timeout_ms: u64) -> (Testbed, TrackConfig, Prober, Prober) {
        let bed = testbed();
        let track = track(3, timeout_ms);
        let marked = open_in(&bed.prober, LINK2_MARK, None, None, &track);
        let unmarked = open_in(&bed.prober, 0, None, None, &track);
        (bed, track, marked, unmarked)
    }

    /// A prober bound to w2 with its source address, as the daemon opens one for a link.
    fn open_on_w2(bed: &Testbed, track: &TrackConfig) -> Prober {
        open_in(
            &bed.prober,
            LINK2_MARK,
            Some("w2"),
            Some(LINK2_SOURCE),
            track,
        )
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn the_mark_steers_the_probe_through_its_link() {
        let (bed, track, mut marked, mut unmarked) = marked_and_unmarked(500);

        // One round of 3 requests: (sent, received), then the target's (via w1, via w2).
        let round = |prober: &mut Prober| {
            let report = prober.probe(&track).unwrap();
            let counters = ["via_w1", "via_w2"].map(|c| bed.target.nft_counter("probe_test", c));
            (
                (report.targets[0].sent, report.targets[0].received),
                counters,
            )
        };
        assert_eq!(round(&mut marked), ((3, 3), [0, 3]));
        assert_eq!(round(&mut unmarked), ((3, 0), [3, 3]));
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn replies_to_another_socket_do_not_count() {
        let (_bed, track, mut marked, mut unmarked) = marked_and_unmarked(400);
        // Both rounds use sequence numbers 0..3 towards the same target, and neither socket is
        // bound to a device: the unmarked one sees the marked one's replies and must ignore them.
        let unmarked_round = unmarked.start(&track);
        let marked_round = marked.start(&track);
        let marked_report = marked.wait(marked_round).unwrap();
        let unmarked_report = unmarked.wait(unmarked_round).unwrap();
        assert_eq!(marked_report.targets[0].received, 3);
        assert_eq!(unmarked_report.targets[0].received, 0);
        assert_eq!(unmarked_report.summary().answered, 0);
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn link_probe_uses_device_and_source_and_ends_when_answered() {
        let bed = testbed();
        let track = track(3, 1000);
        let opened = Instant::now();
        let mut prober = open_on_w2(&bed, &track);
        let open_time = opened.elapsed();
        let mut rounds = Vec::new();
        for _ in 0..5 {
            let report = prober.probe(&track).unwrap();
            assert_eq!(report.summary().answered, 1, "{report:?}");
            assert_eq!(report.targets[0].received, 3);
            assert!(report.elapsed < track.timeout, "{report:?}");
            rounds.push(report);
        }
        assert_eq!(bed.target.nft_counter("probe_test", "via_w2"), 15);
        let rtt = rounds.iter().filter_map(|r| r.summary().rtt).max().unwrap();
        let elapsed = rounds.iter().map(|r| r.elapsed).max().unwrap();
        eprintln!(
            "figures: socket open (thread + setns + socket) {open_time:?}; answered round of 3 \
             requests: max elapsed {elapsed:?}, max mean rtt {rtt:?}"
        );
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn dropped_probes_report_loss_within_the_timeout_and_recover() {
        let bed = testbed();
        let track = track(3, 300);
        let mut prober = open_on_w2(&bed, &track);
        bed.target.nft(
            "table inet probe_drop {
                chain input {
                    type filter hook input priority -10;
                    icmp type echo-request drop
                }
            }",
        );
        let report = prober.probe(&track).unwrap();
        let target = &report.targets[0];
        assert_eq!(
            (target.sent, target.received, target.send_error),
            (3, 0, None)
        );
        assert_eq!(report.summary().answered, 0);
        assert!(report.elapsed >= track.timeout, "{report:?}");
        assert!(
            report.elapsed < track.timeout + Duration::from_millis(100),
            "{report:?}"
        );
        eprintln!(
            "figures: lost round with timeout {:?} took {:?}",
            track.timeout, report.elapsed
        );

        bed.target.nft("delete table inet probe_drop");
        let report = prober.probe(&track).unwrap();
        assert_eq!(report.summary().answered, 1, "{report:?}");
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn an_unroutable_link_fails_its_round_at_once() {
        let bed = testbed();
        let track = track(2, 1000);
        let mut prober = open_in(&bed.prober, 0x300, None, None, &track);
        let report = prober.probe(&track).unwrap();
        let target = &report.targets[0];
        assert_eq!((target.sent, target.received), (0, 0));
        assert!(target.send_error.is_some(), "{report:?}");
        assert!(report.elapsed < Duration::from_millis(100), "{report:?}");
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn opening_on_a_missing_device_names_the_link_and_step() {
        let bed = testbed();
        let route = LinkRoute {
            name: "wanb".into(),
            family: Family::Ipv4,
            mark: LINK2_MARK,
            device: Some("nosuchdev".into()),
            source: None,
        };
        let error = bed
            .prober
            .enter(|| Prober::open(&route, &track(1, 100)))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("link 'wanb': SO_BINDTODEVICE nosuchdev"),
            "{error}"
        );
    }
}
