//! The ICMP and ICMPv6 echo codec: requests built, replies read and checked, nothing sent.

use std::net::{IpAddr, Ipv4Addr};

use crate::config::Family;

/// The ICMP type of an echo request.
pub(super) const ECHO_REQUEST: u8 = 8;
/// The ICMP type of an echo reply.
pub(super) const ECHO_REPLY: u8 = 0;
/// The ICMPv6 type of an echo request.
pub(super) const ECHO6_REQUEST: u8 = 128;
/// The ICMPv6 type of an echo reply.
pub(super) const ECHO6_REPLY: u8 = 129;
/// ICMP header (type, code, checksum, identifier, sequence).
const ICMP_HEADER_LEN: usize = 8;
/// Our payload: the socket's token, then zeros.
const PAYLOAD_LEN: usize = 16;
pub(super) const TOKEN_LEN: usize = 8;

/// One echo request or reply at the IP layer (IPv4 or IPv6 header, no options), as a data plan
/// counts it: 44 bytes over IPv4, 64 over IPv6.
pub fn echo_ip_bytes(family: Family) -> u64 {
    let ip_header = match family {
        Family::Ipv4 => 20,
        Family::Ipv6 => 40,
    };
    (ip_header + ICMP_HEADER_LEN + PAYLOAD_LEN) as u64
}

/// The Internet checksum (RFC 1071) of `data`.
pub(super) fn checksum(data: &[u8]) -> u16 {
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
pub(super) fn echo_request(
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
pub(super) struct EchoReply<'a> {
    pub source: IpAddr,
    pub ident: u16,
    pub seq: u16,
    pub payload: &'a [u8],
}

/// Reads an IPv4 datagram as received on a raw socket; `None` unless it is a well-formed echo
/// reply with a valid checksum.
pub(super) fn parse_echo_reply(datagram: &[u8]) -> Option<EchoReply<'_>> {
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
pub(super) fn parse_echo6_reply(icmp: &[u8], source: IpAddr) -> Option<EchoReply<'_>> {
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

    const TARGET_V4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
    const TARGET: IpAddr = IpAddr::V4(TARGET_V4);

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
}
