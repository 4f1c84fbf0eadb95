//! Address families: every IPv4/IPv6 difference the config, plan, renderers and daemon need,
//! kept in one place so each layer asks the family instead of spelling its own cases.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address family of a link, a rule or an address (mwan3's `family` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// Both families, in the order renderers write them.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The config word, which is also nft's `meta nfproto` value.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// The "IPv4"/"IPv6" of messages.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }

    /// nft's address payload keyword (`ip saddr`, `ip6 saddr`) and NAT family (`snat ip6 to`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::Ipv4 => "ip",
            Family::Ipv6 => "ip6",
        }
    }

    /// The protocol word of ICMP in this family, for nft and iptables alike.
    pub fn icmp(self) -> &'static str {
        match self {
            Family::Ipv4 => "icmp",
            Family::Ipv6 => "ipv6-icmp",
        }
    }

    /// The iptables tool of this family (`iptables`, `ip6tables`); `-save`/`-restore` follow.
    pub fn iptables(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }

    /// The `ip` option selecting this family.
    pub fn ip_flag(self) -> &'static str {
        match self {
            Family::Ipv4 => "-4",
            Family::Ipv6 => "-6",
        }
    }

    /// The socket address family (`AF_INET`, `AF_INET6`), as ctnetlink's `nfgen_family` too.
    pub fn af(self) -> u8 {
        match self {
            Family::Ipv4 => libc::AF_INET as u8,
            Family::Ipv6 => libc::AF_INET6 as u8,
        }
    }

    /// The length of a host prefix (32, 128).
    pub fn host_len(self) -> u8 {
        match self {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }

    /// Parses an address of this family.
    pub fn parse(self, text: &str) -> Option<IpAddr> {
        let addr: IpAddr = text.parse().ok()?;
        (Family::of(&addr) == self).then_some(addr)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// ICMPv6 neighbour discovery, router discovery and multicast listener messages, by nft name:
/// link-local control traffic that is never marked, balanced or pinned.
pub const ICMPV6_LINK_TYPES: [(&str, u8); 9] = [
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("nd-redirect", 137),
    ("mld2-listener-report", 143),
];

/// Whether `addr` is an IPv6 link-local unicast address (fe80::/10): it needs a device to mean
/// anything, and it is never a SNAT source.
pub fn is_link_local(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// An address prefix (`10.0.0.0/8`, `2001:db8:1::/56`), kept with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// `addr` or `addr/len` of either family; host bits are cleared, so the kernel and the
    /// firewall tools see the same prefix the user meant.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let family = Family::of(&addr);
        let len = len.unwrap_or(family.host_len());
        (len <= family.host_len()).then(|| Cidr::new(addr, len))
    }

    /// The prefix of `len` bits containing `addr`.
    pub fn new(addr: IpAddr, len: u8) -> Cidr {
        let addr = match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(bits))
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        };
        Cidr { addr, len }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Whether `addr` lies in this prefix.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        Family::of(addr) == self.family() && Cidr::new(*addr, self.len).addr == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_clear_host_bits_and_contain() {
        let p = Cidr::parse("2001:db8:1:77::5/56").unwrap();
        assert_eq!(p.to_string(), "2001:db8:1::/56");
        assert_eq!(p.family(), Family::Ipv6);
        assert!(p.contains(&"2001:db8:1:ff::1".parse().unwrap()));
        assert!(!p.contains(&"2001:db8:2::1".parse().unwrap()));
        assert!(!p.contains(&"10.0.0.1".parse().unwrap()));
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
        for bad in ["10.0.0.0/33", "fd00::/129", "x", "10.0.0.0/", "/8"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn link_local_and_family_parsing() {
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_link_local(&"fd00::1".parse().unwrap()));
        assert_eq!(Family::Ipv6.parse("10.0.0.1"), None);
        assert!(Family::Ipv4.parse("10.0.0.1").is_some());
    }
}
