//! What the kernel's announcements say changed of ours: nf_tables messages about our table,
//! our iptables chains and the built-in chains holding our jumps; rtnetlink messages about ip
//! rules in our priority span and routes in our tables. Everything else is someone else's.

use crate::apply::Backend;
use crate::config::Family;
use crate::daemon::kernel::netlink::{self, NFGENMSG_LEN};
use crate::daemon::kernel::nftables::{NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFTA_TABLE};
use crate::names::{IPT_PREFIX, JUMPS, NFT_TABLE};
use crate::plan::Routing;

/// nf_tables message types (low byte) that announce changes.
const NFT_MSG_NEWTABLE: u8 = 0;
pub(super) const NFT_MSG_DELTABLE: u8 = 2;
const NFT_MSG_NEWCHAIN: u8 = 3;
pub(super) const NFT_MSG_DELCHAIN: u8 = 5;
const NFT_MSG_NEWRULE: u8 = 6;
pub(super) const NFT_MSG_DELRULE: u8 = 8;
const NFT_MSG_DELSET: u8 = 11;
/// The chain is attribute 3 of a chain message and 2 of a rule message (the table is
/// [`NFTA_TABLE`] of all of them).
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
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

/// One thing that went missing or changed: `whole` when it is a whole table, which then
/// stands for everything in it (`scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub scope: String,
    pub whole: bool,
    pub text: String,
}

/// What an nf_tables announcement changed of ours, if anything.
pub fn nft_change(backend: Backend, kind: u16, payload: &[u8]) -> Option<Note> {
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
    match backend {
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
pub fn route_change(routing: &Routing, kind: u16, payload: &[u8]) -> Option<Note> {
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
        RTM_NEWROUTE | RTM_DELROUTE if routing.has_table(family, table) => {
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
            let ours = routing.rules(family).iter().any(|r| r.priority == priority);
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

#[cfg(test)]
pub mod tests {
    use super::*;

    /// What the self-healing tests own: ip rules from priority 4001 and tables from 4001.
    pub fn routing() -> Routing {
        Routing {
            footprint: crate::plan::Footprint {
                mask: 0x3f00,
                priority_base: 4000,
                table_base: 4000,
            },
            links: vec![1, 2],
            links6: Vec::new(),
        }
    }

    /// An nf_tables message payload: family, then table (and chain) name attributes.
    pub fn nft(family: u8, table: &str, chain: Option<(u16, &str)>) -> Vec<u8> {
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

    pub fn kind(message: u8) -> u16 {
        NFNL_SUBSYS_NFTABLES << 8 | u16::from(message)
    }

    /// An rtnetlink IPv4 route or rule message whose one attribute `attr` holds `value`.
    fn rt_message(attr: u16, value: u32) -> Vec<u8> {
        let mut message = vec![2u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        netlink::push_be32(&mut message, attr, 0);
        let at = message.len() - 4;
        message[at..].copy_from_slice(&value.to_ne_bytes());
        message
    }

    #[test]
    fn only_changes_to_our_objects_count() {
        let ours = nft(NFPROTO_INET, "connmark_lb", None);
        let our_rule = nft(
            NFPROTO_INET,
            "connmark_lb",
            Some((NFTA_RULE_CHAIN, "prerouting")),
        );
        let fw4 = nft(NFPROTO_INET, "fw4", None);
        let ipv4_namesake = nft(NFPROTO_IPV4, "connmark_lb", None);
        let jump = nft(
            NFPROTO_IPV4,
            "mangle",
            Some((NFTA_RULE_CHAIN, "PREROUTING")),
        );
        let foreign = nft(NFPROTO_IPV4, "mangle", Some((NFTA_RULE_CHAIN, "FORWARD")));
        let filter = nft(NFPROTO_IPV4, "filter", Some((NFTA_RULE_CHAIN, "CMLB_X")));
        for (backend, message, payload, expected, why) in [
            (
                Backend::Nftables,
                NFT_MSG_DELTABLE,
                &ours,
                Some("nft table inet connmark_lb deleted"),
                "our table",
            ),
            (
                Backend::Nftables,
                NFT_MSG_NEWRULE,
                &our_rule,
                Some("rules of chain prerouting of nft table inet connmark_lb changed"),
                "our rules",
            ),
            (
                Backend::Nftables,
                NFT_MSG_DELTABLE,
                &fw4,
                None,
                "another table",
            ),
            (
                Backend::Nftables,
                NFT_MSG_DELSETELEM,
                &ours,
                None,
                "set elements expire by themselves",
            ),
            (
                Backend::Nftables,
                NFT_MSG_DELTABLE,
                &ipv4_namesake,
                None,
                "another family",
            ),
            (
                Backend::Iptables,
                NFT_MSG_DELRULE,
                &jump,
                Some("rules of chain PREROUTING of iptables table mangle deleted"),
                "our jump",
            ),
            (
                Backend::Iptables,
                NFT_MSG_NEWRULE,
                &jump,
                None,
                "others add rules",
            ),
            (
                Backend::Iptables,
                NFT_MSG_DELRULE,
                &foreign,
                None,
                "another chain",
            ),
            (
                Backend::Iptables,
                NFT_MSG_DELRULE,
                &filter,
                None,
                "another table",
            ),
        ] {
            assert_eq!(
                text(nft_change(backend, kind(message), payload)).as_deref(),
                expected,
                "{why}"
            );
        }

        for (message, attr, value, expected) in [
            (
                RTM_DELRULE,
                FRA_PRIORITY,
                4001,
                Some("ip rule 4001 deleted"),
            ),
            (RTM_DELRULE, FRA_PRIORITY, 32766, None),
            (
                RTM_DELROUTE,
                RTA_TABLE,
                4002,
                Some("route in table 4002 deleted"),
            ),
            (RTM_DELROUTE, RTA_TABLE, 254, None),
        ] {
            let payload = rt_message(attr, value);
            assert_eq!(
                text(route_change(&routing(), message, &payload)).as_deref(),
                expected
            );
        }
    }
}
