//! The netlink pieces the daemon's watchers share: sockets subscribed to event groups, and
//! reading messages and attributes out of what they receive (no allocation per message).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};

use crate::error::{Error, Result};

pub const HEADER_LEN: usize = 16;
/// `struct nfgenmsg`, after the header of every nfnetlink message.
pub const NFGENMSG_LEN: usize = 4;
/// `NLA_F_NESTED | NLA_F_NET_BYTEORDER`: flag bits of an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A nonblocking netlink socket of `protocol`, joined to the multicast `groups` (numbers as
/// the kernel headers give them, 1-based), with a receive buffer of `buffer` bytes (forced
/// past the system limit when we are root, so bursts of events are not lost).
pub fn open(protocol: SockProtocol, groups: &[u32], buffer: usize, what: &str) -> Result<OwnedFd> {
    let io = |step: &str, e: Errno| Error::io(format!("{what}: {step}"), e.into());
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .map_err(|e| io("socket", e))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| io("bind", e))?;
    if setsockopt(&fd, sockopt::RcvBufForce, &buffer).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &buffer).map_err(|e| io("SO_RCVBUF", e))?;
    }
    for &group in groups {
        join(&fd, group).map_err(|e| io(&format!("join group {group}"), e))?;
    }
    Ok(fd)
}

/// `NETLINK_ADD_MEMBERSHIP`: groups above 32 cannot be given to bind.
fn join(fd: &OwnedFd, group: u32) -> std::result::Result<(), Errno> {
    // SAFETY: the pointer and length describe `group`, a live u32, as the kernel expects; the
    // fd is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            (&raw const group).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// What one nonblocking receive gave.
pub enum Received {
    /// A datagram of this length is in the buffer.
    Data(usize),
    /// Nothing queued.
    Empty,
    /// The kernel dropped messages because the buffer was full: the listener must resync.
    Overrun,
}

/// Takes one datagram without waiting.
pub fn receive(fd: &OwnedFd, buffer: &mut [u8], what: &str) -> Result<Received> {
    loop {
        return match recv(fd.as_raw_fd(), buffer, MsgFlags::MSG_DONTWAIT) {
            Ok(len) => Ok(Received::Data(len)),
            Err(Errno::EAGAIN) => Ok(Received::Empty),
            Err(Errno::ENOBUFS) => Ok(Received::Overrun),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(Error::io(format!("{what}: receive"), e.into())),
        };
    }
}

/// Sends one datagram (one or more requests back to back).
pub fn send_all(fd: &OwnedFd, data: &[u8], what: &str) -> Result<()> {
    loop {
        return match send(fd.as_raw_fd(), data, MsgFlags::empty()) {
            Ok(_) => Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(Error::io(format!("{what}: send"), e.into())),
        };
    }
}

/// One message of a datagram.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub kind: u16,
    /// Everything after the netlink header.
    pub payload: &'a [u8],
}

/// The messages of a datagram; stops at the first malformed one.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        if len < HEADER_LEN || len > rest.len() {
            return None;
        }
        let header = &rest[..HEADER_LEN];
        let message = Message {
            kind: u16::from_ne_bytes([header[4], header[5]]),
            payload: &rest[HEADER_LEN..len],
        };
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some(message)
    })
}

impl Message<'_> {
    /// The error an `NLMSG_ERROR` message carries (0 for an acknowledgement, a negative errno
    /// otherwise); `None` for any other message.
    pub fn error_code(&self) -> Option<i32> {
        if i32::from(self.kind) != libc::NLMSG_ERROR {
            return None;
        }
        Some(i32::from_ne_bytes(self.payload.get(0..4)?.try_into().ok()?))
    }
}

/// One attribute: its type (flags stripped), its value, and the whole attribute as sent.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub kind: u16,
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

impl Attr<'_> {
    /// A big-endian u32 value (netfilter's byte order).
    pub fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.value.get(0..4)?.try_into().ok()?))
    }

    /// A host-order u32 value (rtnetlink's).
    pub fn ne32(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.value.get(0..4)?.try_into().ok()?))
    }

    /// A NUL-terminated string value.
    pub fn text(&self) -> &str {
        let end = self
            .value
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.value.len());
        std::str::from_utf8(&self.value[..end]).unwrap_or_default()
    }
}

