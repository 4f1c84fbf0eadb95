//! DNS that follows the link: where a new connection to one of the links' DNS servers (port
//! 53) goes. An ISP's resolver usually answers only its own customers, and only through its
//! own link; the router's resolver keeps asking every server it was given, whatever link is
//! alive. So each server's queries are pinned to the link that has it, and while that link is
//! not live they go to a live link's server instead (translated back on the reply, so the
//! asker never notices), or are refused at once when no live link has one.

use super::{Link, Plan};
use crate::config::Family;
use std::net::IpAddr;

/// What a new DNS connection to a server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsWay {
    /// It leaves by this link (index into [`Plan::links`]): a live link that has the server,
    /// or (none being live) the first that has it.
    Pin(usize),
    /// No link that has the server is live: it goes to `server` of live link `link` instead.
    Follow { link: usize, server: IpAddr },
    /// No live link of its family has a server: refused as unreachable, so the asker moves on
    /// at once.
    Refuse,
}

/// Servers of one family that take the same way, in the order the links list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsGroup {
    pub family: Family,
    pub way: DnsWay,
    pub servers: Vec<IpAddr>,
}

impl Plan {
    /// Whether the ruleset steers DNS: `dns_follow` is on and some link has servers. Liveness
    /// does not change it, so a link state change only rewrites what the steering holds.
    pub fn steers_dns(&self) -> bool {
        self.dns_follow && self.links.iter().any(|l| !l.dns.is_empty())
    }

    /// Where each link's DNS servers' new connections go right now, grouped by way; empty
    /// unless [`Plan::steers_dns`].
    pub fn dns_groups(&self) -> Vec<DnsGroup> {
        if !self.steers_dns() {
            return Vec::new();
        }
        let mut groups: Vec<DnsGroup> = Vec::new();
        for link in &self.links {
            for &server in &link.dns {
                if groups.iter().any(|g| g.servers.contains(&server)) {
                    continue;
                }
                let way = self.dns_way(link.family, server);
                match groups
                    .iter_mut()
                    .find(|g| g.way == way && g.family == link.family)
                {
                    Some(group) => group.servers.push(server),
                    None => groups.push(DnsGroup {
                        family: link.family,
                        way,
                        servers: vec![server],
                    }),
                }
            }
        }
        groups
    }

    /// The way of `server` (a server of some link of `family`).
    fn dns_way(&self, family: Family, server: IpAddr) -> DnsWay {
        let has = |l: &Link| l.family == family && l.dns.contains(&server);
        if let Some(live) = self.links.iter().position(|l| l.up && has(l)) {
            return DnsWay::Pin(live);
        }
        let substitute = self
            .links
            .iter()
            .position(|l| l.up && l.family == family && !l.dns.is_empty());
        match substitute {
            Some(link) => DnsWay::Follow {
                link,
                server: self.links[link].dns[0],
            },
            None => DnsWay::Refuse,
        }
    }

    /// The way a new connection to `server` port 53 takes, if it is one of the links'.
    pub fn dns_way_to(&self, server: IpAddr) -> Option<DnsWay> {
        self.dns_groups()
            .into_iter()
            .find(|g| g.servers.contains(&server))
            .map(|g| g.way)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{config, states};

    const DNS: &str = r#"{"values":{
        "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","dns":["192.0.2.53","192.0.2.54"]},
        "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2","dns":"198.51.100.53"},
        "lte":{".type":"interface",".name":"lte",".index":3,"device":"wwan0","dns":"192.0.2.54"},
        "wan6":{".type":"interface",".name":"wan6",".index":4,"family":"ipv6","device":"eth1","dns":"2001:db8::53"}
    }}"#;

    fn plan(json: &str, up: [bool; 4]) -> Plan {
        let c = config(json);
        Plan::build(&c, &states(&c, &up))
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn servers_are_pinned_to_a_live_link_that_has_them() {
        let p = plan(DNS, [true; 4]);
        assert!(p.steers_dns());
        assert_eq!(
            p.dns_groups(),
            [
                DnsGroup {
                    family: Family::Ipv4,
                    way: DnsWay::Pin(0),
                    servers: vec![addr("192.0.2.53"), addr("192.0.2.54")]
                },
                DnsGroup {
                    family: Family::Ipv4,
                    way: DnsWay::Pin(1),
                    servers: vec![addr("198.51.100.53")]
                },
                DnsGroup {
                    family: Family::Ipv6,
                    way: DnsWay::Pin(3),
                    servers: vec![addr("2001:db8::53")]
                },
            ]
        );
        // A server two links have stays on a live one of them.
        let p = plan(DNS, [false, true, true, true]);
        assert_eq!(p.dns_way_to(addr("192.0.2.54")), Some(DnsWay::Pin(2)));
        assert_eq!(p.dns_way_to(addr("203.0.113.1")), None);
    }

    #[test]
    fn a_dead_links_servers_follow_a_live_link_of_their_family_or_are_refused() {
        let p = plan(DNS, [false, true, false, false]);
        assert_eq!(
            p.dns_way_to(addr("192.0.2.53")),
            Some(DnsWay::Follow {
                link: 1,
                server: addr("198.51.100.53")
            })
        );
        assert_eq!(
            p.dns_way_to(addr("192.0.2.54")),
            p.dns_way_to(addr("192.0.2.53"))
        );
        assert_eq!(p.dns_way_to(addr("198.51.100.53")), Some(DnsWay::Pin(1)));
        assert_eq!(
            p.dns_way_to(addr("2001:db8::53")),
            Some(DnsWay::Refuse),
            "no live IPv6 link"
        );
        let p = plan(DNS, [false; 4]);
        assert!(p.dns_groups().iter().all(|g| g.way == DnsWay::Refuse));
        assert!(p.steers_dns(), "liveness never removes the steering");
    }

    #[test]
    fn dns_follow_0_or_no_servers_steer_nothing() {
        let off = DNS.replace(
            r#""wan":{"#,
            r#""g":{".type":"globals",".name":"g",".index":0,"dns_follow":"0"},"wan":{"#,
        );
        let p = plan(&off, [true; 4]);
        assert!(!p.steers_dns());
        assert!(p.dns_groups().is_empty());
        let p = crate::plan::tests::tiers_plan([true, true, true]);
        assert!(!p.steers_dns());
    }
}
