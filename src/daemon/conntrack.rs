//! Deleting one link's conntrack entries, and only those, through ctnetlink.
//!
//! One netlink request (`IPCTNL_MSG_CT_DELETE` without a tuple, with `CTA_MARK` and
//! `CTA_MARK_MASK`) makes the kernel flush exactly the entries whose mark under our mask is the
//! link's mark (Linux 4.9 and later): no dump to user space, no process, and the rest of the
//! table is never touched. The kernel answers with an acknowledgement carrying the result.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use crate::error::{Error, Result};

/// The ctnetlink subsystem of nfnetlink, in the high byte of the message type.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// Delete conntrack entries; without a tuple it flushes every entry matching the filter.
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// Attribute types from `<linux/netfilter/nfnetlink_conntrack.h>`.
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;
const NFNETLINK_V0: u8 = 0;
const NLMSG_HEADER_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// An attribute carrying one u32: 4 bytes of header, 4 of value.
const U32_ATTR_LEN: usize = 8;
/// How long to wait for the kernel's acknowledgement (it answers while handling the request,
/// so this only guards against the impossible).
const ACK_TIMEOUT_SECS: i64 = 2;

/// What errors call the socket.
const SOCKET_NAME: &str = "ctnetlink socket";

/// Deletes every conntrack entry whose `mark & mask == mark`, IPv4 and IPv6 alike (a flush
/// request of nfnetlink version 0 is not limited to its `nfgen_family`, and a link's mark is
/// only ever set on its own family's connections); entries of other links and unmarked ones
/// stay.
pub fn delete_marked(mark: u32, mask: u32) -> Result<()> {
    let io = |step: &str, e: Errno| Error::io(format!("{SOCKET_NAME}: {step}"), e.into());
    let socket: OwnedFd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| io("socket", e))?;
    bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| io("bind", e))?;
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::new(ACK_TIMEOUT_SECS, 0),
    )
    .map_err(|e| io("SO_RCVTIMEO", e))?;
    let seq = std::process::id();
    let message = delete_request(seq, mark, mask);
    sendto(
        socket.as_raw_fd(),
        &message,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|e| io("send", e))?;
    let mut buffer = [0u8; 512];
    loop {
        let len = match recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
            Ok(len) => len,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io("receive", e)),
        };
        match ack_status(&buffer[..len], seq) {
            Some(Ok(())) => return Ok(()),
            Some(Err(errno)) => {
                return Err(io(
                    &format!("delete entries with mark {mark:#x}/{mask:#x}"),
                    errno,
                ));
            }
            None => continue,
        }
    }
}

