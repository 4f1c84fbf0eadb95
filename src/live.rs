//! What the kernel has right now, parsed from tool output (pure parsing, tested on samples).
//!
//! Apply compares this with the plan so it adds only what is missing and removes only what is
//! ours and obsolete: re-apply is a no-op, and foreign rules are never touched.

use crate::error::{Error, Result};
use crate::plan::{DeviceName, IpRule, Route, RuleAction, Selector};
use serde_json::Value;
use std::net::IpAddr;

/// A route found in one of our tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRoute {
    pub table: u32,
    /// Destination as `ip` prints it (`default`, `10.0.0.0/8`).
    pub dst: String,
    /// The same route in plan form, when it is a plain unicast default route.
    pub route: Option<Route>,
}

/// The routing state relevant to us: device names, all IPv4 rules, routes in our tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpState {
    pub devices: Vec<String>,
    pub rules: Vec<IpRule>,
    /// Rules `ip` listed that we cannot represent (foreign kinds); kept only for counting.
    pub other_rules: usize,
    pub routes: Vec<LiveRoute>,
}

/// The commands that produce the text [`IpState::parse`] reads, in one `ip -4 -j -batch -`:
/// devices, then the family's rules and routes.
pub const IP_READ_BATCH: &str = "link show\nrule show\nroute show table all\n";

/// The same without devices, for the other family's `ip -6 -j -batch -` (devices are shared).
pub const IP_READ_RULES_ROUTES: &str = "rule show\nroute show table all\n";

impl IpState {
    /// Parses the JSON arrays printed by [`IP_READ_BATCH`] (or [`IP_READ_RULES_ROUTES`]: no
    /// devices), keeping the routes of numbered tables (which of them are ours is decided against
    /// a footprint later).
    pub fn parse(text: &str) -> Result<IpState> {
        let docs: Vec<Value> = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::ToolOutput(format!("unexpected output of ip -j: {e}")))?;
        let empty = Value::Array(Vec::new());
        let (links, rules, routes) = match docs.as_slice() {
            [links, rules, routes] => (links, rules, routes),
            [rules, routes] => (&empty, rules, routes),
            _ => {
                return Err(Error::ToolOutput(format!(
                    "expected 2 or 3 JSON lists from ip -j -batch, got {}",
                    docs.len()
                )));
            }
        };
        let items = |v: &Value| v.as_array().cloned().unwrap_or_default();
        let mut state = IpState {
            devices: items(links)
                .iter()
                .filter_map(|l| l.get("ifname")?.as_str().map(str::to_string))
                .collect(),
            ..IpState::default()
        };
        for r in items(rules) {
            match parse_rule(&r) {
                Some(rule) => state.rules.push(rule),
                None => state.other_rules += 1,
            }
        }
        for r in items(routes) {
            let Some(table) = r.get("table").and_then(|t| t.as_str()?.parse::<u32>().ok()) else {
                continue;
            };
            let dst = r.get("dst").and_then(Value::as_str).unwrap_or("default");
            let unicast = r.get("type").is_none_or(|t| t == "unicast");
            let route = match (dst, r.get("dev").and_then(Value::as_str), unicast) {
                ("default", Some(dev), true) => Some(Route {
                    table,
                    device: dev.to_string(),
                    gateway: r
                        .get("gateway")
                        .and_then(Value::as_str)
                        .and_then(|g| g.parse::<IpAddr>().ok()),
                }),
                _ => None,
            };
            state.routes.push(LiveRoute {
                table,
                dst: dst.to_string(),
                route,
            });
        }
        Ok(state)
    }
}

