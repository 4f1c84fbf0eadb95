//! Reading UCI sections into the typed model: the `from_raw` driver, then one reader per
//! section type, in the order their references need (interfaces before members, members
//! before policies, policies before rules).

use super::checks::{check_interfaces, check_something_enabled};
use super::classes::{self, AddrSet};
use super::failback::{Failback, read_failback};
use super::family::{Family, is_link_local};
use super::matches::{read_macs, read_schedule, read_src_dev};
use super::model::{
    BackendChoice, Balance, Config, Globals, Interface, LastResort, Member, PRIORITY_SPAN, Policy,
    Proto, Rule, RuleTarget,
};
use super::options::{
    read_balance, read_dns, read_flush_conntrack, read_mark_mask, read_ports, read_prefixes,
    read_proto, read_rule_family,
};
use super::raw::{RawConfig, RawSection};
use super::standby::read_standby;
use super::track::read_track;
use super::tunnel;
use super::value::{SectionReader, valid_name};
use crate::error::{Error, Result};

const SECTION_TYPES: &[&str] = &["globals", "interface", "member", "policy", "rule", "set"];

impl Config {
    /// Validates raw sections into a typed config, reporting every error found.
    pub fn from_raw(raw: &RawConfig) -> Result<Config> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();

        for s in &raw.sections {
            if !SECTION_TYPES.contains(&s.kind.as_str()) {
                warnings.push(format!("{}: unknown section type, ignored", s.label()));
            } else if !valid_name(&s.name) {
                errors.push(Error::config(
                    &s.label(),
                    None,
                    "expected a section name of letters, digits and _ (1..64 characters)",
                ));
            }
        }
        let mut read = Reading {
            raw,
            errors: &mut errors,
            warnings: &mut warnings,
        };

        let globals = read
            .each("globals", |r, _| read_globals(r))
            .pop()
            .unwrap_or_default();
        let named: Vec<String> = raw
            .sections
            .iter()
            .filter(|s| s.kind == "globals")
            .map(RawSection::label)
            .collect();
        if let [.., last] = named.as_slice() {
            if named.len() > 1 {
                read.warnings.push(format!(
                    "{} 'config globals' sections: only the last, {last}, is used",
                    named.len()
                ));
            }
        }
        let interfaces = read.each("interface", |r, i| read_interface(r, i as u32 + 1));
        read.check(check_interfaces(&globals, &interfaces));
        read.check(tunnel::check_tunnels(&interfaces));
        let members = read.each("member", |r, _| read_member(r, &interfaces));
        let mut policies = read.each("policy", |r, _| {
            read_policy(r, &members, &interfaces, globals.balance)
        });
        if policies.is_empty() && members.is_empty() {
            policies.push(implicit_policy(&interfaces, globals.balance));
        }
        let rules = read.each("rule", |r, _| read_rule(r, &policies));
        let mut sets = read.each("set", |r, _| classes::read_set(r));
        add_named_sets(&rules, &mut sets);

        if errors.is_empty() {
            errors.extend(check_something_enabled(&globals, &interfaces).err());
        }

        match errors.len() {
            0 => Ok(Config {
                globals,
                interfaces,
                policies,
                rules,
                sets,
                warnings,
            }),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many(errors)),
        }
    }
}

/// Sets that rules name without a `config set` section: they start empty, for dnsmasq or the
/// user to fill.
fn add_named_sets(rules: &[Rule], sets: &mut Vec<AddrSet>) {
    for rule in rules {
        for name in rule.dest_set.iter().chain(&rule.src_set) {
            if !sets.iter().any(|s| &s.name == name) {
                sets.push(AddrSet {
                    name: name.clone(),
                    entries: Vec::new(),
                });
            }
        }
    }
}

/// Reads every section of one type, collecting errors and warnings instead of stopping at the
/// first, so the user sees all problems at once.
struct Reading<'a> {
    raw: &'a RawConfig,
    errors: &'a mut Vec<Error>,
    warnings: &'a mut Vec<String>,
}

