//! `connmark-lb explain`: which rule, policy and link a new connection would get, from the
//! live state (link health from the daemon, set and sticky contents from the kernel), without
//! changing anything.
//!
//! The decision itself is pure ([`explain`]): the same plan the rules were rendered from,
//! walked the way the packet path walks it, plus the kernel facts and the time in [`Facts`]
//! (the caller gathers them). [`query`] reads the question, [`report`] writes the answer.

mod facts;
mod query;
mod report;

pub use facts::{Clock, Facts, Moment};
pub use query::Query;

use crate::config::{Balance, Cidr, Config, Family, HashKey, LastResort, Proto, Rule, RuleTarget};
use crate::hash;
use crate::plan::{Choice, DnsWay, Plan};
use crate::render::nft::sticky_set;
use std::net::IpAddr;

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
    /// The moment the rules' schedules were matched at.
    pub now: Moment,
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
        now: facts.now,
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
    if dns(plan, query, &mut answer) {
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
        matched_rule(r, facts)
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
        && (rule.src_mac.is_empty() || q.mac.is_some_and(|m| rule.src_mac.contains(&m)))
        && (rule.src_dev.is_empty() || q.dev.as_ref().is_some_and(|d| rule.src_dev.contains(d)))
        && rule.schedule.is_none_or(|s| {
            let clock = clock_of(facts, s.utc);
            s.matches(clock.seconds, clock.weekday, clock.monthday)
        })
}

/// The clock a schedule is matched on: UTC, or the router's local time.
fn clock_of(facts: &Facts, utc: bool) -> Clock {
    if utc { facts.now.utc } else { facts.now.local }
}

/// How a rule that matched is named in the reason: with its schedule and the time it was
/// matched at, when it has one.
fn matched_rule(rule: &Rule, facts: &Facts) -> String {
    let Some(schedule) = rule.schedule else {
        return format!("{} matches", rule.label);
    };
    let clock = clock_of(facts, schedule.utc);
    let zone = if schedule.utc { "UTC" } else { "local time" };
    format!(
        "{} matches at {} {} {zone}",
        rule.label,
        crate::config::matches::WEEKDAYS[clock.weekday as usize % 7],
        crate::config::matches::clock(clock.seconds)
    )
}

