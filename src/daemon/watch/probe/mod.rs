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
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
use crate::daemon::health::{RoundSummary, TrackConfig};
use crate::error::{Error, Result};

/// The ICMP type of an echo request.
const ECHO_REQUEST: u8 = 8;
/// The ICMP type of an echo reply.
const ECHO_REPLY: u8 = 0;
/// The ICMPv6 type of an echo request.
const ECHO6_REQUEST: u8 = 128;
/// The ICMPv6 type of an echo reply.
const ECHO6_REPLY: u8 = 129;
/// `ICMP_FILTER` from `<linux/icmp.h>` (not in the libc crate): a bitmask of ICMP types a raw
/// socket does not want to receive.
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` from `<linux/icmpv6.h>`: 256 bits, one per ICMPv6 type, set = blocked.
const ICMP6_FILTER: libc::c_int = 1;
/// ICMP header (type, code, checksum, identifier, sequence).
const ICMP_HEADER_LEN: usize = 8;
/// Our payload: the socket's token, then zeros.
const PAYLOAD_LEN: usize = 16;
const TOKEN_LEN: usize = 8;
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

/// One link's probing socket and the targets it probes.
#[derive(Debug)]
pub struct Prober {
    /// The link's name, for messages.
    link: String,
    family: Family,
    socket: OwnedFd,
    ident: u16,
    token: [u8; TOKEN_LEN],
    next_seq: u16,
    targets: Vec<SocketAddr>,
    count: u16,
    timeout: Duration,
}

/// One round in flight: the requests sent and the replies matched so far.
#[derive(Debug)]
pub struct Round {
    started: Instant,
    deadline: Instant,
    first_seq: u16,
    count: usize,
    /// Index `i` was sent to target `i / count` with sequence `first_seq + i`.
    requests: Vec<Request>,
    outstanding: usize,
}

#[derive(Debug)]
struct Request {
    target: IpAddr,
    sent: Result<Instant, Errno>,
    rtt: Option<Duration>,
}

/// What one target did in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    pub target: IpAddr,
    /// Requests that left the socket.
    pub sent: u32,
    /// Requests answered (duplicates count once).
    pub received: u32,
    /// Mean round-trip time of the answered requests.
    pub rtt: Option<Duration>,
    /// Why a request could not be sent (no route, device down, ...), if one could not.
    pub send_error: Option<Errno>,
}

/// The outcome of a whole round, per target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub targets: Vec<TargetReport>,
    /// From the first request to the end of the round.
    pub elapsed: Duration,
}

impl RoundReport {
    /// The part of the round that health decides on.
    pub fn summary(&self) -> RoundSummary {
        let answered = self.targets.iter().filter(|t| t.received > 0).count();
        let (replies, total) = self
            .targets
            .iter()
            .filter_map(|t| t.rtt)
            .fold((0u32, Duration::ZERO), |(n, sum), rtt| (n + 1, sum + rtt));
        RoundSummary {
            answered: u32::try_from(answered).unwrap_or(u32::MAX),
            rtt: (replies > 0).then(|| total / replies),
        }
    }
}

impl Round {
    /// When the round gives up on the replies still missing.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether every request that was sent has been answered.
    pub fn is_complete(&self) -> bool {
        self.outstanding == 0
    }

    /// Closes the round: whatever has not been answered by now is lost.
    pub fn finish(self) -> RoundReport {
        let elapsed = self.started.elapsed();
        let targets = self
            .requests
            .chunks(self.count.max(1))
            .filter_map(|requests| {
                let first = requests.first()?;
                let rtts: Vec<Duration> = requests.iter().filter_map(|r| r.rtt).collect();
                let received = u32::try_from(rtts.len()).unwrap_or(u32::MAX);
                Some(TargetReport {
                    target: first.target,
                    sent: u32::try_from(requests.iter().filter(|r| r.sent.is_ok()).count())
                        .unwrap_or(u32::MAX),
                    received,
                    rtt: (received > 0).then(|| rtts.iter().sum::<Duration>() / received),
                    send_error: requests.iter().find_map(|r| r.sent.err()),
                })
            })
            .collect();
        RoundReport { targets, elapsed }
    }
}

impl Prober {
    /// Opens the link's socket. Needs `CAP_NET_RAW` (the daemon runs as root).
    pub fn open(route: &LinkRoute, track: &TrackConfig) -> Result<Prober> {
        let section = format!("interface '{}'", route.name);
        let requests = u64::from(track.count) * track.track_ip.len() as u64;
        let count = u16::try_from(track.count)
            .ok()
            .filter(|_| requests <= u64::from(u16::MAX))
            .ok_or_else(|| {
                Error::config(
                    &section,
                    Some("count"),
                    format!(
                        "{} requests to each of {} targets exceed {} per round",
                        track.count,
                        track.track_ip.len(),
                        u16::MAX
                    ),
                )
            })?;
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
        // A link-local target is only meaningful on the link's device.
        let targets = track
            .track_ip
            .iter()
            .map(|&ip| match (ip, is_link_local(&ip)) {
                (IpAddr::V6(v6), true) => {
                    SocketAddr::V6(std::net::SocketAddrV6::new(v6, 0, 0, scope))
                }
                _ => SocketAddr::new(ip, 0),
            })
            .collect();
        Ok(Prober {
            link: route.name.clone(),
            family: route.family,
            socket,
            ident: random_u64() as u16,
            token: random_u64().to_be_bytes(),
            next_seq: 0,
            targets,
            count,
            timeout: track.timeout,
        })
    }

    /// Sends one round: `count` echo requests to each target, back to back. A request that
    /// cannot be sent is recorded as lost with its reason; it is not an error of the round.
    pub fn start(&mut self) -> Round {
        self.start_with(self.count, self.timeout)
    }

    /// Sends a round of `count` requests to each target that gives up after `timeout`: the
    /// confirmation burst of a suspect link.
    pub fn start_with(&mut self, count: u16, timeout: Duration) -> Round {
        let count = usize::from(count);
        let first_seq = self.next_seq;
        let started = Instant::now();
        let mut requests = Vec::with_capacity(self.targets.len() * count);
        for &target in &self.targets {
            for _ in 0..count {
                let packet = echo_request(self.family, self.ident, self.next_seq, &self.token);
                self.next_seq = self.next_seq.wrapping_add(1);
                let destination = SockaddrStorage::from(target);
                let now = Instant::now();
                let sent = sendto(
                    self.socket.as_raw_fd(),
                    &packet,
                    &destination,
                    MsgFlags::empty(),
                )
                .map(|_| now);
                requests.push(Request {
                    target: target.ip(),
                    sent,
                    rtt: None,
                });
            }
        }
        Round {
            started,
            deadline: started + timeout,
            first_seq,
            count,
            outstanding: requests.iter().filter(|r| r.sent.is_ok()).count(),
            requests,
        }
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
            let index = usize::from(reply.seq.wrapping_sub(round.first_seq));
            let Some(request) = round.requests.get_mut(index) else {
                continue;
            };
            if request.target != reply.source || request.rtt.is_some() {
                continue;
            }
            if let Ok(sent) = request.sent {
                request.rtt = Some(now.saturating_duration_since(sent));
                round.outstanding = round.outstanding.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Runs `round` to its end: until every reply is in or its deadline has passed.
    pub fn wait(&mut self, mut round: Round) -> Result<RoundReport> {
        loop {
            self.receive(&mut round)?;
            let left = round.deadline.saturating_duration_since(Instant::now());
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
    pub fn probe(&mut self) -> Result<RoundReport> {
        let round = self.start();
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

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u64 = (&mut chunks)
        .map(|pair| u64::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request of `family`; ICMPv6 checksums cover a pseudo-header only the kernel knows,
/// so it fills them in.
fn echo_request(
    family: Family,
    ident: u16,
    seq: u16,
    token: &[u8; TOKEN_LEN],
) -> [u8; ICMP_HEADER_LEN + PAYLOAD_LEN] {
    let mut packet = [0u8; ICMP_HEADER_LEN + PAYLOAD_LEN];
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    packet[ICMP_HEADER_LEN..ICMP_HEADER_LEN + TOKEN_LEN].copy_from_slice(token);
    match family {
        Family::Ipv4 => {
            packet[0] = ECHO_REQUEST;
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        Family::Ipv6 => packet[0] = ECHO6_REQUEST,
    }
    packet
}

/// The fields of an echo reply that matching needs.
#[derive(Debug, PartialEq, Eq)]
struct EchoReply<'a> {
    source: IpAddr,
    ident: u16,
    seq: u16,
    payload: &'a [u8],
}

/// Reads an IPv4 datagram as received on a raw socket; `None` unless it is a well-formed echo
/// reply with a valid checksum.
fn parse_echo_reply(datagram: &[u8]) -> Option<EchoReply<'_>> {
    let first = *datagram.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || datagram.get(9) != Some(&(libc::IPPROTO_ICMP as u8)) {
        return None;
    }
    let source = Ipv4Addr::new(
        *datagram.get(12)?,
        *datagram.get(13)?,
        *datagram.get(14)?,
        *datagram.get(15)?,
    );
    let icmp = datagram.get(header_len..)?;
    if icmp.len() < ICMP_HEADER_LEN || icmp[0] != ECHO_REPLY || icmp[1] != 0 || checksum(icmp) != 0
    {
        return None;
    }
    Some(EchoReply {
        source: IpAddr::V4(source),
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[ICMP_HEADER_LEN..],
    })
}

/// Reads an ICMPv6 message from `source` as received on a raw ICMPv6 socket (no IP header;
/// the kernel has verified the checksum); `None` unless it is an echo reply.
fn parse_echo6_reply(icmp: &[u8], source: IpAddr) -> Option<EchoReply<'_>> {
    if icmp.len() < ICMP_HEADER_LEN || icmp[0] != ECHO6_REPLY || icmp[1] != 0 {
        return None;
    }
    Some(EchoReply {
        source,
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[ICMP_HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::testns::{Netns, veth};

    const TARGET_V4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
    const TARGET: IpAddr = IpAddr::V4(TARGET_V4);
    const LINK2_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 201, 2, 2));
    const LINK2_MARK: u32 = 0x200;

    #[test]
    fn checksum_matches_rfc1071_example() {
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(
            checksum(&[0x01]),
            !0x0100,
            "odd length pads with a zero byte"
        );
    }

    /// An IPv4 datagram from `source` carrying `icmp`, as a raw socket delivers it.
    fn datagram(source: Ipv4Addr, icmp: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        ip.extend(source.octets());
        ip.extend([10, 201, 2, 2]);
        ip.extend(icmp);
        ip
    }

    /// The reply a target would send to `request`.
    fn reply_to(request: &[u8]) -> Vec<u8> {
        let mut reply = request.to_vec();
        reply[0] = ECHO_REPLY;
        reply[2..4].fill(0);
        let sum = checksum(&reply);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        reply
    }

    #[test]
    fn echo_request_is_well_formed_and_its_reply_parses() {
        let token = *b"abcdefgh";
        let request = echo_request(Family::Ipv4, 0x1234, 0xfffe, &token);
        assert_eq!(request[0], ECHO_REQUEST);
        assert_eq!(checksum(&request), 0);
        let packet = datagram(TARGET_V4, &reply_to(&request));
        let reply = parse_echo_reply(&packet).unwrap();
        assert_eq!(reply.source, TARGET);
        assert_eq!((reply.ident, reply.seq), (0x1234, 0xfffe));
        assert!(reply.payload.starts_with(&token));
    }

    #[test]
    fn parse_rejects_what_is_not_a_valid_echo_reply() {
        let reply = reply_to(&echo_request(Family::Ipv4, 7, 1, b"abcdefgh"));
        let mut bad_sum = reply.clone();
        bad_sum[9] ^= 0xff;
        let mut request = reply.clone();
        request[0] = ECHO_REQUEST;
        let mut not_icmp = datagram(TARGET_V4, &reply);
        not_icmp[9] = 17;
        assert!(parse_echo_reply(&datagram(TARGET_V4, &bad_sum)).is_none());
        assert!(parse_echo_reply(&datagram(TARGET_V4, &request)).is_none());
        assert!(parse_echo_reply(&not_icmp).is_none());
        assert!(parse_echo_reply(&datagram(TARGET_V4, &reply[..6])).is_none());
        assert!(parse_echo_reply(&[0x45, 0, 0]).is_none());
        assert!(parse_echo_reply(&[]).is_none());
    }

    #[test]
    fn only_icmpv6_echo_replies_parse_never_discovery_messages() {
        let source: IpAddr = "fe80::1".parse().unwrap();
        let request = echo_request(Family::Ipv6, 7, 9, b"abcdefgh");
        assert_eq!(request[0], ECHO6_REQUEST);
        let mut reply = request.to_vec();
        reply[0] = ECHO6_REPLY;
        let parsed = parse_echo6_reply(&reply, source).unwrap();
        assert_eq!((parsed.ident, parsed.seq, parsed.source), (7, 9, source));
        assert!(parsed.payload.starts_with(b"abcdefgh"));
        // Echo request, router advertisement, neighbour solicitation and advertisement.
        for kind in [ECHO6_REQUEST, 134, 135, 136] {
            let mut other = reply.clone();
            other[0] = kind;
            assert!(parse_echo6_reply(&other, source).is_none(), "type {kind}");
        }
        assert!(parse_echo6_reply(&reply[..7], source).is_none());
    }

    #[test]
    fn summary_counts_targets_with_any_reply_and_averages_their_rtt() {
        let target = |received, rtt_ms: Option<u64>| TargetReport {
            target: TARGET,
            sent: 3,
            received,
            rtt: rtt_ms.map(Duration::from_millis),
            send_error: None,
        };
        let report = RoundReport {
            targets: vec![target(1, Some(10)), target(0, None), target(3, Some(30))],
            elapsed: Duration::from_millis(40),
        };
        let summary = report.summary();
        assert_eq!(summary.answered, 2);
        assert_eq!(summary.rtt, Some(Duration::from_millis(20)));
    }

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

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn the_mark_steers_the_probe_through_its_link() {
        let bed = testbed();
        let track = track(3, 500);
        let mut marked = open_in(&bed.prober, LINK2_MARK, None, None, &track);
        let mut unmarked = open_in(&bed.prober, 0, None, None, &track);

        // One round of 3 requests: (sent, received), then the target's (via w1, via w2).
        let round = |prober: &mut Prober| {
            let report = prober.probe().unwrap();
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
        let bed = testbed();
        let track = track(3, 400);
        let mut marked = open_in(&bed.prober, LINK2_MARK, None, None, &track);
        let mut unmarked = open_in(&bed.prober, 0, None, None, &track);
        // Both rounds use sequence numbers 0..3 towards the same target, and neither socket is
        // bound to a device: the unmarked one sees the marked one's replies and must ignore them.
        let unmarked_round = unmarked.start();
        let marked_round = marked.start();
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
        let mut prober = open_in(
            &bed.prober,
            LINK2_MARK,
            Some("w2"),
            Some(LINK2_SOURCE),
            &track,
        );
        let open_time = opened.elapsed();
        let mut rounds = Vec::new();
        for _ in 0..5 {
            let report = prober.probe().unwrap();
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
        let mut prober = open_in(
            &bed.prober,
            LINK2_MARK,
            Some("w2"),
            Some(LINK2_SOURCE),
            &track,
        );
        bed.target.nft(
            "table inet probe_drop {
                chain input {
                    type filter hook input priority -10;
                    icmp type echo-request drop
                }
            }",
        );
        let report = prober.probe().unwrap();
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
        let report = prober.probe().unwrap();
        assert_eq!(report.summary().answered, 1, "{report:?}");
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn an_unroutable_link_fails_its_round_at_once() {
        let bed = testbed();
        let track = track(2, 1000);
        let mut prober = open_in(&bed.prober, 0x300, None, None, &track);
        let report = prober.probe().unwrap();
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
