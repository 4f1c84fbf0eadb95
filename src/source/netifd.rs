//! What netifd knows about a WAN interface, for links configured by netifd name
//! (`option interface 'wanb'`) instead of a fixed device and gateway: DHCP and PPPoE change
//! both at every reconnect, and an interface without a default route cannot carry our traffic.

use super::ubus::{Client, Status};
use crate::config::family::is_link_local;
use crate::config::{Cidr, Family};
use crate::error::Result;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// A netifd interface as the balancer sees it: usable or not, and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetifdLink {
    /// The interface is up and has an active default route of the link's family; otherwise
    /// it is left out of balancing until it comes back.
    pub up: bool,
    /// The routed device (`l3_device`, e.g. `pppoe-wan`), present while the interface is up.
    pub device: Option<String>,
    /// The default route's next hop (IPv6: usually link-local); `None` for a device-only
    /// default route (point-to-point).
    pub gateway: Option<IpAddr>,
    /// The interface's first address of the family (IPv6: the first global one), the SNAT
    /// source.
    pub address: Option<IpAddr>,
    /// IPv6 prefixes delegated to the interface (`ipv6-prefix`).
    pub prefixes: Vec<Cidr>,
    /// The interface's DNS servers of the family (`dns-server`: the ISP's, or `option dns`).
    pub dns: Vec<IpAddr>,
}

