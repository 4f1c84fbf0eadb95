//! Tunnels as links: a tunnel interface (`wg0`, `tun0`) is a link like any other, and its
//! `underlay` names the links its outer (encrypted) packets leave by. Those packets are found
//! by the tunnel `endpoint` (the peer's outer address, and port), matched in the output hook
//! and pinned to the first live underlay, never to the tunnel itself. See docs/tunnels.md
//! for why this is our own rule rather than WireGuard's `fwmark`.

use super::model::Interface;
use super::value::SectionReader;
use crate::error::{Error, Result};
use std::net::{IpAddr, SocketAddr};

/// A tunnel link's outer side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// Names of the interfaces the outer packets leave by, in order of preference.
    pub underlay: Vec<String>,
    /// The peer's outer address.
    pub endpoint: IpAddr,
    /// The peer's outer UDP or TCP port; None: every packet to `endpoint`.
    pub port: Option<u16>,
}

/// `list underlay` and `option endpoint` of an interface: both or neither.
pub(super) fn read_tunnel(r: &mut SectionReader) -> Result<Option<Tunnel>> {
    let underlay: Vec<String> = r.list("underlay").iter().map(|s| s.to_string()).collect();
    let endpoint = r.single("endpoint")?;
    match (underlay.is_empty(), endpoint) {
        (true, None) => Ok(None),
        (true, Some(_)) => Err(r.error("endpoint", "needs `underlay`: the links it leaves by")),
        (false, None) => Err(r.error(
            "underlay",
            "needs `endpoint`: the tunnel peer's outer address (and port)",
        )),
        (false, Some(text)) => {
            let (endpoint, port) = parse_endpoint(text).ok_or_else(|| {
                r.error(
                    "endpoint",
                    format!("expected ADDRESS, ADDRESS:PORT or [IPv6]:PORT, got \"{text}\""),
                )
            })?;
            Ok(Some(Tunnel {
                underlay,
                endpoint,
                port,
            }))
        }
    }
}

/// `198.51.100.7`, `198.51.100.7:51820`, `2001:db8::7` or `[2001:db8::7]:51820`.
fn parse_endpoint(text: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some((addr, None));
    }
    let socket = text.parse::<SocketAddr>().ok()?;
    (socket.port() != 0).then_some((socket.ip(), Some(socket.port())))
}

/// Every underlay is another interface that is not a tunnel itself, of the endpoint's family.
pub(super) fn check_tunnels(interfaces: &[Interface]) -> Result<()> {
    for iface in interfaces {
        let Some(tunnel) = &iface.tunnel else {
            continue;
        };
        let section = format!("interface '{}'", iface.name);
        for name in &tunnel.underlay {
            let fail = |message: String| Err(Error::config(&section, Some("underlay"), message));
            let Some(under) = interfaces.iter().find(|i| &i.name == name) else {
                return fail(format!("\"{name}\" is not an interface section"));
            };
            if under.name == iface.name {
                return fail("a tunnel cannot carry its own outer packets".into());
            }
            if under.tunnel.is_some() {
                return fail(format!(
                    "'{name}' is a tunnel itself; nesting is not supported"
                ));
            }
            if under.family.parse(&tunnel.endpoint.to_string()).is_none() {
                return fail(format!(
                    "'{name}' carries {}, but endpoint {} is not of that family",
                    under.family.label(),
                    tunnel.endpoint
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::raw::RawConfig;

    fn load(interfaces: &str) -> Result<Config> {
        let text = format!(r#"{{"values":{{{interfaces}}}}}"#);
        Config::from_raw(&RawConfig::from_json_text(&text)?)
    }

    const WANS: &str = r#""wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
        "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2"}"#;

    fn with_tunnel(options: &str) -> Result<Config> {
        load(&format!(
            r#"{WANS},"vpn":{{".type":"interface",".name":"vpn",".index":3,"device":"tun0"{options}}}"#
        ))
    }

    #[test]
    fn endpoints_parse_with_and_without_port() {
        assert_eq!(
            parse_endpoint("198.51.100.7:51820"),
            Some(("198.51.100.7".parse().unwrap(), Some(51820)))
        );
        assert_eq!(
            parse_endpoint("[2001:db8::7]:1194"),
            Some(("2001:db8::7".parse().unwrap(), Some(1194)))
        );
        assert_eq!(
            parse_endpoint("2001:db8::7"),
            Some(("2001:db8::7".parse().unwrap(), None))
        );
        assert_eq!(parse_endpoint("peer.example:1"), None);
        assert_eq!(parse_endpoint("198.51.100.7:0"), None);
    }

    #[test]
    fn a_tunnel_reads_its_underlay_list_and_endpoint() {
        let c =
            with_tunnel(r#","underlay":["wanb","wan"],"endpoint":"198.51.100.7:51820""#).unwrap();
        let tunnel = c.interfaces[2].tunnel.clone().unwrap();
        assert_eq!(tunnel.underlay, ["wanb", "wan"]);
        assert_eq!(tunnel.port, Some(51820));
    }

    #[test]
    fn bad_tunnels_name_the_section_and_option() {
        for (options, option, words) in [
            (r#","underlay":"wanb""#, "underlay", "needs `endpoint`"),
            (
                r#","endpoint":"198.51.100.7""#,
                "endpoint",
                "needs `underlay`",
            ),
            (
                r#","underlay":"wanx","endpoint":"198.51.100.7""#,
                "underlay",
                "not an interface",
            ),
            (
                r#","underlay":"vpn","endpoint":"198.51.100.7""#,
                "underlay",
                "its own",
            ),
            (
                r#","underlay":"wanb","endpoint":"2001:db8::7""#,
                "underlay",
                "not of that family",
            ),
            (
                r#","underlay":"wanb","endpoint":"peer:1""#,
                "endpoint",
                "expected ADDRESS",
            ),
        ] {
            let message = with_tunnel(options).unwrap_err().to_string();
            assert!(message.contains("interface 'vpn'"), "{message}");
            assert!(
                message.contains(option) && message.contains(words),
                "{message}"
            );
        }
    }

    #[test]
    fn tunnels_do_not_nest() {
        let message = load(&format!(
            r#"{WANS},"vpn":{{".type":"interface",".name":"vpn",".index":3,"device":"tun0","underlay":"wanb","endpoint":"198.51.100.7"}},
            "vpn2":{{".type":"interface",".name":"vpn2",".index":4,"device":"tun1","underlay":"vpn","endpoint":"198.51.100.8"}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(message.contains("nesting"), "{message}");
    }
}
