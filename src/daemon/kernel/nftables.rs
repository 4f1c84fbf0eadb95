//! Questions to nf_tables over nfnetlink, without running `nft`.

use std::time::{Duration, Instant};

use nix::sys::socket::SockProtocol;

use super::netlink::{self, NFGENMSG_LEN, Received};
use crate::names::NFT_TABLE;

/// The nfnetlink subsystem of nf_tables.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// The table name: attribute 1 of table, chain, rule and set messages.
pub const NFTA_TABLE: u16 = 1;
/// The `inet` family, our table's.
pub const NFPROTO_INET: u8 = 1;
const QUERY_NAME: &str = "nftables query socket";

/// Whether our nft table exists, asked over nfnetlink (`NFT_MSG_GETTABLE`); an error other than
/// "no such table" counts as existing, so a failing question never causes a re-apply.
pub fn table_exists() -> bool {
    const NFT_MSG_GETTABLE: u16 = 1;
    let name = NFT_TABLE.strip_prefix("inet ").unwrap_or(NFT_TABLE);
    let Ok(fd) = netlink::open(SockProtocol::NetlinkNetFilter, &[], 1 << 16, QUERY_NAME) else {
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
    if netlink::send_all(&fd, &request, QUERY_NAME).is_err() {
        return true;
    }
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        match netlink::receive(&fd, &mut buffer, QUERY_NAME) {
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

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user opens no NETLINK_NETFILTER socket")]
    fn the_table_is_looked_up_over_netlink() {
        let ns = crate::daemon::testns::Netns::new("heal");
        assert!(!ns.enter(table_exists));
        ns.nft("table inet connmark_lb {\n chain c {\n }\n}\n");
        assert!(ns.enter(table_exists));
        ns.nft("delete table inet connmark_lb");
        assert!(!ns.enter(table_exists));
    }
}