impl Reading<'_> {
    fn each<T>(
        &mut self,
        kind: &str,
        mut read: impl FnMut(&mut SectionReader, usize) -> Result<T>,
    ) -> Vec<T> {
        let sections: Vec<&RawSection> = self
            .raw
            .sections
            .iter()
            .filter(|s| s.kind == kind)
            .collect();
        let mut out = Vec::new();
        for (i, s) in sections.iter().enumerate() {
            let mut r = SectionReader::new(s);
            match read(&mut r, i) {
                Ok(v) => out.push(v),
                Err(e) => self.errors.push(e),
            }
            self.warnings.extend(r.warnings());
            if sections[..i].iter().any(|o| o.name == s.name) {
                self.errors
                    .push(Error::config(&s.label(), None, "duplicate section name"));
            }
        }
        out
    }

    fn check(&mut self, result: Result<()>) {
        self.errors.extend(result.err());
    }
}

/// `config globals`; every option has a default, so the section itself is optional.
fn read_globals(r: &mut SectionReader) -> Result<Globals> {
    let d = Globals::default();
    let enabled = r.bool("enabled", d.enabled)?;
    let backend = r.choice(
        "backend",
        d.backend,
        &[
            ("auto", BackendChoice::Auto),
            ("nftables", BackendChoice::Nftables),
            ("iptables", BackendChoice::Iptables),
        ],
    )?;
    let mark_mask = read_mark_mask(r, d.mark_mask)?;
    // From 256 up, our tables can never collide with the kernel's 253..255.
    let table_base = r.int("table_base", d.table_base, 256, 0x7fff_0000)?;
    let priority_base = r.int(
        "priority_base",
        d.priority_base,
        1,
        32766 - PRIORITY_SPAN - 1,
    )?;
    let lan = r.devices("lan")?;
    let balance = read_balance(r, d.balance)?;
    let local_traffic = r.bool("local_traffic", d.local_traffic)?;
    let dns_follow = r.bool("dns_follow", d.dns_follow)?;
    Ok(Globals {
        enabled,
        backend,
        mark_mask,
        table_base,
        priority_base,
        lan,
        balance,
        local_traffic,
        dns_follow,
    })
}

/// `config interface`; `id` is its 1-based position, which fixes its mark and table.
fn read_interface(r: &mut SectionReader, id: u32) -> Result<Interface> {
    let name = r.section.name.clone();
    let enabled = r.bool("enabled", true)?;
    let family = r.choice(
        "family",
        Family::Ipv4,
        &[("ipv4", Family::Ipv4), ("ipv6", Family::Ipv6)],
    )?;
    let device = r.device("device")?;
    let gateway = r.address("gateway", family)?;
    let source = r.address("source", family)?;
    if let Some(source) = source.filter(is_link_local) {
        return Err(r.error(
            "source",
            format!("expected a global address, got the link-local {source}"),
        ));
    }
    let nat = r.bool("nat", true)?;
    let prefixes = read_prefixes(r, family)?;
    let dns = read_dns(r, family)?;
    let weight = r.int("weight", 1, 1, 1000)?;
    let metric = r.int("metric", 1, 1, 1000)?;
    // Without a fixed device, the netifd interface of the same name is the default source.
    let netifd = match r.single("interface")? {
        Some(n) if valid_name(n) => Some(n.to_string()),
        Some(n) => {
            return Err(r.error(
                "interface",
                format!("expected a netifd interface name [A-Za-z0-9_], got \"{n}\""),
            ));
        }
        None if device.is_none() => Some(name.clone()),
        None => None,
    };
    let track = read_track(r, family)?;
    let flush_conntrack = read_flush_conntrack(r)?;
    let standby = read_standby(r, track.interval)?;
    let tunnel = tunnel::read_tunnel(r)?;
    Ok(Interface {
        name,
        enabled,
        family,
        device,
        gateway,
        source,
        nat,
        prefixes,
        dns,
        weight,
        metric,
        netifd,
        track,
        flush_conntrack,
        standby,
        tunnel,
        id,
    })
}

/// `config member`, keyed by its name for `use_member`; metric and weight default to the
/// interface's.
fn read_member(r: &mut SectionReader, interfaces: &[Interface]) -> Result<(String, Member)> {
    let interface = match r.single("interface")? {
        None => return Err(r.error("interface", "expected the name of an interface section")),
        Some(name) => interfaces
            .iter()
            .position(|i| i.name == name)
            .ok_or_else(|| {
                r.error(
                    "interface",
                    format!("no interface section named \"{name}\""),
                )
            })?,
    };
    let metric = r.int("metric", interfaces[interface].metric, 1, 1000)?;
    let weight = r.int("weight", interfaces[interface].weight, 1, 1000)?;
    let name = r.section.name.clone();
    Ok((
        name.clone(),
        Member {
            name,
            interface,
            metric,
            weight,
        },
    ))
}