/// Interprets `ubus call network.interface.<name> status` for a link of `family` (`wan` for
/// IPv4, `wan6` for IPv6). Only the active `route` list counts: with `option defaultroute 0`
/// netifd lists the default route under `inactive.route`, and such an interface is down for us.
pub fn parse_status(status: &Value, family: Family) -> NetifdLink {
    let default_route = status
        .get("route")
        .and_then(Value::as_array)
        .and_then(|routes| routes.iter().find(|route| is_default_route(route, family)));
    let interface_up = status.get("up").and_then(Value::as_bool) == Some(true);
    let (addresses, prefixes) = match family {
        Family::Ipv4 => ("ipv4-address", None),
        Family::Ipv6 => ("ipv6-address", Some("ipv6-prefix")),
    };
    let entries = |key: &str| -> Vec<Value> {
        status
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    NetifdLink {
        up: interface_up && default_route.is_some(),
        device: status
            .get("l3_device")
            .and_then(Value::as_str)
            .map(str::to_string),
        gateway: default_route
            .and_then(|route| address(route.get("nexthop"), family))
            .filter(|nexthop| !nexthop.is_unspecified()),
        address: entries(addresses)
            .iter()
            .filter_map(|entry| address(entry.get("address"), family))
            .find(|a| !is_link_local(a)),
        prefixes: prefixes
            .map(|key| {
                entries(key)
                    .iter()
                    .filter_map(|entry| {
                        let addr = address(entry.get("address"), family)?;
                        let len = u8::try_from(entry.get("mask")?.as_u64()?).ok()?;
                        (len <= family.host_len()).then(|| Cidr::new(addr, len))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        dns: status
            .get("dns-server")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|server| address(Some(server), family))
            .collect(),
    }
}

/// Asks netifd for `interface`'s state. An interface netifd does not know (ubus NOT_FOUND) is
/// simply down: it may be created later, and a typo shows up as a link that never comes up.
pub fn link_status(client: &mut Client, interface: &str, family: Family) -> Result<NetifdLink> {
    let object = format!("network.interface.{interface}");
    match client.try_call(&object, "status", &Value::Object(Map::new()))? {
        Ok(status) => Ok(parse_status(&status, family)),
        Err(Status::NOT_FOUND) => Ok(NetifdLink::default()),
        Err(status) => Err(status.error(&object, "status")),
    }
}

/// `0.0.0.0/0` or `::/0` (netifd may leave the target out).
fn is_default_route(route: &Value, family: Family) -> bool {
    let target = route.get("target").and_then(Value::as_str);
    route.get("mask").and_then(Value::as_u64) == Some(0)
        && target.is_none_or(|t| family.parse(t).is_some_and(|a| a.is_unspecified()))
}

fn address(value: Option<&Value>, family: Family) -> Option<IpAddr> {
    family.parse(value.and_then(Value::as_str)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A DHCP WAN as netifd reports it on OpenWrt 23.05 (trimmed of IPv6 and DNS details).
    fn dhcp_wan() -> Value {
        json!({
            "up": true, "pending": false, "available": true, "autostart": true, "dynamic": false,
            "uptime": 5120, "l3_device": "eth1", "proto": "dhcp", "device": "eth1",
            "updated": ["addresses", "routes", "data"], "metric": 0, "dns_metric": 0,
            "delegation": true,
            "ipv4-address": [{"address": "203.0.113.45", "mask": 24}],
            "ipv6-address": [], "ipv6-prefix": [], "ipv6-prefix-assignment": [],
            "route": [
                {"target": "203.0.113.0", "mask": 24, "nexthop": "0.0.0.0", "source": "203.0.113.45/32"},
                {"target": "0.0.0.0", "mask": 0, "nexthop": "203.0.113.1", "source": "203.0.113.45/32"}
            ],
            "dns-server": ["203.0.113.1"], "dns-search": ["lan"], "neighbors": [],
            "inactive": {"ipv4-address": [], "ipv6-address": [], "route": [], "dns-server": [],
                         "dns-search": [], "neighbors": []},
            "data": {"dhcpserver": "203.0.113.1", "leasetime": 86400}
        })
    }

    /// An IPv4 link that is up with `device`, `gateway` and `address` and no prefixes.
    fn up_v4(device: &str, gateway: [u8; 4], address: [u8; 4]) -> NetifdLink {
        NetifdLink {
            up: true,
            device: Some(device.into()),
            gateway: Some(IpAddr::from(gateway)),
            address: Some(IpAddr::from(address)),
            prefixes: Vec::new(),
            dns: Vec::new(),
        }
    }

    #[test]
    fn dhcp_wan_resolves_device_gateway_and_address() {
        assert_eq!(
            parse_status(&dhcp_wan(), Family::Ipv4),
            NetifdLink {
                dns: vec![IpAddr::from([203, 0, 113, 1])],
                ..up_v4("eth1", [203, 0, 113, 1], [203, 0, 113, 45])
            }
        );
    }

    #[test]
    fn pppoe_uses_the_routed_device_and_own_address_not_the_peer() {
        let status = json!({
            "up": true, "pending": false, "available": true, "autostart": true, "dynamic": false,
            "uptime": 86011, "l3_device": "pppoe-wanb", "proto": "pppoe", "device": "eth0.2",
            "metric": 10,
            "ipv4-address": [{"address": "100.64.17.9", "mask": 32, "ptpaddress": "10.64.64.64"}],
            "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "10.64.64.64",
                       "source": "0.0.0.0/0"}],
            "inactive": {"ipv4-address": [], "route": []},
            "data": {}
        });
        assert_eq!(
            parse_status(&status, Family::Ipv4),
            up_v4("pppoe-wanb", [10, 64, 64, 64], [100, 64, 17, 9])
        );
    }

    #[test]
    fn device_only_default_route_has_no_gateway() {
        let status = json!({
            "up": true, "l3_device": "wwan0", "proto": "qmi",
            "ipv4-address": [{"address": "10.151.3.7", "mask": 30}],
            "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "0.0.0.0", "source": "10.151.3.7/32"}]
        });
        let link = parse_status(&status, Family::Ipv4);
        assert!(link.up);
        assert_eq!(link.gateway, None);
        assert_eq!(link.device.as_deref(), Some("wwan0"));
    }

    #[test]
    fn down_interface_is_down_with_nothing_resolved() {
        let status = json!({
            "up": false, "pending": false, "available": true, "autostart": true,
            "dynamic": false, "proto": "dhcp", "device": "eth1", "data": {}
        });
        assert_eq!(parse_status(&status, Family::Ipv4), NetifdLink::default());
    }

    #[test]
    fn up_false_wins_over_a_leftover_default_route() {
        let mut status = dhcp_wan();
        status["up"] = json!(false);
        let link = parse_status(&status, Family::Ipv4);
        assert!(!link.up);
    }

    #[test]
    fn defaultroute_0_puts_the_route_under_inactive_and_the_link_down() {
        let status = json!({
            "up": true, "l3_device": "eth2", "proto": "dhcp", "device": "eth2",
            "ipv4-address": [{"address": "198.51.100.20", "mask": 24}],
            "route": [{"target": "198.51.100.0", "mask": 24, "nexthop": "0.0.0.0",
                       "source": "198.51.100.20/32"}],
            "inactive": {
                "ipv4-address": [],
                "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "198.51.100.1",
                           "source": "198.51.100.20/32"}]
            }
        });
        assert_eq!(
            parse_status(&status, Family::Ipv4),
            NetifdLink {
                up: false,
                device: Some("eth2".into()),
                gateway: None,
                address: Some(IpAddr::from([198, 51, 100, 20])),
                prefixes: Vec::new(),
                dns: Vec::new(),
            }
        );
    }

    #[test]
    fn malformed_fields_resolve_to_nothing_instead_of_failing() {
        let status = json!({
            "up": "yes", "l3_device": 7,
            "ipv4-address": [{"address": "not-an-address", "mask": 24}],
            "route": [{"target": "0.0.0.0", "mask": "0", "nexthop": "203.0.113.1"}]
        });
        assert_eq!(parse_status(&status, Family::Ipv4), NetifdLink::default());
        assert_eq!(
            parse_status(&json!(null), Family::Ipv4),
            NetifdLink::default()
        );
    }

    /// A DHCPv6 `wan6` with a delegated /56, as netifd reports it: the default route's next
    /// hop is the ISP router's link-local address, the link-local address is not the source.
    #[test]
    fn wan6_resolves_link_local_gateway_global_address_and_delegated_prefix() {
        let status = json!({
            "up": true, "l3_device": "eth1", "proto": "dhcpv6", "device": "eth1",
            "ipv4-address": [],
            "ipv6-address": [{"address": "fe80::2", "mask": 64},
                             {"address": "2001:db8:ff::2", "mask": 64, "preferred": 3600}],
            "ipv6-prefix": [{"address": "2001:db8:1::", "mask": 56, "preferred": 3600,
                             "valid": 7200, "class": "wan6", "assigned": {}}],
            "dns-server": ["2001:db8:ff::53", "192.0.2.53"],
            "route": [{"target": "2001:db8:ff::", "mask": 64, "nexthop": "::"},
                      {"target": "::", "mask": 0, "nexthop": "fe80::1",
                       "source": "2001:db8:1::/56"}],
            "inactive": {"route": []}
        });
        assert_eq!(
            parse_status(&status, Family::Ipv6),
            NetifdLink {
                up: true,
                device: Some("eth1".into()),
                gateway: Some("fe80::1".parse().unwrap()),
                address: Some("2001:db8:ff::2".parse().unwrap()),
                prefixes: vec![Cidr::parse("2001:db8:1::/56").unwrap()],
                dns: vec!["2001:db8:ff::53".parse().unwrap()],
            }
        );
        assert!(
            !parse_status(&status, Family::Ipv4).up,
            "no IPv4 default route"
        );
        assert!(!parse_status(&dhcp_wan(), Family::Ipv6).up);
    }
}
