//! `connmark-lb explain`: which rule, policy and link a new connection would get, from the
//! live state (link health from the daemon, set and sticky contents from the kernel), without
//! changing anything.
//!
//! The decision itself is pure ([`explain`]): the same plan the rules were rendered from,
//! walked the way the packet path walks it, plus the kernel facts in [`Facts`] (the caller lists them).

use crate::config::{Balance, Cidr, Config, Family, HashKey, LastResort, Proto, Rule, RuleTarget};
use crate::error::{Error, Result};
use crate::hash;
use crate::plan::{Choice, Plan};
use crate::render::nft::sticky_set;
use serde_json::{Value, json};
use std::net::IpAddr;

/// The connection asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// None: any protocol (rules that name one do not match).
    pub proto: Option<Proto>,
    pub port: Option<u16>,
}

impl Query {
    /// `SRC DST [PROTO [DPORT]]` as given on the command line.
    pub fn parse(words: &[String]) -> Result<Query> {
        let usage = |why: String| Error::Usage(format!("explain SRC DST [PROTO [DPORT]]: {why}"));
        let addr = |word: Option<&String>, what: &str| -> Result<IpAddr> {
            let word = word.ok_or_else(|| usage(format!("missing {what}")))?;
            word.parse()
                .map_err(|_| usage(format!("{what} \"{word}\" is not an IP address")))
        };
        if words.len() > 4 {
            return Err(usage(format!("unexpected \"{}\"", words[4])));
        }
        let src = addr(words.first(), "SRC")?;
        let dst = addr(words.get(1), "DST")?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(usage("SRC and DST are of different families".into()));
        }
        let proto = match words.get(2).map(String::as_str) {
            None => None,
            Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            Some("icmp") => Some(Proto::Icmp),
            Some(other) => Some(Proto::Number(other.parse().map_err(|_| {
                usage(format!(
                    "PROTO \"{other}\": expected tcp, udp, icmp or a number"
                ))
            })?)),
        };
        let port = match words.get(3) {
            None => None,
            Some(word) => Some(
                word.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| usage(format!("DPORT \"{word}\" is not a port")))?,
            ),
        };
        if port.is_some() && !matches!(proto, Some(Proto::Tcp | Proto::Udp)) {
            return Err(usage("DPORT needs PROTO tcp or udp".into()));
        }
        Ok(Query {
            src,
            dst,
            proto,
            port,
        })
    }
}

/// What the kernel holds right now: the elements of every set in our table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// (kernel set name, its elements).
    pub sets: Vec<(String, Vec<Cidr>)>,
}

impl Facts {
    /// Reads the sets of an `nft -j list table` listing.
    pub fn parse(text: &str) -> Result<Facts> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::ToolOutput(format!("unexpected output of nft -j: {e}")))?;
        let mut sets = Vec::new();
        for item in value["nftables"].as_array().into_iter().flatten() {
            let Some(set) = item.get("set") else { continue };
            let Some(name) = set["name"].as_str() else {
                continue;
            };
            let elements = set["elem"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(element)
                .collect();
            sets.push((name.to_string(), elements));
        }
        Ok(Facts { sets })
    }

    /// Whether kernel set `name` holds `addr`.
    pub fn contains(&self, name: &str, addr: IpAddr) -> bool {
        self.sets
            .iter()
            .any(|(n, elements)| n == name && elements.iter().any(|p| p.contains(&addr)))
    }
}

/// One set element of nft's JSON: an address or a prefix, possibly wrapped with its timeout.
fn element(value: &Value) -> Option<Cidr> {
    match value {
        Value::String(text) => Cidr::parse(text),
        Value::Object(map) => {
            if let Some(inner) = map.get("elem") {
                return element(&inner["val"]);
            }
            let prefix = map.get("prefix")?;
            let addr = prefix["addr"].as_str()?;
            let len = prefix["len"].as_u64()?;
            Cidr::parse(&format!("{addr}/{len}"))
        }
        _ => None,
    }
}

/// The answer, in the fields of the `explain --json` interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub rule: Option<String>,
    pub policy: Option<String>,
    /// (member, interface, metric, weight, live)
    pub members: Vec<(String, String, u32, u32, bool)>,
    pub decision: &'static str,
    pub bucket: Option<u32>,
    /// The link a new connection takes, when it is decided already.
    pub link: Option<usize>,
    pub reason: String,
}