/// `config policy`; at least one member must be usable, or the policy could only fail.
fn read_policy(
    r: &mut SectionReader,
    members: &[(String, Member)],
    interfaces: &[Interface],
    balance: Balance,
) -> Result<Policy> {
    let mut chosen = Vec::new();
    for name in r.list("use_member") {
        let member = members
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| r.error("use_member", format!("no member section named \"{name}\"")))?;
        chosen.push(member.1.clone());
    }
    if !chosen.iter().any(|m| interfaces[m.interface].enabled) {
        return Err(r.error(
            "use_member",
            "expected at least one member whose interface is enabled",
        ));
    }
    let last_resort = r.choice(
        "last_resort",
        LastResort::Unreachable,
        &[
            ("unreachable", LastResort::Unreachable),
            ("blackhole", LastResort::Blackhole),
            ("default", LastResort::Default),
        ],
    )?;
    let balance = read_balance(r, balance)?;
    let failback = read_failback(r)?;
    Ok(Policy {
        name: r.section.name.clone(),
        members: chosen,
        last_resort,
        balance,
        failback,
    })
}

/// With no policy and no member sections, every enabled interface is balanced by its own
/// weight and metric: the small case stays small.
fn implicit_policy(interfaces: &[Interface], balance: Balance) -> Policy {
    Policy {
        name: "balanced".to_string(),
        members: interfaces
            .iter()
            .enumerate()
            .map(|(i, iface)| Member {
                name: iface.name.clone(),
                interface: i,
                metric: iface.metric,
                weight: iface.weight,
            })
            .collect(),
        last_resort: LastResort::Unreachable,
        balance,
        failback: Failback::Keep,
    }
}