/// One rule of `ip -j rule show`, if it has a shape we can own.
fn parse_rule(r: &Value) -> Option<IpRule> {
    let priority = r.get("priority")?.as_u64()? as u32;
    if r.get("src").and_then(Value::as_str) != Some("all")
        || r.get("dst").is_some()
        || r.get("iif").is_some()
        || r.get("not").is_some()
    {
        return None;
    }
    let hex = |key: &str| -> Option<u32> {
        let text = r.get(key)?.as_str()?;
        u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
    };
    let oif = r.get("oif").and_then(Value::as_str);
    let selector = match (hex("fwmark"), hex("fwmask"), oif) {
        (Some(mark), Some(mask), None) => Selector::Fwmark { mark, mask },
        (Some(mark), None, None) => Selector::Fwmark {
            mark,
            mask: u32::MAX,
        },
        (None, _, None) => Selector::All,
        (None, _, Some(device)) => Selector::Oif(DeviceName::new(device)?),
        (Some(_), _, Some(_)) => return None,
    };
    let action = match (
        r.get("action").and_then(Value::as_str),
        r.get("table").and_then(Value::as_str),
        r.get("suppress_prefixlen").and_then(Value::as_u64),
    ) {
        (Some("unreachable"), _, _) => RuleAction::Unreachable,
        (Some("blackhole"), _, _) => RuleAction::Blackhole,
        (None, Some("main"), Some(0)) => RuleAction::MainWithoutDefault,
        (None, Some(table), None) => RuleAction::Lookup(table.parse().ok()?),
        _ => return None,
    };
    Some(IpRule {
        priority,
        selector,
        action,
    })
}

/// Our iptables objects as `iptables-save` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptablesState {
    /// (table, chain) of every chain named with our prefix.
    pub chains: Vec<(String, String)>,
    /// (table, built-in chain, our chain) for every jump from a built-in chain into ours,
    /// repeated as often as it occurs.
    pub jumps: Vec<(String, String, String)>,
}

impl IptablesState {
    /// Parses `iptables-save` output, keeping only what carries our chain prefix.
    pub fn parse(text: &str) -> IptablesState {
        let prefix = crate::names::IPT_PREFIX;
        let mut state = IptablesState::default();
        let mut table = String::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim().to_string();
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or("");
                if name.starts_with(prefix) {
                    state.chains.push((table.clone(), name.to_string()));
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let words: Vec<&str> = rule.split_whitespace().collect();
                if let [chain, "-j", target] = words.as_slice() {
                    if !chain.starts_with(prefix) && target.starts_with(prefix) {
                        state
                            .jumps
                            .push((table.clone(), chain.to_string(), target.to_string()));
                    }
                }
            }
        }
        state
    }
}

/// Received and sent bytes of `device`, from `/proc/net/dev` (64-bit counters; the name is
/// followed by a colon and 16 numbers, received bytes first, sent bytes ninth).
pub fn net_dev_bytes(text: &str, device: &str) -> Option<(u64, u64)> {
    let numbers = text.lines().find_map(|line| {
        let (name, numbers) = line.split_once(':')?;
        (name.trim() == device).then_some(numbers)
    })?;
    let mut numbers = numbers.split_whitespace().map(|n| n.parse::<u64>().ok());
    Some((numbers.next()??, numbers.nth(7)??))
}

/// The device and hardware address of the first entry of an `ip -j neigh show to ADDR`
/// listing: where that neighbour's connections come in, and from which MAC.
pub fn neighbour(text: &str) -> Option<(String, Option<crate::config::Mac>)> {
    let entries: serde_json::Value = serde_json::from_str(text).ok()?;
    let entry = entries.as_array()?.first()?;
    let dev = entry.get("dev")?.as_str()?.to_string();
    let mac = entry
        .get("lladdr")
        .and_then(serde_json::Value::as_str)
        .and_then(crate::config::Mac::parse);
    Some((dev, mac))
}