/// Walks `plan` the way the packet path does for a new connection `query`.
pub fn explain(config: &Config, plan: &Plan, facts: &Facts, query: &Query) -> Explanation {
    let mut answer = Explanation {
        rule: None,
        policy: None,
        members: Vec::new(),
        decision: "default",
        bucket: None,
        link: None,
        reason: String::new(),
    };
    let family = Family::of(&query.src);
    if !plan.has(family) {
        answer.decision = "main";
        answer.reason = format!(
            "no {} link is configured: {0} traffic is left to the main routing table",
            family.label()
        );
        return answer;
    }
    let pinned = plan.links.iter().position(|l| {
        l.up && l.family == family && l.prefixes.iter().any(|p| p.contains(&query.src))
    });
    if let Some(link) = pinned {
        answer.decision = "pinned";
        answer.link = Some(link);
        answer.reason = format!(
            "{} is in a prefix of {}, which its new connections always take",
            query.src, plan.links[link].name
        );
        return answer;
    }
    let (rule, target) = if plan.rules.is_empty() {
        match plan.policies.first() {
            Some(_) => (None, RuleTarget::Policy(0)),
            None => (None, RuleTarget::Default),
        }
    } else {
        match plan.rules.iter().find(|r| matches(r, facts, query)) {
            Some(rule) => (Some(rule), rule.target),
            None => {
                answer.reason = "no rule matches: the connection is not marked and follows the main routing table".into();
                return answer;
            }
        }
    };
    answer.rule = rule.map(|r| r.name.clone());
    let matched = rule.map_or("with no rules, every connection".to_string(), |r| {
        format!("{} matches", r.label)
    });
    let index = match target {
        RuleTarget::Policy(index) => index,
        RuleTarget::Default => {
            answer.decision = "main";
            answer.reason =
                format!("{matched}: use_policy default sends it to the main routing table");
            return answer;
        }
        RuleTarget::Unreachable | RuleTarget::Blackhole => {
            answer.decision = "unreachable";
            answer.reason = format!("{matched}: its policy refuses the connection");
            return answer;
        }
    };
    let (Some(policy), Some(configured)) = (plan.policies.get(index), config.policies.get(index))
    else {
        return answer;
    };
    answer.policy = Some(policy.name.clone());
    answer.members = configured
        .members
        .iter()
        .map(|m| {
            let iface = &config.interfaces[m.interface];
            let live = plan.links.iter().any(|l| l.name == iface.name && l.up);
            (m.name.clone(), iface.name.clone(), m.metric, m.weight, live)
        })
        .collect();
    let Some((_, choice)) = policy.choices.iter().find(|(f, _)| *f == family) else {
        answer.decision = "main";
        answer.reason = format!(
            "{matched}; policy {} has no {} member, so the main routing table decides",
            policy.name,
            family.label()
        );
        return answer;
    };
    let shares = match choice {
        Choice::Fallback(resort) => {
            let (decision, what) = match resort {
                LastResort::Default => ("main", "goes to the main routing table"),
                LastResort::Unreachable => ("unreachable", "is refused as unreachable"),
                LastResort::Blackhole => ("unreachable", "is dropped (blackhole)"),
            };
            answer.decision = decision;
            answer.reason = format!(
                "{matched}; no member of policy {} is live, so by its last_resort the connection {what}",
                policy.name
            );
            return answer;
        }
        Choice::Spread(shares) => shares,
    };
    if let Some(sticky) = rule.and_then(|r| r.sticky.map(|s| (r, s))) {
        let (rule, sticky) = sticky;
        let held = shares
            .iter()
            .map(|s| s.link)
            .find(|&link| facts.contains(&sticky_set(rule, &plan.links[link].name), query.src));
        if let Some(link) = held {
            answer.decision = "sticky";
            answer.link = Some(link);
            answer.reason = format!(
                "{matched}; {} started a connection through {} less than {} s ago and sticks to it",
                query.src, plan.links[link].name, sticky.timeout
            );
            return answer;
        }
    }
    let note = match rule.and_then(|r| r.sticky) {
        Some(s) => format!(" (then its source sticks to that link for {} s)", s.timeout),
        None => String::new(),
    };
    if shares.len() == 1 {
        let link = shares[0].link;
        answer.decision = "pinned";
        answer.link = Some(link);
        answer.reason = format!(
            "{matched}; {} is the only live link of policy {}{note}",
            plan.links[link].name, policy.name
        );
        return answer;
    }
    match policy.balance {
        Balance::Hash(key) => {
            let dst = (key == HashKey::SrcDst).then_some(query.dst);
            let bucket = hash::bucket(query.src, dst);
            let link = policy.buckets_of(family)[bucket as usize];
            answer.decision = "hashed";
            answer.bucket = Some(bucket);
            answer.link = Some(link);
            answer.reason = format!(
                "{matched}; policy {} hashes the {} to bucket {bucket} of {}, which {} owns{note}",
                policy.name,
                if dst.is_some() {
                    "source and destination"
                } else {
                    "source"
                },
                hash::BUCKETS,
                plan.links[link].name
            );
        }
        balance => {
            answer.decision = "balanced";
            let total: u32 = shares.iter().map(|s| s.weight).sum();
            let parts: Vec<String> = shares
                .iter()
                .map(|s| format!("{} {}/{total}", plan.links[s.link].name, s.weight))
                .collect();
            let how = if balance == Balance::Random {
                "at random"
            } else {
                "in rotation"
            };
            answer.reason = format!(
                "{matched}; policy {} spreads new connections {how}: {}{note}",
                policy.name,
                parts.join(", ")
            );
        }
    }
    answer
}