/// The request: netlink header, nfnetlink header (IPv4), mark and mask attributes.
fn delete_request(seq: u32, mark: u32, mask: u32) -> Vec<u8> {
    let len = NLMSG_HEADER_LEN + NFGENMSG_LEN + 2 * U32_ATTR_LEN;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[libc::AF_INET as u8, NFNETLINK_V0, 0, 0]);
    for (kind, value) in [(CTA_MARK, mark), (CTA_MARK_MASK, mask)] {
        out.extend_from_slice(&(U32_ATTR_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

/// The result carried by the acknowledgement of request `seq` in `datagram`; `None` when the
/// datagram holds no such acknowledgement.
fn ack_status(datagram: &[u8], seq: u32) -> Option<Result<(), Errno>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            datagram.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let mut at = 0;
    while at + NLMSG_HEADER_LEN <= datagram.len() {
        let len = u32_at(at)? as usize;
        let kind = u16::from_ne_bytes(datagram.get(at + 4..at + 6)?.try_into().ok()?);
        if len < NLMSG_HEADER_LEN {
            return None;
        }
        if i32::from(kind) == libc::NLMSG_ERROR && u32_at(at + 8)? == seq {
            let code = u32_at(at + NLMSG_HEADER_LEN)? as i32;
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(Errno::from_raw(-code))
            });
        }
        at += len.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::testns::Netns;

    #[test]
    fn request_layout() {
        let request = delete_request(7, 0x200, 0x3f00);
        assert_eq!(request.len(), 36);
        assert_eq!(u32::from_ne_bytes(request[0..4].try_into().unwrap()), 36);
        assert_eq!(
            u16::from_ne_bytes(request[4..6].try_into().unwrap()),
            0x0102
        );
        assert_eq!(u16::from_ne_bytes(request[6..8].try_into().unwrap()), 0x5);
        assert_eq!(u32::from_ne_bytes(request[8..12].try_into().unwrap()), 7);
        assert_eq!(request[16..20], [2, 0, 0, 0]);
        assert_eq!(u16::from_ne_bytes(request[22..24].try_into().unwrap()), 8);
        assert_eq!(request[24..28], [0, 0, 0x02, 0]);
        assert_eq!(u16::from_ne_bytes(request[30..32].try_into().unwrap()), 21);
        assert_eq!(request[32..36], [0, 0, 0x3f, 0]);
    }

    fn ack(seq: u32, code: i32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&36u32.to_ne_bytes());
        out.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&code.to_ne_bytes());
        out.extend_from_slice(&[0u8; 16]);
        out
    }

    #[test]
    fn acknowledgements_are_matched_by_sequence() {
        assert_eq!(ack_status(&ack(7, 0), 7), Some(Ok(())));
        assert_eq!(
            ack_status(&ack(7, -libc::EOPNOTSUPP), 7),
            Some(Err(Errno::EOPNOTSUPP))
        );
        assert_eq!(ack_status(&ack(8, 0), 7), None);
        let mut two = ack(8, 0);
        two.extend(ack(7, -libc::EPERM));
        assert_eq!(ack_status(&two, 7), Some(Err(Errno::EPERM)));
        assert_eq!(ack_status(&[1, 2, 3], 7), None);
        assert_eq!(ack_status(&[0u8; 20], 7), None);
    }

    /// Inserts an established TCP entry from `sport` with `mark` into `ns`'s conntrack table,
    /// IPv6 for odd ports.
    fn insert(ns: &Netns, sport: u16, mark: u32) {
        let (src, dst) = if sport % 2 == 1 {
            ("fd77::2", "fd99::1")
        } else {
            ("10.77.0.2", "10.78.0.1")
        };
        ns.exec(&[
            "conntrack",
            "-I",
            "-p",
            "tcp",
            "-s",
            src,
            "-d",
            dst,
            "--sport",
            &sport.to_string(),
            "--dport",
            "80",
            "--state",
            "ESTABLISHED",
            "-u",
            "SEEN_REPLY",
            "-t",
            "120",
            "-m",
            &mark.to_string(),
        ]);
    }

    /// The marks of the entries in `ns`'s conntrack table (both families), sorted.
    fn marks(ns: &Netns) -> Vec<u32> {
        let listing = ["ipv4", "ipv6"].map(|family| ns.exec(&["conntrack", "-L", "-f", family]));
        let mut marks: Vec<u32> = listing
            .iter()
            .flat_map(|text| text.lines())
            .filter_map(|line| {
                let value = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("mark="))?;
                value.parse().ok()
            })
            .collect();
        marks.sort_unstable();
        marks
    }

    #[test]
    fn deletes_exactly_the_entries_of_one_link() {
        let ns = Netns::new("ct");
        // Ports alternate families: IPv6 entries with the link's mark go too.
        let entries = [
            0u32,
            0x200,
            0x100,
            0x1_0200,
            0x200 | 0x4000,
            0x300,
            0x3f00,
            0x300,
        ];
        for (i, mark) in entries.iter().enumerate() {
            insert(&ns, 40000 + i as u16, *mark);
        }
        assert_eq!(marks(&ns).len(), entries.len());
        ns.enter(|| delete_marked(0x200, 0x3f00)).unwrap();
        assert_eq!(marks(&ns), [0, 0x100, 0x300, 0x300, 0x3f00]);
        ns.enter(|| delete_marked(0x200, 0x3f00)).unwrap();
        assert_eq!(marks(&ns).len(), 5, "deleting nothing is no error");
    }
}