/// The packet count of the first counter in `chain` of an `nft list table` listing.
pub fn nft_chain_packets(listing: &str, chain: &str) -> Option<u64> {
    let start = format!("chain {chain} {{");
    let mut lines = listing.lines().map(str::trim);
    lines.find(|line| *line == start)?;
    lines
        .take_while(|line| *line != "}")
        .find_map(|line| line.split("counter packets ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The packet count of the first rule of `chain` in `iptables-save -c` output
/// (`[packets:bytes] -A CHAIN ...`).
pub fn iptables_chain_packets(save: &str, chain: &str) -> Option<u64> {
    let rule = format!("] -A {chain} ");
    save.lines().find_map(|line| {
        let (counters, _) = line.strip_prefix('[')?.split_once(&rule)?;
        counters.split(':').next()?.parse().ok()
    })
}

/// Which of `candidates` (tables of nft family `family`, `ip` or `ip6`) hold nothing in
/// `nft -j list ruleset FAMILY`: no rule, set or other object, only chains with policy accept.
/// iptables-nft leaves such tables behind with their base chains, a hook every packet still
/// crosses.
pub fn empty_ip_tables(listing: &str, family: &str, candidates: &[&str]) -> Result<Vec<String>> {
    let value: Value = serde_json::from_str(listing)
        .map_err(|e| Error::ToolOutput(format!("unexpected output of nft -j: {e}")))?;
    let items = value["nftables"].as_array().cloned().unwrap_or_default();
    let mut empty = Vec::new();
    for &table in candidates {
        let mut exists = false;
        let mut holds = false;
        for item in items.iter().filter_map(Value::as_object) {
            for (kind, object) in item {
                if object["family"] != family {
                    continue;
                }
                match kind.as_str() {
                    "table" if object["name"] == table => exists = true,
                    "chain" if object["table"] == table => {
                        holds |= object.get("policy").is_some_and(|p| p != "accept");
                    }
                    _ if object["table"] == table => holds = true,
                    _ => {}
                }
            }
        }
        if exists && !holds {
            empty.push(table.to_string());
        }
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_neighbour_gives_its_device_and_mac() {
        let text = r#"[{"dst":"192.168.77.2","dev":"eth0","lladdr":"02:00:5E:10:00:01","state":["REACHABLE"]}]"#;
        let (dev, mac) = super::neighbour(text).unwrap();
        assert_eq!(dev, "eth0");
        assert_eq!(mac.unwrap().to_string(), "02:00:5e:10:00:01");
        assert_eq!(super::neighbour("[]"), None);
        let failed = r#"[{"dst":"192.168.77.3","dev":"eth0","state":["FAILED"]}]"#;
        assert_eq!(super::neighbour(failed), Some(("eth0".to_string(), None)));
    }

    use super::*;

    #[test]
    fn reads_device_bytes_and_chain_counters() {
        let net_dev = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:     840      12    0    0    0     0          0         0      840      12    0    0    0     0       0          0\n  \
             wan1:98765432109 70    0    0    0     0          0         0     5400      60    0    0    0     0       0          0\n";
        assert_eq!(net_dev_bytes(net_dev, "wan1"), Some((98_765_432_109, 5400)));
        assert_eq!(net_dev_bytes(net_dev, "lo"), Some((840, 840)));
        assert_eq!(net_dev_bytes(net_dev, "wan"), None);

        let nft = "table inet connmark_lb {\n\tchain mark_wan1 {\n\t\tcounter packets 20 bytes 1200 meta mark set meta mark & 0xffffc0ff | 0x00000100\n\t\tct mark set ct mark & 0xffffc0ff | 0x00000100\n\t}\n\tchain mark_wan2 {\n\t\tcounter packets 3 bytes 180 meta mark set 0x1\n\t}\n\tchain rules {\n\t\tgoto policy_x\n\t}\n}\n";
        assert_eq!(nft_chain_packets(nft, "mark_wan1"), Some(20));
        assert_eq!(nft_chain_packets(nft, "mark_wan2"), Some(3));
        assert_eq!(nft_chain_packets(nft, "rules"), None);
        assert_eq!(nft_chain_packets(nft, "mark_wan"), None);

        let save = "*mangle\n:PREROUTING ACCEPT [90:5400]\n:CMLB_MARK_1 - [0:0]\n[7:420] -A CMLB_MARK_1 -j MARK --set-xmark 0x100/0x3f00\n[7:420] -A CMLB_MARK_1 -j CONNMARK --save-mark\n[0:0] -A CMLB_MARK_2 -j MARK --set-xmark 0x200/0x3f00\nCOMMIT\n";
        assert_eq!(iptables_chain_packets(save, "CMLB_MARK_1"), Some(7));
        assert_eq!(iptables_chain_packets(save, "CMLB_MARK_2"), Some(0));
        assert_eq!(iptables_chain_packets(save, "CMLB_MARK_3"), None);
    }

    #[test]
    fn finds_tables_left_with_empty_accepting_chains() {
        let listing = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "mangle", "handle": 1}},
            {"chain": {"family": "ip", "table": "mangle", "name": "PREROUTING", "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}},
            {"rule": {"family": "ip", "table": "mangle", "chain": "PREROUTING", "handle": 2, "expr": []}},
            {"table": {"family": "ip", "name": "nat", "handle": 2}},
            {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
            {"table": {"family": "ip", "name": "filter", "handle": 3}},
            {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}]}"#;
        assert_eq!(
            empty_ip_tables(listing, "ip", &["mangle", "nat", "filter", "raw"]).unwrap(),
            ["nat"]
        );
    }

    #[test]
    fn parses_ip_batch_output() {
        let text = r#"[{"ifindex":1,"ifname":"lo"},{"ifindex":2,"ifname":"wan1"}]
[{"priority":0,"src":"all","table":"local"},{"priority":4000,"src":"all","table":"main","suppress_prefixlen":0},{"priority":4003,"src":"all","fwmark":"0x100","fwmask":"0x3f00","table":"4001"},{"priority":4004,"src":"all","fwmark":"0x100","fwmask":"0x3f00","action":"unreachable"},{"priority":100,"src":"10.0.0.0","srclen":8,"table":"main"},{"priority":32766,"src":"all","table":"main"}]
[{"dst":"default","gateway":"10.0.1.1","dev":"wan1","table":"4001","flags":[]},{"type":"unreachable","dst":"default","table":"4002","flags":[]},{"dst":"default","gateway":"10.0.1.1","dev":"wan1","flags":[]}]
"#;
        let s = IpState::parse(text).unwrap();
        assert_eq!(s.devices, ["lo", "wan1"]);
        assert_eq!(
            s.other_rules, 3,
            "lookups of named tables and from-prefix rules"
        );
        assert_eq!(
            s.rules[1],
            IpRule {
                priority: 4003,
                selector: Selector::Fwmark {
                    mark: 0x100,
                    mask: 0x3f00
                },
                action: RuleAction::Lookup(4001)
            }
        );
        assert_eq!(s.rules[0].action, RuleAction::MainWithoutDefault);
        assert_eq!(
            s.routes.len(),
            2,
            "routes of named tables (main) are skipped"
        );
        assert_eq!(
            s.routes[0].route,
            Some(Route {
                table: 4001,
                device: "wan1".into(),
                gateway: Some(IpAddr::from([10, 0, 1, 1]))
            })
        );
        assert_eq!(s.routes[1].route, None);
    }

    #[test]
    fn parses_iptables_save() {
        let text = "*mangle\n:PREROUTING ACCEPT [0:0]\n:CMLB_PREROUTING - [0:0]\n-A PREROUTING -j CMLB_PREROUTING\n-A PREROUTING -j CMLB_PREROUTING\n-A CMLB_PREROUTING -j CMLB_RULES\n-A PREROUTING -i eth0 -j OTHER\nCOMMIT\n*nat\n:CMLB_POSTROUTING - [0:0]\n-A POSTROUTING -j CMLB_POSTROUTING\nCOMMIT\n";
        let s = IptablesState::parse(text);
        assert_eq!(
            s.chains,
            [
                ("mangle".to_string(), "CMLB_PREROUTING".to_string()),
                ("nat".to_string(), "CMLB_POSTROUTING".to_string())
            ]
        );
        assert_eq!(s.jumps.len(), 3);
    }
}
