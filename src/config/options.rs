//! Parsers of the options whose values mean more than a number, a word or an address: each
//! knows its option's vocabulary and the checks a single value (or list) must pass. The
//! generic readers they build on are in `value`; the section readers that call them are in
//! `sections`.

use super::classes::{self, HashKey};
use super::family::{Cidr, Family};
use super::model::{Balance, FlushEvent, PortRange, Proto};
use super::value::SectionReader;
use crate::error::Result;
use std::net::IpAddr;

/// `mark_mask`: the bits must be contiguous (marks are shifted into them) and leave room for
/// at least one link beside the two reserved values.
pub(super) fn read_mark_mask(r: &mut SectionReader, default: u32) -> Result<u32> {
    let mark_mask = r.int("mark_mask", default, 1, u32::MAX)?;
    let shifted = mark_mask >> mark_mask.trailing_zeros();
    if shifted & shifted.wrapping_add(1) != 0 || shifted < 3 {
        return Err(r.error(
            "mark_mask",
            format!("expected a contiguous bit mask of at least 2 bits, got {mark_mask:#x}"),
        ));
    }
    Ok(mark_mask)
}

/// `balance` and, for `hash`, its `hash` key; a policy's default is the globals' choice.
pub(super) fn read_balance(r: &mut SectionReader, default: Balance) -> Result<Balance> {
    let default_key = match default {
        Balance::Hash(key) => key,
        _ => HashKey::Src,
    };
    let balance = r.choice(
        "balance",
        default,
        &[
            ("round-robin", Balance::RoundRobin),
            ("random", Balance::Random),
            ("hash", Balance::Hash(default_key)),
        ],
    )?;
    let key = classes::read_hash_key(r, default_key)?;
    Ok(match balance {
        Balance::Hash(_) => Balance::Hash(key),
        other => other,
    })
}

/// An interface's `list prefix`: distinct IPv6 prefixes, only on an IPv6 link.
pub(super) fn read_prefixes(r: &mut SectionReader, family: Family) -> Result<Vec<Cidr>> {
    let mut prefixes: Vec<Cidr> = Vec::new();
    for v in r.list("prefix") {
        match Cidr::parse(v).filter(|p| p.family() == Family::Ipv6) {
            _ if family != Family::Ipv6 => {
                return Err(r.error("prefix", "prefixes need option family 'ipv6'"));
            }
            Some(p) if !prefixes.contains(&p) => prefixes.push(p),
            Some(p) => return Err(r.error("prefix", format!("{p} is listed twice"))),
            None => {
                return Err(r.error(
                    "prefix",
                    format!("expected an IPv6 prefix like 2001:db8:1::/56, got \"{v}\""),
                ));
            }
        }
    }
    Ok(prefixes)
}

/// An interface's `list dns`: its DNS servers, addresses of the link's family, each once.
pub(super) fn read_dns(r: &mut SectionReader, family: Family) -> Result<Vec<IpAddr>> {
    let mut servers: Vec<IpAddr> = Vec::new();
    for v in r.list("dns") {
        match family
            .parse(v)
            .filter(|a| !a.is_unspecified() && !a.is_multicast())
        {
            Some(addr) if !servers.contains(&addr) => servers.push(addr),
            Some(_) => {}
            None => {
                return Err(r.error(
                    "dns",
                    format!(
                        "expected {} DNS server addresses (the link's family), got \"{v}\"",
                        family.label()
                    ),
                ));
            }
        }
    }
    Ok(servers)
}