/// Whether `rule` matches the new connection (a rule's port or protocol the query does not
/// give does not match).
fn matches(rule: &Rule, facts: &Facts, q: &Query) -> bool {
    let in_cidrs =
        |cidrs: &[Cidr], addr: IpAddr| cidrs.is_empty() || cidrs.iter().any(|c| c.contains(&addr));
    let in_set = |set: &Option<String>, addr: IpAddr| {
        set.as_ref().is_none_or(|name| {
            facts.contains(
                &crate::config::classes::set_name(name, addr.is_ipv6()),
                addr,
            )
        })
    };
    let in_ports = |ports: &[crate::config::PortRange], port: Option<u16>| {
        ports.is_empty() || port.is_some_and(|p| ports.iter().any(|r| (r.from..=r.to).contains(&p)))
    };
    rule.family.is_none_or(|f| f == Family::of(&q.src))
        && (rule.proto == Proto::All || Some(rule.proto) == q.proto)
        && in_cidrs(&rule.src_ip, q.src)
        && in_cidrs(&rule.dest_ip, q.dst)
        && rule.src_port.is_empty()
        && in_ports(&rule.dest_port, q.port)
        && in_set(&rule.dest_set, q.dst)
        && in_set(&rule.src_set, q.src)
}

impl Explanation {
    /// The `explain --json` object.
    pub fn to_json(&self, plan: &Plan, query: &Query) -> Value {
        let link = self.link.and_then(|l| plan.links.get(l));
        let protocol = query.proto.map(|p| match p {
            Proto::Tcp => json!("tcp"),
            Proto::Udp => json!("udp"),
            Proto::Icmp => json!("icmp"),
            Proto::Number(n) => json!(n.to_string()),
            Proto::All => Value::Null,
        });
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|(member, interface, metric, weight, live)| {
                json!({"member": member, "interface": interface, "metric": metric,
                       "weight": weight, "live": live})
            })
            .collect();
        json!({
            "source": query.src.to_string(),
            "destination": query.dst.to_string(),
            "protocol": protocol,
            "port": query.port,
            "rule": self.rule,
            "policy": self.policy,
            "members": members,
            "decision": self.decision,
            "bucket": self.bucket,
            "interface": link.map(|l| l.name.clone()),
            "device": link.and_then(|l| l.device.clone()),
            "source_address": link.and_then(|l| l.source).map(|a| a.to_string()),
            "reason": self.reason,
        })
    }

    /// A few lines for people.
    pub fn to_text(&self, plan: &Plan, query: &Query) -> String {
        let value = self.to_json(plan, query);
        let field = |key: &str| match &value[key] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let members: Vec<String> = self
            .members
            .iter()
            .map(|(m, i, metric, weight, live)| {
                format!(
                    "{m} ({i}, metric {metric}, weight {weight}, {})",
                    if *live { "live" } else { "not live" }
                )
            })
            .collect();
        format!(
            "decision: {}\nrule: {}\npolicy: {}\nmembers: {}\ninterface: {} (device {}, source {})\nbucket: {}\nreason: {}\n",
            self.decision,
            field("rule"),
            field("policy"),
            if members.is_empty() {
                "-".to_string()
            } else {
                members.join(", ")
            },
            field("interface"),
            field("device"),
            field("source_address"),
            field("bucket"),
            self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawConfig;
    use crate::source::LinkState;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    const CONFIG: &str = r#"{"values":{
        "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","source":"10.0.1.2"},
        "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2"},
        "m1":{".type":"member",".name":"m1",".index":3,"interface":"wan"},
        "m2":{".type":"member",".name":"m2",".index":4,"interface":"wanb"},
        "h":{".type":"policy",".name":"h",".index":5,"use_member":["m1","m2"],"balance":"hash"},
        "only2":{".type":"policy",".name":"only2",".index":6,"use_member":["m2"]},
        "vpn":{".type":"rule",".name":"vpn",".index":7,"dest_set":"vpn","use_policy":"only2"},
        "web":{".type":"rule",".name":"web",".index":8,"proto":"tcp","dest_port":"443","sticky":"1","use_policy":"h"},
        "dns":{".type":"rule",".name":"dns",".index":9,"proto":"udp","dest_port":"53","use_policy":"default"}
    }}"#;

    fn setup(up: [bool; 2]) -> (Config, Plan) {
        let config = Config::from_raw(&RawConfig::from_json_text(CONFIG).unwrap()).unwrap();
        let states: Vec<LinkState> = config
            .interfaces
            .iter()
            .zip(up)
            .map(|(i, up)| LinkState {
                up,
                ..LinkState::from_config(i)
            })
            .collect();
        let plan = Plan::build(&config, &states);
        (config, plan)
    }

    fn ask(config: &Config, plan: &Plan, facts: &Facts, line: &str) -> Explanation {
        explain(config, plan, facts, &Query::parse(&words(line)).unwrap())
    }

    #[test]
    fn rules_sets_sticky_and_hash() {
        let (config, plan) = setup([true, true]);
        let facts = Facts {
            sets: vec![
                (
                    "vpn_v4".into(),
                    vec![Cidr::parse("172.31.254.0/24").unwrap()],
                ),
                (
                    "sticky_web_wan".into(),
                    vec![Cidr::parse("192.168.1.7").unwrap()],
                ),
            ],
        };
        let e = ask(&config, &plan, &facts, "192.168.1.5 172.31.254.9");
        assert_eq!(
            (e.decision, e.link, e.rule.as_deref()),
            ("pinned", Some(1), Some("vpn"))
        );
        let e = ask(&config, &plan, &facts, "192.168.1.7 8.8.8.8 tcp 443");
        assert_eq!((e.decision, e.link), ("sticky", Some(0)));
        let e = ask(&config, &plan, &facts, "192.168.1.8 8.8.8.8 tcp 443");
        assert_eq!(e.decision, "hashed");
        let bucket = hash::bucket("192.168.1.8".parse().unwrap(), None);
        assert_eq!(e.bucket, Some(bucket));
        assert_eq!(
            e.link,
            Some(plan.policies[0].buckets_of(Family::Ipv4)[bucket as usize])
        );
        let e = ask(&config, &plan, &facts, "192.168.1.8 8.8.8.8 udp 53");
        assert_eq!(e.decision, "main");
        let e = ask(&config, &plan, &facts, "192.168.1.8 8.8.8.8");
        assert_eq!((e.decision, e.rule.as_ref()), ("default", None));
        let json = e.to_json(&plan, &Query::parse(&words("192.168.1.8 8.8.8.8")).unwrap());
        assert_eq!(json["protocol"], Value::Null);
        assert_eq!(json["members"], json!([]));

        let (config, plan) = setup([true, false]);
        let e = ask(&config, &plan, &facts, "192.168.1.5 172.31.254.9 tcp 80");
        assert_eq!(e.decision, "unreachable");
        assert!(!e.members[0].4, "wanb is down");
        let json = e.to_json(
            &plan,
            &Query::parse(&words("192.168.1.5 172.31.254.9 tcp 80")).unwrap(),
        );
        assert_eq!(json["port"], 80);
        assert_eq!(json["interface"], Value::Null);
    }

    #[test]
    fn queries_are_checked() {
        for bad in [
            "",
            "10.0.0.1",
            "10.0.0.1 ::1",
            "10.0.0.1 10.0.0.2 icmp 80",
            "a b",
            "10.0.0.1 10.0.0.2 tcp 0",
        ] {
            assert!(Query::parse(&words(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_elements_from_nft_json() {
        let text = r#"{"nftables":[{"metainfo":{}},{"set":{"family":"inet","name":"vpn_v4","table":"connmark_lb","type":"ipv4_addr","flags":["interval","timeout"],"elem":[{"prefix":{"addr":"172.31.254.0","len":28}},{"elem":{"val":"172.31.254.77","timeout":3600,"expires":3599}},"192.0.2.1"]}},{"chain":{"name":"x"}}]}"#;
        let facts = Facts::parse(text).unwrap();
        assert!(facts.contains("vpn_v4", "172.31.254.77".parse().unwrap()));
        assert!(facts.contains("vpn_v4", "172.31.254.3".parse().unwrap()));
        assert!(facts.contains("vpn_v4", "192.0.2.1".parse().unwrap()));
        assert!(!facts.contains("vpn_v4", "172.31.254.16".parse().unwrap()));
        assert!(!facts.contains("other", "192.0.2.1".parse().unwrap()));
    }
}
