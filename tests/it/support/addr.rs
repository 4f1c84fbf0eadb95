//! The address plan of the test topology: which address and device each namespace and link
//! has, for IPv4 and (in a dual-stack topology) IPv6.

use std::net::Ipv4Addr;

/// The LAN host's address; its default route points at the router.
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The router's address on the LAN, the LAN host's gateway (and resolver, where one runs).
pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// The server's service address (on its loopback), reachable through every ISP.
pub const SERVICE: Ipv4Addr = Ipv4Addr::new(172, 31, 255, 1);
/// The ingress device of the router on the LAN side.
pub const ROUTER_LAN_DEVICE: &str = "eth0";

/// The router's address on link `link` (1-based), which is also the SNAT address of that link.
pub fn link_addr(link: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, link_octet(link), 2)
}

/// The ISP's gateway address on link `link`.
pub fn link_gateway(link: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, link_octet(link), 1)
}

/// The router's device name for link `link`.
pub fn link_device(link: usize) -> String {
    format!("wan{link}")
}

/// The server's own address on its point-to-point link to ISP `link`.
pub fn srv_addr_towards(link: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, link_octet(link), 2)
}

/// The IPv6 plan of a dual-stack topology (every address is a ULA, fd00::/8): the LAN has a
/// ULA subnet of its own and one subnet out of each link's delegated prefix; each ISP hands its
/// customer a WAN address, a /56 and a default route via its link-local address fe80::1.
pub mod v6 {
    use std::net::Ipv6Addr;

    /// The router's LAN address in the LAN's own ULA subnet.
    pub const ROUTER_ULA: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
    /// The LAN host's ULA address: it belongs to no link, so it is balanced with NAT66.
    pub const HOST_ULA: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
    /// The server's service address (on its loopback), reachable through every ISP.
    pub const SERVICE: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
    /// Every ISP router's link-local address on the customer link.
    pub const ISP_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

    /// The prefix ISP `link` delegates to the router, `fd0N::/56`.
    pub fn delegated(link: usize) -> String {
        format!("fd{link:02x}::/56")
    }

    /// The LAN host's address out of link `link`'s delegated prefix (subnet 77 of the /56).
    pub fn host_in_prefix(link: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00 + octet(link), 0, 0, 0x77, 0, 0, 0, 2)
    }

    /// The router's WAN address on link `link`, which masquerading uses.
    pub fn link_addr(link: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, octet(link), 0, 0, 0, 0, 0, 2)
    }

    /// ISP `link`'s global address on the customer link.
    pub fn link_gateway(link: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, octet(link), 0, 0, 0, 0, 0, 1)
    }

    /// The server's address on its link to ISP `link`.
    pub fn srv_addr_towards(link: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd98, octet(link), 0, 0, 0, 0, 0, 2)
    }

    fn octet(link: usize) -> u16 {
        u16::from(super::link_octet(link))
    }
}

fn link_octet(link: usize) -> u8 {
    u8::try_from(link).unwrap_or_else(|_| panic!("link number {link} out of range"))
}