/// `config rule`; `use_policy` may name a policy section or a built-in target.
fn read_rule(r: &mut SectionReader, policies: &[Policy]) -> Result<Rule> {
    let proto = read_proto(r)?;
    let src_ip = r.cidrs("src_ip")?;
    let dest_ip = r.cidrs("dest_ip")?;
    let family = read_rule_family(r, &src_ip, &dest_ip)?;
    let src_port = read_ports(r, "src_port")?;
    let dest_port = read_ports(r, "dest_port")?;
    if (!src_port.is_empty() || !dest_port.is_empty()) && !matches!(proto, Proto::Tcp | Proto::Udp)
    {
        let option = if src_port.is_empty() {
            "dest_port"
        } else {
            "src_port"
        };
        return Err(r.error(option, "ports need option proto 'tcp' or 'udp'"));
    }
    let target =
        match r.single("use_policy")? {
            None => return Err(r.error("use_policy", "expected the name of a policy section")),
            Some("default") => RuleTarget::Default,
            Some("unreachable") => RuleTarget::Unreachable,
            Some("blackhole") => RuleTarget::Blackhole,
            Some(name) => {
                RuleTarget::Policy(policies.iter().position(|p| p.name == name).ok_or_else(
                    || r.error("use_policy", format!("no policy section named \"{name}\"")),
                )?)
            }
        };
    let (dest_set, src_set) = classes::read_set_refs(r)?;
    let sticky = classes::read_sticky(r)?;
    let schedule = read_schedule(r)?;
    let src_mac = read_macs(r)?;
    let src_dev = read_src_dev(r)?;
    if sticky.is_some() && !matches!(target, RuleTarget::Policy(_)) {
        return Err(r.error(
            "sticky",
            "needs option use_policy naming a policy section (the built-in ones choose no link)",
        ));
    }
    Ok(Rule {
        name: r.section.name.clone(),
        label: r.label.clone(),
        family,
        proto,
        src_ip,
        dest_ip,
        src_port,
        dest_port,
        dest_set,
        src_set,
        sticky,
        schedule,
        src_mac,
        src_dev,
        target,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::{TWO_WANS, config};
    use crate::config::{DEFAULT_MARK_MASK, Family, PortRange};
    use std::net::IpAddr;

    #[test]
    fn small_config_gets_an_implicit_policy() {
        let c = config(TWO_WANS).unwrap();
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.policies[0].name, "balanced");
        let weights: Vec<u32> = c.policies[0].members.iter().map(|m| m.weight).collect();
        assert_eq!(weights, [1, 2]);
        assert_eq!(c.globals.mark_mask, 0x3f00);
        assert_eq!(c.interfaces[1].id, 2);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn bad_weight_names_section_and_option() {
        let e = config(&TWO_WANS.replace(r#""weight":"2""#, r#""weight":"x""#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "interface 'wanb' option 'weight': expected an integer 1..1000, got \"x\""
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn dangling_member_reference() {
        let e = config(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
            "m1":{".type":"member",".name":"m1",".index":2,"interface":"wanx"}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "member 'm1' option 'interface': no interface section named \"wanx\""
        );
    }

    #[test]
    fn ports_need_a_protocol_and_policy_must_exist() {
        let base = r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
            "m1":{".type":"member",".name":"m1",".index":2,"interface":"wan"},
            "p1":{".type":"policy",".name":"p1",".index":3,"use_member":["m1"]},
            "cfg01":{".type":"rule",".name":"cfg01",".anonymous":true,".index":4,RULE}}}"#;
        let e =
            config(&base.replace("RULE", r#""dest_port":"443","use_policy":"p1""#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "@rule[0] option 'dest_port': ports need option proto 'tcp' or 'udp'"
        );
        let e = config(&base.replace("RULE", r#""use_policy":"p2""#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "@rule[0] option 'use_policy': no policy section named \"p2\""
        );
        let ok = config(&base.replace(
            "RULE",
            r#""proto":"tcp","dest_port":"80,8000-8080","use_policy":"p1""#,
        ))
        .unwrap();
        assert_eq!(
            ok.rules[0].dest_port,
            [
                PortRange { from: 80, to: 80 },
                PortRange {
                    from: 8000,
                    to: 8080
                }
            ]
        );
    }

    #[test]
    fn policy_without_usable_member() {
        let e = config(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
            "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2","enabled":"0"},
            "m1":{".type":"member",".name":"m1",".index":2,"interface":"wanb"},
            "p1":{".type":"policy",".name":"p1",".index":3,"use_member":["m1"]}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy 'p1' option 'use_member': expected at least one member whose interface is enabled"
        );
    }

    #[test]
    fn several_globals_sections_are_warned_about() {
        let c = config(
            r#"{"values":{
            "g1":{".type":"globals",".name":"g1",".index":0,"mark_mask":"0xff00"},
            "g2":{".type":"globals",".name":"g2",".index":1},
            "wan":{".type":"interface",".name":"wan",".index":2,"device":"eth1"}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.warnings,
            ["2 'config globals' sections: only the last, globals 'g2', is used"]
        );
        assert_eq!(c.globals.mark_mask, DEFAULT_MARK_MASK);
    }

    #[test]
    fn unknown_options_and_sections_warn() {
        let c = config(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","colour":"red"},
            "x":{".type":"frobnicator",".name":"x",".index":2}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.warnings,
            [
                "frobnicator 'x': unknown section type, ignored",
                "interface 'wan' option 'colour': unknown option, ignored"
            ]
        );
    }

    #[test]
    fn ipv6_links_share_devices_with_ipv4_links_and_carry_prefixes() {
        let c = config(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","nat":"0"},
            "wan6":{".type":"interface",".name":"wan6",".index":2,"family":"ipv6","device":"eth1",
                    "gateway":"fe80::1","prefix":["2001:db8:1::/56","2001:db8:1:ff::9/64"],
                    "track_ip":"2001:db8:ffff::53"}}}"#,
        )
        .unwrap();
        let [wan, wan6] = &c.interfaces[..] else {
            panic!()
        };
        assert_eq!(
            (wan.family, wan.nat, wan6.family),
            (Family::Ipv4, false, Family::Ipv6)
        );
        assert!(wan6.nat, "nat defaults to 1");
        assert_eq!(wan6.gateway, Some("fe80::1".parse().unwrap()));
        let prefixes: Vec<String> = wan6.prefixes.iter().map(ToString::to_string).collect();
        assert_eq!(prefixes, ["2001:db8:1::/56", "2001:db8:1:ff::/64"]);
        assert_eq!(
            wan6.track.track_ip,
            ["2001:db8:ffff::53".parse::<IpAddr>().unwrap()]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}