/// `flush_conntrack`: a list of events; `never` alone switches the default off.
pub(super) fn read_flush_conntrack(r: &mut SectionReader) -> Result<Vec<FlushEvent>> {
    let words = r.list("flush_conntrack");
    if words.is_empty() {
        return Ok(vec![FlushEvent::Disconnected]);
    }
    if words == ["never"] {
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for word in words {
        let event = [
            FlushEvent::IfUp,
            FlushEvent::IfDown,
            FlushEvent::Connected,
            FlushEvent::Disconnected,
        ]
        .into_iter()
        .find(|e| e.as_str() == word)
        .ok_or_else(|| {
            r.error(
                "flush_conntrack",
                format!(
                    "expected ifup, ifdown, connected, disconnected (or never alone), got \"{word}\""
                ),
            )
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// A rule's `proto`: a name both firewall tools know, or a protocol number.
pub(super) fn read_proto(r: &mut SectionReader) -> Result<Proto> {
    Ok(match r.single("proto")? {
        None | Some("all") => Proto::All,
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        Some("icmp") => Proto::Icmp,
        Some(v) => match v.parse::<u8>() {
            Ok(n) => Proto::Number(n),
            Err(_) => {
                return Err(r.error(
                    "proto",
                    format!("expected all|tcp|udp|icmp or a protocol number, got \"{v}\""),
                ));
            }
        },
    })
}

/// A rule's family: `family` (ipv4, ipv6, or any, the default), narrowed by its addresses,
/// which must all be of one family.
pub(super) fn read_rule_family(
    r: &mut SectionReader,
    src: &[Cidr],
    dest: &[Cidr],
) -> Result<Option<Family>> {
    let chosen = r.choice(
        "family",
        None,
        &[
            ("any", None),
            ("ipv4", Some(Family::Ipv4)),
            ("ipv6", Some(Family::Ipv6)),
        ],
    )?;
    let mut family = chosen;
    for (option, cidrs) in [("src_ip", src), ("dest_ip", dest)] {
        for cidr in cidrs {
            match family {
                Some(f) if f != cidr.family() => {
                    return Err(r.error(
                        option,
                        format!(
                            "{cidr} is {}, but the rule matches only {} traffic",
                            cidr.family().label(),
                            f.label()
                        ),
                    ));
                }
                _ => family = Some(cidr.family()),
            }
        }
    }
    Ok(family)
}

/// Ports and port ranges, as a list, comma-separated, or both; a range is written `a-b` or
/// mwan3's `a:b`.
pub(super) fn read_ports(r: &mut SectionReader, option: &'static str) -> Result<Vec<PortRange>> {
    let mut out = Vec::new();
    for item in r.list(option) {
        for part in item.split(',') {
            let (from, to) = part.split_once(['-', ':']).unwrap_or((part, part));
            match (from.parse::<u16>(), to.parse::<u16>()) {
                (Ok(from), Ok(to)) if from >= 1 && from <= to => out.push(PortRange { from, to }),
                _ => {
                    return Err(r.error(
                        option,
                        format!("expected ports like 443, 8000-8080 or 80,443, got \"{item}\""),
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::{TWO_WANS, config, interface};

    #[test]
    fn non_contiguous_mask_is_rejected() {
        let e = config(&TWO_WANS.replace(r#""lan":["br-lan"]"#, r#""mark_mask":"0x0f0f""#))
            .unwrap_err();
        assert!(e.to_string().contains("contiguous"), "{e}");
    }

    #[test]
    fn rule_family_comes_from_the_option_or_the_addresses() {
        let rule = |options: &str| {
            config(&format!(
                r#"{{"values":{{
                "wan":{{".type":"interface",".name":"wan",".index":1,"device":"eth1"}},
                "r":{{".type":"rule",".name":"r",".index":2,"use_policy":"default"{options}}}}}}}"#
            ))
            .map(|c| c.rules[0].family)
        };
        assert_eq!(rule("").unwrap(), None);
        assert_eq!(rule(r#","family":"any""#).unwrap(), None);
        assert_eq!(rule(r#","family":"ipv6""#).unwrap(), Some(Family::Ipv6));
        assert_eq!(
            rule(r#","dest_ip":"fd00::/8""#).unwrap(),
            Some(Family::Ipv6)
        );
        assert_eq!(
            rule(r#","src_ip":"10.0.0.0/8""#).unwrap(),
            Some(Family::Ipv4)
        );
        assert_eq!(
            rule(r#","family":"ip""#).unwrap_err().to_string(),
            "rule 'r' option 'family': expected one of any|ipv4|ipv6, got \"ip\""
        );
    }

    #[test]
    fn flush_conntrack_defaults_to_disconnected_and_never_turns_it_off() {
        let events =
            |options: &str| interface(options).map(|c| c.interfaces[0].flush_conntrack.clone());
        assert_eq!(events("").unwrap(), [FlushEvent::Disconnected]);
        assert_eq!(
            events(r#","flush_conntrack":["ifdown","disconnected","ifdown"]"#).unwrap(),
            [FlushEvent::IfDown, FlushEvent::Disconnected]
        );
        assert!(events(r#","flush_conntrack":"never""#).unwrap().is_empty());
        let e = events(r#","flush_conntrack":["never","ifup"]"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "interface 'wanb' option 'flush_conntrack': expected ifup, ifdown, connected, disconnected (or never alone), got \"never\""
        );
        assert_eq!(e.exit_code(), 2);
    }
}
