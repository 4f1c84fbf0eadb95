//! ICMP and ICMPv6 echoes from a raw socket inside a namespace, each identifier its own
//! conntrack flow: what tells which link ping-like traffic leaves by.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrLike,
    SockaddrStorage, bind, recv, sendto, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use super::netns::Netns;
use super::traffic::{BATCH_DEADLINE, spawn_in};

/// How a batch of ICMP echoes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReport {
    pub replies: u64,
    pub failures: u64,
}

/// `count` ICMP echo requests from `ns` to `target` from a raw socket, with identifiers
/// `first_id..first_id + count` (each identifier is its own conntrack flow), one at a time.
pub fn icmp_echoes(ns: &Netns, target: Ipv4Addr, count: u16, first_id: u16) -> EchoReport {
    spawn_in(ns, move || {
        let socket = raw_socket(AddressFamily::Inet, SockProtocol::Icmp, "raw ICMP socket");
        let address = SockaddrIn::from(SocketAddrV4::new(target, 0));
        tally(count, first_id, |id| {
            echo_once(&socket, &echo_request(id, 1), &address, |reply| {
                is_echo_reply(reply, target, id)
            })
        })
    })
    .join()
    .expect("icmp client thread panicked")
}

/// `count` ICMPv6 echo requests from `source` in `ns` to `target`, with identifiers
/// `first_id..first_id + count` (each its own conntrack flow), one at a time.
pub fn icmp6_echoes(
    ns: &Netns,
    source: Ipv6Addr,
    target: Ipv6Addr,
    count: u16,
    first_id: u16,
) -> EchoReport {
    spawn_in(ns, move || {
        let socket = raw_socket(
            AddressFamily::Inet6,
            SockProtocol::IcmpV6,
            "raw ICMPv6 socket",
        );
        bind(
            socket.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(source.into(), 0)),
        )
        .expect("bind the ICMPv6 socket");
        let address = SockaddrStorage::from(SocketAddr::new(target.into(), 0));
        tally(count, first_id, |id| {
            echo_once(&socket, &echo6_request(id), &address, |reply| {
                is_echo6_reply(reply, id)
            })
        })
    })
    .join()
    .expect("icmpv6 client thread panicked")
}

/// A raw socket for `protocol` whose receives give up after 0.2 s, so a wait for a reply
/// can watch its own deadline.
fn raw_socket(family: AddressFamily, protocol: SockProtocol, what: &str) -> OwnedFd {
    let socket = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol).expect(what);
    setsockopt(&socket, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000))
        .expect("receive timeout");
    socket
}

/// Counts `echo(id)` for the identifiers `first_id..first_id + count`; those the batch
/// deadline leaves no time for are failures.
fn tally(count: u16, first_id: u16, mut echo: impl FnMut(u16) -> bool) -> EchoReport {
    let deadline = Instant::now() + BATCH_DEADLINE;
    let mut report = EchoReport {
        replies: 0,
        failures: 0,
    };
    for i in 0..count {
        if Instant::now() < deadline && echo(first_id.wrapping_add(i)) {
            report.replies += 1;
        } else {
            report.failures += 1;
        }
    }
    report
}

/// Sends `request` to `address` and waits up to 1 s for a packet `is_reply` accepts.
fn echo_once(
    socket: &OwnedFd,
    request: &[u8],
    address: &impl SockaddrLike,
    is_reply: impl Fn(&[u8]) -> bool,
) -> bool {
    if sendto(socket.as_raw_fd(), request, address, MsgFlags::empty()).is_err() {
        return false;
    }
    let until = Instant::now() + Duration::from_secs(1);
    let mut buffer = [0u8; 1500];
    while Instant::now() < until {
        let Ok(length) = recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) else {
            continue;
        };
        if is_reply(&buffer[..length]) {
            return true;
        }
    }
    false
}

/// An ICMPv6 echo request (type 128, code 0) with an 8-byte payload; the kernel fills in the
/// checksum of ICMPv6 raw sockets.
fn echo6_request(id: u16) -> Vec<u8> {
    let mut request = vec![128, 0, 0, 0];
    request.extend_from_slice(&id.to_be_bytes());
    request.extend_from_slice(&[0, 1]);
    request.extend_from_slice(b"cmlbtest");
    request
}

/// Whether `packet` (ICMPv6 raw sockets deliver no IP header) is an echo reply (type 129)
/// with identifier `id`.
fn is_echo6_reply(packet: &[u8], id: u16) -> bool {
    packet.len() >= 8 && packet[0] == 129 && u16::from_be_bytes([packet[4], packet[5]]) == id
}

/// An ICMP echo request (type 8) with an 8-byte payload.
fn echo_request(id: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![8, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(b"cmlbtest");
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// Whether `packet` (IPv4 header included, as raw sockets deliver it) is the echo reply from
/// `from` with identifier `id`.
fn is_echo_reply(packet: &[u8], from: Ipv4Addr, id: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let header = usize::from(first & 0x0f) * 4;
    if packet.len() < header + 8 || packet.len() < 20 {
        return false;
    }
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let icmp = &packet[header..];
    source == from && icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id
}

/// The one's-complement sum of RFC 1071.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero() {
        let packet = echo_request(0x1234, 1);
        assert_eq!(packet.len(), 16);
        assert_eq!(internet_checksum(&packet), 0);
        assert_eq!(&packet[4..6], &[0x12, 0x34]);
    }

    #[test]
    fn echo_reply_is_recognised_by_source_and_id() {
        let mut packet = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 172, 31, 255, 1, 192, 168, 77, 2,
        ];
        packet.extend_from_slice(&[0, 0, 0, 0, 0x00, 0x07, 0, 1]);
        let server = Ipv4Addr::new(172, 31, 255, 1);
        assert!(is_echo_reply(&packet, server, 7));
        assert!(!is_echo_reply(&packet, server, 8));
        assert!(!is_echo_reply(&packet, Ipv4Addr::new(172, 31, 255, 2), 7));
        packet[20] = 8;
        assert!(
            !is_echo_reply(&packet, server, 7),
            "a request is not a reply"
        );
    }
}
