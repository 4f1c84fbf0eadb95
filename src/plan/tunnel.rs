//! Tunnels as links: a tunnel is usable only while one of its underlay links is (nothing is
//! probed or balanced through a dead underlay), and its outer packets, found by the peer's
//! outer address and port, are pinned to the first live underlay. With no live underlay they
//! get the unreachable mark: never the main table, whose default route may be the tunnel.

use super::{Link, Plan};
use crate::config::Family;
use std::net::IpAddr;

/// Where a tunnel's outer packets go right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterPin {
    /// The endpoint's family (a tunnel of one family may run over the other).
    pub family: Family,
    pub endpoint: IpAddr,
    pub port: Option<u16>,
    /// The first live underlay (index into [`Plan::links`]); None: unreachable.
    pub link: Option<usize>,
}

/// The links `link`'s underlay names, in its order, as indices into `links`.
fn underlay(links: &[Link], link: &Link) -> Vec<usize> {
    let Some(tunnel) = &link.tunnel else {
        return Vec::new();
    };
    tunnel
        .underlay
        .iter()
        .filter_map(|name| links.iter().position(|l| &l.name == name))
        .collect()
}

/// A tunnel none of whose underlay links is usable is not usable either. Underlays are never
/// tunnels themselves (config checks), so one pass settles it.
pub(super) fn down_with_underlay(links: &mut [Link]) {
    let gated: Vec<bool> = links
        .iter()
        .map(|link| link.tunnel.is_none() || underlay(links, link).iter().any(|&u| links[u].up))
        .collect();
    for (link, ok) in links.iter_mut().zip(gated) {
        link.up &= ok;
    }
}

impl Plan {
    /// Whether some link is a tunnel: the ruleset then has the outer-packet stage, whatever
    /// is alive.
    pub fn has_tunnels(&self) -> bool {
        self.links.iter().any(|l| l.tunnel.is_some())
    }

    /// Where each tunnel's outer packets go now, in link order.
    pub fn outer_pins(&self) -> Vec<OuterPin> {
        self.links
            .iter()
            .filter_map(|link| {
                let tunnel = link.tunnel.as_ref()?;
                Some(OuterPin {
                    family: Family::of(&tunnel.endpoint),
                    endpoint: tunnel.endpoint,
                    port: tunnel.port,
                    link: underlay(&self.links, link)
                        .into_iter()
                        .find(|&u| self.links[u].up),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{config, states};

    const TUNNEL: &str = r#"{"values":{
        "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
        "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2"},
        "vpn":{".type":"interface",".name":"vpn",".index":3,"device":"tun0","underlay":["wanb","wan"],"endpoint":"198.51.100.7:1194"}
    }}"#;

    fn plan(up: [bool; 3]) -> Plan {
        let c = config(TUNNEL);
        Plan::build(&c, &states(&c, &up))
    }

    fn pinned_to(p: &Plan) -> Option<usize> {
        let pins = p.outer_pins();
        assert_eq!(pins.len(), 1);
        assert_eq!(pins[0].endpoint, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(pins[0].port, Some(1194));
        pins[0].link
    }

    #[test]
    fn outer_packets_follow_the_first_live_underlay() {
        assert_eq!(pinned_to(&plan([true; 3])), Some(1));
        assert_eq!(pinned_to(&plan([true, false, true])), Some(0));
        assert_eq!(pinned_to(&plan([false, false, true])), None);
    }

    #[test]
    fn a_tunnel_is_down_while_every_underlay_is() {
        assert!(plan([true; 3]).links[2].up);
        assert!(plan([true, false, true]).links[2].up);
        assert!(!plan([false, false, true]).links[2].up);
        assert!(!plan([true, true, false]).links[2].up);
        assert!(plan([true; 3]).has_tunnels());
    }
}