/// The attributes in `data`; stops at the first malformed one.
pub fn attrs(data: &[u8]) -> impl Iterator<Item = Attr<'_>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(rest.get(0..2)?.try_into().ok()?));
        if len < 4 || len > rest.len() {
            return None;
        }
        let attr = Attr {
            kind: u16::from_ne_bytes(rest[2..4].try_into().ok()?) & NLA_TYPE_MASK,
            value: &rest[4..len],
            raw: &rest[..len],
        };
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some(attr)
    })
}

/// The first attribute of type `kind` in `data`.
pub fn attr(data: &[u8], kind: u16) -> Option<Attr<'_>> {
    attrs(data).find(|a| a.kind == kind)
}

/// Appends a netlink header for a message of `len` bytes (header included).
pub fn push_header(out: &mut Vec<u8>, len: usize, kind: u16, flags: u16, seq: u32) {
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
}

/// Appends an attribute carrying a big-endian u32.
pub fn push_be32(out: &mut Vec<u8>, kind: u16, value: u32) {
    out.extend_from_slice(&8u16.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_attributes_round_trip() {
        let mut datagram = Vec::new();
        for seq in [1u32, 2] {
            let mut body = vec![2u8, 0, 0, 0];
            push_be32(&mut body, 8, 0x200 * seq);
            // A nested attribute holding a string, with padding after it.
            body.extend_from_slice(&(4u16 + 6).to_ne_bytes());
            body.extend_from_slice(&(0x8000u16 | 1).to_ne_bytes());
            body.extend_from_slice(b"wan2\0\0\0\0");
            push_header(&mut datagram, HEADER_LEN + body.len(), 0x100, 0, seq);
            datagram.extend(body);
        }
        let found: Vec<(u16, Option<u32>, String)> = messages(&datagram)
            .map(|m| {
                let attrs = &m.payload[NFGENMSG_LEN..];
                (
                    m.kind,
                    attr(attrs, 8).and_then(|a| a.be32()),
                    attr(attrs, 1)
                        .map(|a| a.text().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (0x100, Some(0x200), "wan2".into()),
                (0x100, Some(0x400), "wan2".into())
            ]
        );
        assert_eq!(messages(&datagram[..20]).count(), 0, "truncated");
        assert_eq!(
            attrs(&[3, 0, 1, 0]).count(),
            0,
            "attribute shorter than its header"
        );
    }

    /// The bytes on this target: the netlink header and attribute headers in host order (the
    /// kernel reads them as native integers), a netfilter value such as a mark big-endian, so a
    /// big-endian router's header differs from a little-endian one's and the value does not.
    #[test]
    fn header_and_attribute_bytes_follow_the_byte_order() {
        let mut out = Vec::new();
        push_header(&mut out, 24, 0x0102, 0x0005, 7);
        push_be32(&mut out, 8, 0x3f00);
        let expected: [u8; 24] = if cfg!(target_endian = "big") {
            [
                0, 0, 0, 24, 1, 2, 0, 5, 0, 0, 0, 7, 0, 0, 0, 0, 0, 8, 0, 8, 0, 0, 0x3f, 0,
            ]
        } else {
            [
                24, 0, 0, 0, 2, 1, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0, 8, 0, 8, 0, 0, 0, 0x3f, 0,
            ]
        };
        assert_eq!(out, expected);
        let message = messages(&out).next().expect("one message");
        assert_eq!(message.kind, 0x0102);
        let mark = attr(message.payload, 8).expect("the mark");
        assert_eq!(mark.be32(), Some(0x3f00));
    }

    /// A message or attribute length past the end stops the walk: on a 32-bit target a length
    /// near `u32::MAX` must not wrap the offset round to the start.
    #[test]
    fn lengths_past_the_end_stop_the_walk() {
        for len in [0xffff_fffd_u32, 0x8000_0000, 17] {
            let mut datagram = Vec::new();
            push_header(&mut datagram, 16, 1, 0, 1);
            datagram[0..4].copy_from_slice(&len.to_ne_bytes());
            assert_eq!(messages(&datagram).count(), 0, "length {len:#x}");
        }
        assert_eq!(attrs(&[0xff, 0xff, 1, 0]).count(), 0);
    }
}