/// The answer when `query` is a new DNS connection to one of the links' servers, which is
/// steered before any rule.
fn dns(plan: &Plan, query: &Query, answer: &mut Explanation) -> bool {
    let dns_port = matches!(query.proto, Some(Proto::Tcp | Proto::Udp)) && query.port == Some(53);
    let Some(way) = plan.dns_way_to(query.dst).filter(|_| dns_port) else {
        return false;
    };
    let dst = query.dst;
    match way {
        DnsWay::Pin(link) => {
            answer.decision = "dns";
            answer.link = Some(link);
            answer.reason = format!(
                "{dst} is a DNS server of {0}: queries to it leave by {0}, before any rule",
                plan.links[link].name
            );
        }
        DnsWay::Follow { link, server } => {
            answer.decision = "dns";
            answer.link = Some(link);
            answer.reason = format!(
                "{dst} is a DNS server of a link that is not live: queries to it go to {server}, a DNS server of {0}, through {0}",
                plan.links[link].name
            );
        }
        DnsWay::Refuse => {
            answer.decision = "unreachable";
            answer.reason = format!(
                "{dst} is a DNS server of a link that is not live, and no live {} link has one: queries to it are refused at once",
                Family::of(&dst).label()
            );
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mac;
    use crate::config::raw::RawConfig;
    use crate::plan::tests::states;
    use serde_json::{Value, json};

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

    fn setup(json: &str, up: [bool; 2]) -> (Config, Plan) {
        let config = Config::from_raw(&RawConfig::from_json_text(json).unwrap()).unwrap();
        let plan = Plan::build(&config, &states(&config, &up));
        (config, plan)
    }

    fn ask(config: &Config, plan: &Plan, facts: &Facts, line: &str) -> Explanation {
        explain(config, plan, facts, &Query::parse(&words(line)).unwrap())
    }

    #[test]
    fn rules_sets_sticky_and_hash() {
        let (config, plan) = setup(CONFIG, [true, true]);
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
            now: Moment::default(),
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

        let (config, plan) = setup(CONFIG, [true, false]);
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

    const MATCHES: &str = r#"{"values":{
        "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","dns":"192.0.2.53"},
        "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2","dns":"198.51.100.53"},
        "m2":{".type":"member",".name":"m2",".index":3,"interface":"wanb"},
        "only2":{".type":"policy",".name":"only2",".index":4,"use_member":["m2"]},
        "night":{".type":"rule",".name":"night",".index":5,"start_time":"22:00","stop_time":"06:00","use_policy":"only2"},
        "tv":{".type":"rule",".name":"tv",".index":6,"src_mac":"02:00:5e:10:00:01","use_policy":"only2"},
        "guest":{".type":"rule",".name":"guest",".index":7,"src_dev":"br-guest","use_policy":"only2"},
        "utc":{".type":"rule",".name":"utc",".index":8,"start_time":"12:00","utc_time":"1","weekdays":"Sun","use_policy":"only2"}
    }}"#;

    fn at(local: u32, utc: u32, weekday: u32) -> Facts {
        let clock = |seconds| Clock {
            seconds,
            weekday,
            monthday: 1,
        };
        Facts {
            sets: Vec::new(),
            now: Moment {
                local: clock(local),
                utc: clock(utc),
            },
        }
    }

    #[test]
    fn time_mac_and_ingress_device_decide_with_the_clock_and_the_origin() {
        let (config, plan) = setup(MATCHES, [true, true]);
        let mut query = Query::parse(&words("192.168.1.5 203.0.113.9")).unwrap();
        let e = explain(&config, &plan, &at(23 * 3600, 21 * 3600, 1), &query);
        assert_eq!((e.rule.as_deref(), e.link), (Some("night"), Some(1)));
        assert!(
            e.reason
                .starts_with("rule 'night' matches at Tuesday 23:00:00 local time"),
            "{}",
            e.reason
        );
        let noon = at(12 * 3600, 10 * 3600, 1);
        assert_eq!(explain(&config, &plan, &noon, &query).rule, None);
        query.mac = Mac::parse("02:00:5e:10:00:01");
        assert_eq!(
            explain(&config, &plan, &noon, &query).rule.as_deref(),
            Some("tv")
        );
        query.mac = Mac::parse("02:00:5e:10:00:02");
        query.dev = Some("br-guest".into());
        assert_eq!(
            explain(&config, &plan, &noon, &query).rule.as_deref(),
            Some("guest")
        );
        query.dev = None;
        let sunday_utc_afternoon = at(12 * 3600, 13 * 3600, 6);
        let e = explain(&config, &plan, &sunday_utc_afternoon, &query);
        assert_eq!(e.rule.as_deref(), Some("utc"));
        assert!(e.reason.contains("at Sunday 13:00:00 UTC"), "{}", e.reason);
    }

    #[test]
    fn dns_queries_to_a_links_servers_are_decided_before_any_rule() {
        let night = at(23 * 3600, 23 * 3600, 0);
        let (config, plan) = setup(MATCHES, [true, true]);
        let e = ask(&config, &plan, &night, "192.168.1.5 192.0.2.53 udp 53");
        assert_eq!((e.decision, e.link, e.rule), ("dns", Some(0), None));
        let e = ask(&config, &plan, &night, "192.168.1.5 192.0.2.53 tcp 80");
        assert_eq!(e.rule.as_deref(), Some("night"), "not a DNS query");
        let (_, plan) = setup(MATCHES, [false, true]);
        let e = ask(&config, &plan, &night, "192.168.1.5 192.0.2.53 tcp 53");
        assert_eq!((e.decision, e.link), ("dns", Some(1)));
        assert!(e.reason.contains("go to 198.51.100.53"), "{}", e.reason);
        let (_, plan) = setup(MATCHES, [false, false]);
        let e = ask(&config, &plan, &night, "192.168.1.5 192.0.2.53 udp 53");
        assert_eq!((e.decision, e.link), ("unreachable", None));
    }
}
