//! Configuration: raw UCI sections in, validated typed config out.
//!
//! Everything the user can get wrong is caught here, before any rule is rendered, so a bad
//! config exits 2 and changes nothing.

pub mod classes;
pub mod family;
pub mod raw;
pub mod track;
pub mod uci_text;
pub mod value;

use crate::error::{Error, Result};
pub use classes::{AddrSet, HashKey, Sticky};
pub use family::{Cidr, Family};
use raw::{RawConfig, RawSection};
use std::net::IpAddr;
use track::{TrackConfig, read_track};
use value::SectionReader;

/// Which firewall tool carries the marking rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// nftables when `nft` works, else iptables.
    Auto,
    Nftables,
    Iptables,
}

/// How a policy spreads new connections over its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Exact weighted rotation (the seed's nth).
    RoundRobin,
    /// Weighted random choice.
    Random,
    /// A fixed table of hash buckets mapped to links: the same source (or source and
    /// destination) always takes the same link, and a dead link's buckets alone move.
    Hash(HashKey),
}

/// What a policy does when none of its links is alive (mwan3's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastResort {
    /// Reject with "network unreachable" so clients fail fast.
    Unreachable,
    /// Drop silently.
    Blackhole,
    /// Leave the connection to the main routing table.
    Default,
}

/// A link event on which that link's conntrack entries are deleted (mwan3's
/// `flush_conntrack` words), so its pinned connections start over on a live link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushEvent {
    /// The link's device came up.
    IfUp,
    /// The link's device went down.
    IfDown,
    /// The link became usable for new connections.
    Connected,
    /// The link stopped being usable for new connections.
    Disconnected,
}

impl FlushEvent {
    /// mwan3's name of the event, used in config, logs and the hook's `ACTION`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushEvent::IfUp => "ifup",
            FlushEvent::IfDown => "ifdown",
            FlushEvent::Connected => "connected",
            FlushEvent::Disconnected => "disconnected",
        }
    }
}

/// `config globals`: settings shared by every link.
#[derive(Debug, Clone, PartialEq)]
pub struct Globals {
    pub enabled: bool,
    pub backend: BackendChoice,
    /// The fwmark/ctmark bits we own; other packages keep the rest.
    pub mark_mask: u32,
    /// Link i routes through table `table_base + i`.
    pub table_base: u32,
    /// Our ip rules start at this priority.
    pub priority_base: u32,
    /// Ingress devices whose new connections are balanced; empty = every non-WAN device.
    pub lan: Vec<String>,
    /// The default of every policy's `balance`.
    pub balance: Balance,
    /// New connections of the router itself are balanced too (through the output hook).
    pub local_traffic: bool,
}

/// `config interface`: one WAN link.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub name: String,
    pub enabled: bool,
    /// Which traffic the link carries: IPv4 (the default) or IPv6.
    pub family: Family,
    /// Fixed kernel device; None when it is resolved from netifd.
    pub device: Option<String>,
    /// Next hop, of the link's family (IPv6 link-local is fine: the route names the device).
    pub gateway: Option<IpAddr>,
    /// SNAT address; None = masquerade.
    pub source: Option<IpAddr>,
    /// Whether traffic leaving the link is SNATed/masqueraded at all (`nat 0`: public LAN
    /// addresses, or NAT done elsewhere).
    pub nat: bool,
    /// IPv6 prefixes delegated or routed to this link (`list prefix`; netifd's are added at
    /// apply time): their sources are pinned to the link and never NATed.
    pub prefixes: Vec<Cidr>,
    pub weight: u32,
    pub metric: u32,
    /// netifd interface to resolve device/gateway/source from (None: fixed values only).
    pub netifd: Option<String>,
    /// Health tracking by `connmark-lb run`; no targets = up while the device is up.
    pub track: TrackConfig,
    /// Events on which this link's conntrack entries are deleted; default: when it goes down.
    pub flush_conntrack: Vec<FlushEvent>,
    /// 1-based position among interface sections: decides mark and table, stable while the
    /// file's interface order is.
    pub id: u32,
}

/// `config member`: an interface with the metric and weight one policy gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// Index into [`Config::interfaces`].
    pub interface: usize,
    pub metric: u32,
    pub weight: u32,
}

/// `config policy`: how new connections are spread over members.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub members: Vec<Member>,
    pub last_resort: LastResort,
    pub balance: Balance,
}

/// An inclusive port range (a single port has `from == to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl PortRange {
    /// `443`, or `from{separator}to` (nft writes ranges with `-`, iptables multiport with `:`).
    pub fn render(&self, separator: char) -> String {
        if self.from == self.to {
            self.from.to_string()
        } else {
            format!("{}{separator}{}", self.from, self.to)
        }
    }
}

impl Proto {
    /// The protocol as both nft and iptables spell it; None matches everything.
    pub fn keyword(&self) -> Option<String> {
        match self {
            Proto::All => None,
            Proto::Tcp => Some("tcp".into()),
            Proto::Udp => Some("udp".into()),
            Proto::Icmp => Some("icmp".into()),
            Proto::Number(n) => Some(n.to_string()),
        }
    }
}

/// Which protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    All,
    Tcp,
    Udp,
    Icmp,
    Number(u8),
}

/// Where a matched connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleTarget {
    /// Index into [`Config::policies`].
    Policy(usize),
    /// Bypass balancing: main routing table.
    Default,
    Unreachable,
    Blackhole,
}

/// `config rule`: first match decides the policy of a new LAN connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The section name (generated for anonymous sections): names the rule's sticky sets.
    pub name: String,
    pub label: String,
    /// The only family the rule matches (`family`, or the family of its addresses); None
    /// matches both.
    pub family: Option<Family>,
    pub proto: Proto,
    pub src_ip: Vec<Cidr>,
    pub dest_ip: Vec<Cidr>,
    pub src_port: Vec<PortRange>,
    pub dest_port: Vec<PortRange>,
    /// Address sets (by name) the destination / source must be in.
    pub dest_set: Option<String>,
    pub src_set: Option<String>,
    pub sticky: Option<Sticky>,
    pub target: RuleTarget,
}

/// The validated configuration; building it is the only place user input is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub globals: Globals,
    pub interfaces: Vec<Interface>,
    pub policies: Vec<Policy>,
    pub rules: Vec<Rule>,
    /// Every address set: `config set` sections, then sets only rules name.
    pub sets: Vec<AddrSet>,
    /// Non-fatal findings (unknown options, unused sections) for the log.
    pub warnings: Vec<String>,
}

/// Default mark mask: six bits, clear of sqm's 0xff and pbr's 0x00ff0000.
pub const DEFAULT_MARK_MASK: u32 = 0x3F00;
/// Default first routing table (link i uses base + i).
pub const DEFAULT_TABLE_BASE: u32 = 4000;
/// Default first ip rule priority: after mwan3's 1000-3999, well before pbr's ~30000.
pub const DEFAULT_PRIORITY_BASE: u32 = 4000;
/// How many ip rule priorities we may occupy from `priority_base`.
pub const PRIORITY_SPAN: u32 = 512;
/// Upper bound of links, so the priority and table spans stay fixed.
pub const MAX_LINKS: u32 = 250;

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
        let members = read.each("member", |r, _| read_member(r, &interfaces));
        let mut policies = read.each("policy", |r, _| {
            read_policy(r, &members, &interfaces, globals.balance)
        });
        if policies.is_empty() && members.is_empty() {
            policies.push(implicit_policy(&interfaces, globals.balance));
        }
        let rules = read.each("rule", |r, _| read_rule(r, &policies));
        let mut sets = read.each("set", |r, _| classes::read_set(r));
        for rule in &rules {
            for name in rule.dest_set.iter().chain(&rule.src_set) {
                if !sets.iter().any(|s| &s.name == name) {
                    sets.push(AddrSet {
                        name: name.clone(),
                        entries: Vec::new(),
                    });
                }
            }
        }

        if globals.enabled && interfaces.iter().all(|i| !i.enabled) && errors.is_empty() {
            errors.push(Error::config(
                "config",
                None,
                "no enabled interface section: nothing to balance",
            ));
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

impl Default for Globals {
    fn default() -> Self {
        Globals {
            enabled: true,
            backend: BackendChoice::Auto,
            mark_mask: DEFAULT_MARK_MASK,
            table_base: DEFAULT_TABLE_BASE,
            priority_base: DEFAULT_PRIORITY_BASE,
            lan: Vec::new(),
            balance: Balance::RoundRobin,
            local_traffic: true,
        }
    }
}

/// UCI section names are `[A-Za-z0-9_]`; we also bound the length since names become chain
/// names.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

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
    let mark_mask = r.int("mark_mask", d.mark_mask, 1, u32::MAX)?;
    let shifted = mark_mask >> mark_mask.trailing_zeros();
    if shifted & shifted.wrapping_add(1) != 0 || shifted < 3 {
        return Err(r.error(
            "mark_mask",
            format!("expected a contiguous bit mask of at least 2 bits, got {mark_mask:#x}"),
        ));
    }
    // From 256 up, our tables can never collide with the kernel's 253..255.
    let table_base = r.int("table_base", d.table_base, 256, 0x7fff_0000)?;
    let priority_base = r.int(
        "priority_base",
        d.priority_base,
        1,
        32766 - PRIORITY_SPAN - 1,
    )?;
    let mut lan = Vec::new();
    for dev in r.list("lan") {
        value::check_device(dev).map_err(|why| r.error("lan", format!("{why}, got \"{dev}\"")))?;
        lan.push(dev.to_string());
    }
    let balance = read_balance(r, d.balance)?;
    let local_traffic = r.bool("local_traffic", d.local_traffic)?;
    Ok(Globals {
        enabled,
        backend,
        mark_mask,
        table_base,
        priority_base,
        lan,
        balance,
        local_traffic,
    })
}

/// `balance` and, for `hash`, its `hash` key; a policy's default is the globals' choice.
fn read_balance(r: &mut SectionReader, default: Balance) -> Result<Balance> {
    let default_key = match default {
        Balance::Hash(key) => key,
        _ => HashKey::Src,
    };
    let balance = r.choice(
        "balance",
        default,
        &[
            ("round-robin", Balance::RoundRobin),
            ("random", Balance::Random),
            ("hash", Balance::Hash(default_key)),
        ],
    )?;
    let key = classes::read_hash_key(r, default_key)?;
    Ok(match balance {
        Balance::Hash(_) => Balance::Hash(key),
        other => other,
    })
}

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
    if let Some(source) = source.filter(family::is_link_local) {
        return Err(r.error(
            "source",
            format!("expected a global address, got the link-local {source}"),
        ));
    }
    let nat = r.bool("nat", true)?;
    let mut prefixes: Vec<Cidr> = Vec::new();
    for v in r.list("prefix") {
        match Cidr::parse(v).filter(|p| p.family() == Family::Ipv6) {
            _ if family != Family::Ipv6 => {
                return Err(r.error("prefix", "prefixes need option family 'ipv6'"));
            }
            Some(p) if !prefixes.contains(&p) => prefixes.push(p),
            Some(p) => return Err(r.error("prefix", format!("{p} is listed twice"))),
            None => {
                return Err(r.error(
                    "prefix",
                    format!("expected an IPv6 prefix like 2001:db8:1::/56, got \"{v}\""),
                ));
            }
        }
    }
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
    Ok(Interface {
        name,
        enabled,
        family,
        device,
        gateway,
        source,
        nat,
        prefixes,
        weight,
        metric,
        netifd,
        track,
        flush_conntrack,
        id,
    })
}

/// `flush_conntrack`: a list of events; `never` alone switches the default off.
fn read_flush_conntrack(r: &mut SectionReader) -> Result<Vec<FlushEvent>> {
    let words = r.list("flush_conntrack");
    if words.is_empty() {
        return Ok(vec![FlushEvent::Disconnected]);
    }
    if words == ["never"] {
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for word in words {
        let event = [
            FlushEvent::IfUp,
            FlushEvent::IfDown,
            FlushEvent::Connected,
            FlushEvent::Disconnected,
        ]
        .into_iter()
        .find(|e| e.as_str() == word)
        .ok_or_else(|| {
            r.error(
                "flush_conntrack",
                format!(
                    "expected ifup, ifdown, connected, disconnected (or never alone), got \"{word}\""
                ),
            )
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

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
    Ok(Policy {
        name: r.section.name.clone(),
        members: chosen,
        last_resort,
        balance,
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
    }
}

fn read_rule(r: &mut SectionReader, policies: &[Policy]) -> Result<Rule> {
    let proto = match r.single("proto")? {
        None | Some("all") => Proto::All,
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        Some("icmp") => Proto::Icmp,
        Some(v) => match v.parse::<u8>() {
            Ok(n) => Proto::Number(n),
            Err(_) => {
                return Err(r.error(
                    "proto",
                    format!("expected all|tcp|udp|icmp or a protocol number, got \"{v}\""),
                ));
            }
        },
    };
    let src_ip = cidrs(r, "src_ip")?;
    let dest_ip = cidrs(r, "dest_ip")?;
    let family = rule_family(r, &src_ip, &dest_ip)?;
    let src_port = ports(r, "src_port")?;
    let dest_port = ports(r, "dest_port")?;
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
        target,
    })
}

fn cidrs(r: &mut SectionReader, option: &'static str) -> Result<Vec<Cidr>> {
    r.list(option)
        .into_iter()
        .map(|v| {
            Cidr::parse(v).ok_or_else(|| {
                r.error(
                    option,
                    format!("expected an IPv4 or IPv6 address or prefix, got \"{v}\""),
                )
            })
        })
        .collect()
}

/// A rule's family: `family` (ipv4, ipv6, or any, the default), narrowed by its addresses,
/// which must all be of one family.
fn rule_family(r: &mut SectionReader, src: &[Cidr], dest: &[Cidr]) -> Result<Option<Family>> {
    let chosen = r.choice(
        "family",
        None,
        &[
            ("any", None),
            ("ipv4", Some(Family::Ipv4)),
            ("ipv6", Some(Family::Ipv6)),
        ],
    )?;
    let mut family = chosen;
    for (option, cidrs) in [("src_ip", src), ("dest_ip", dest)] {
        for cidr in cidrs {
            match family {
                Some(f) if f != cidr.family() => {
                    return Err(r.error(
                        option,
                        format!(
                            "{cidr} is {}, but the rule matches only {} traffic",
                            cidr.family().label(),
                            f.label()
                        ),
                    ));
                }
                _ => family = Some(cidr.family()),
            }
        }
    }
    Ok(family)
}

fn ports(r: &mut SectionReader, option: &'static str) -> Result<Vec<PortRange>> {
    let mut out = Vec::new();
    for item in r.list(option) {
        for part in item.split(',') {
            let (from, to) = part.split_once(['-', ':']).unwrap_or((part, part));
            match (from.parse::<u16>(), to.parse::<u16>()) {
                (Ok(from), Ok(to)) if from >= 1 && from <= to => out.push(PortRange { from, to }),
                _ => {
                    return Err(r.error(
                        option,
                        format!("expected ports like 443, 8000-8080 or 80,443, got \"{item}\""),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Cross-section checks: marks must fit in the mask, devices may not repeat, LAN devices may
/// not be WAN devices.
fn check_interfaces(globals: &Globals, interfaces: &[Interface]) -> Result<()> {
    let capacity = (globals.mark_mask >> globals.mark_mask.trailing_zeros()).saturating_sub(2);
    let capacity = capacity.min(MAX_LINKS);
    if interfaces.len() as u32 > capacity {
        return Err(Error::config(
            "globals",
            Some("mark_mask"),
            format!(
                "{:#x} can number {capacity} links (2 values are reserved), but {} interface sections are configured",
                globals.mark_mask,
                interfaces.len()
            ),
        ));
    }
    // One device may carry one link per family (wan and wan6 on the same eth1).
    for (i, iface) in interfaces.iter().enumerate() {
        let Some(dev) = &iface.device else { continue };
        if let Some(other) = interfaces[..i]
            .iter()
            .find(|o| o.device.as_ref() == Some(dev) && o.family == iface.family)
        {
            return Err(Error::config(
                &format!("interface '{}'", iface.name),
                Some("device"),
                format!(
                    "device \"{dev}\" is already used by interface '{}'",
                    other.name
                ),
            ));
        }
        if globals.lan.contains(dev) {
            return Err(Error::config(
                "globals",
                Some("lan"),
                format!(
                    "device \"{dev}\" is the WAN device of interface '{}'",
                    iface.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(json: &str) -> Result<Config> {
        Config::from_raw(&RawConfig::from_json_text(json).unwrap())
    }

    const TWO_WANS: &str = r#"{"values":{
        "globals":{".type":"globals",".name":"globals",".index":0,"lan":["br-lan"]},
        "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","gateway":"10.0.1.1","source":"10.0.1.2"},
        "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2","gateway":"10.0.2.1","weight":"2"}
    }}"#;

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
    fn mask_too_small_for_links() {
        let e =
            config(&TWO_WANS.replace(r#""lan":["br-lan"]"#, r#""mark_mask":"0x3""#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "globals option 'mark_mask': 0x3 can number 1 links (2 values are reserved), but 2 interface sections are configured"
        );
    }

    #[test]
    fn non_contiguous_mask_is_rejected() {
        let e = config(&TWO_WANS.replace(r#""lan":["br-lan"]"#, r#""mark_mask":"0x0f0f""#))
            .unwrap_err();
        assert!(e.to_string().contains("contiguous"), "{e}");
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
    fn duplicate_devices_and_several_errors_reported() {
        let e = config(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","weight":"0"},
            "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth1"},
            "wanc":{".type":"interface",".name":"wanc",".index":3,"device":"eth1"}}}"#,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("interface 'wan' option 'weight'"), "{text}");
        assert!(
            text.contains("interface 'wanc' option 'device': device \"eth1\" is already used by interface 'wanb'"),
            "{text}"
        );
        assert_eq!(e.exit_code(), 2);
    }

    fn interface(options: &str) -> Result<Config> {
        config(&format!(
            r#"{{"values":{{"wanb":{{".type":"interface",".name":"wanb",".index":1,"device":"eth2"{options}}}}}}}"#
        ))
    }

    #[test]
    fn tracking_defaults_follow_the_intervals() {
        let c = interface("").unwrap();
        let iface = &c.interfaces[0];
        assert_eq!(iface.track, TrackConfig::default());
        assert_eq!(iface.flush_conntrack, [FlushEvent::Disconnected]);

        let c = interface(
            r#","track_ip":["172.31.255.1","172.31.255.2"],"interval":"0.5","reliability":"2""#,
        )
        .unwrap();
        let track = &c.interfaces[0].track;
        assert_eq!(track.track_ip.len(), 2);
        assert_eq!(track.reliability, 2);
        assert_eq!(track.interval, Duration::from_millis(500));
        assert_eq!(track.failure_interval, Duration::from_millis(300));
        assert_eq!(track.recovery_interval, Duration::from_millis(500));
        assert_eq!(track.timeout, Duration::from_millis(500));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn tracking_options_in_mwan3_words() {
        let c = interface(
            r#","track_ip":"172.31.255.1","count":"2","timeout":"0.25","failure_interval":"0.5","recovery_interval":"3","down":"2","up":"4","initial_state":"offline","flush_conntrack":["ifdown","disconnected","ifdown"]"#,
        )
        .unwrap();
        let iface = &c.interfaces[0];
        assert_eq!(
            iface.track,
            TrackConfig {
                track_ip: vec![std::net::Ipv4Addr::new(172, 31, 255, 1).into()],
                reliability: 1,
                count: 2,
                timeout: Duration::from_millis(250),
                interval: Duration::from_secs(1),
                failure_interval: Duration::from_millis(500),
                recovery_interval: Duration::from_secs(3),
                down: 2,
                up: 4,
                initial_up: false,
                ..TrackConfig::default()
            }
        );
        assert_eq!(
            iface.flush_conntrack,
            [FlushEvent::IfDown, FlushEvent::Disconnected]
        );
        let c = interface(r#","flush_conntrack":"never""#).unwrap();
        assert!(c.interfaces[0].flush_conntrack.is_empty());
    }

    #[test]
    fn tracking_errors_name_section_and_option() {
        let cases = [
            (
                r#","track_ip":["172.31.255.1"],"reliability":"2""#,
                "interface 'wanb' option 'reliability': expected at most the number of track_ip targets (1), got 2",
            ),
            (
                r#","reliability":"0""#,
                "interface 'wanb' option 'reliability': expected an integer 1..1000, got \"0\"",
            ),
            (
                r#","count":"0""#,
                "interface 'wanb' option 'count': expected an integer 1..100, got \"0\"",
            ),
            (
                r#","interval":"0""#,
                "interface 'wanb' option 'interval': expected seconds greater than 0 and at most 3600 (like 1 or 0.5), got \"0\"",
            ),
            (
                r#","failure_interval":"-1""#,
                "interface 'wanb' option 'failure_interval': expected seconds greater than 0 and at most 3600 (like 1 or 0.5), got \"-1\"",
            ),
            (
                r#","timeout":"0.0""#,
                "interface 'wanb' option 'timeout': expected seconds greater than 0 and at most 3600 (like 1 or 0.5), got \"0.0\"",
            ),
            (
                r#","track_ip":["example.com"]"#,
                "interface 'wanb' option 'track_ip': expected an IPv4 address, got \"example.com\"",
            ),
            (
                r#","track_ip":["172.31.255.1","172.31.255.1"]"#,
                "interface 'wanb' option 'track_ip': 172.31.255.1 is listed twice",
            ),
            (
                r#","initial_state":"up""#,
                "interface 'wanb' option 'initial_state': expected one of online|offline, got \"up\"",
            ),
            (
                r#","flush_conntrack":["never","ifup"]"#,
                "interface 'wanb' option 'flush_conntrack': expected ifup, ifdown, connected, disconnected (or never alone), got \"never\"",
            ),
        ];
        for (options, expected) in cases {
            let e = interface(options).unwrap_err();
            assert_eq!(e.to_string(), expected);
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn timeout_longer_than_an_interval_warns() {
        let c = interface(r#","track_ip":"172.31.255.1","timeout":"2","recovery_interval":"5""#)
            .unwrap();
        assert_eq!(c.interfaces[0].track.timeout, Duration::from_secs(2));
        assert_eq!(
            c.warnings,
            [
                "interface 'wanb' option 'timeout': 2 s is longer than interval (1 s): a lost round lasts 2 s and delays the next one",
            ]
        );
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

    #[test]
    fn rule_family_comes_from_the_option_or_the_addresses() {
        let rule = |options: &str| {
            config(&format!(
                r#"{{"values":{{
                "wan":{{".type":"interface",".name":"wan",".index":1,"device":"eth1"}},
                "r":{{".type":"rule",".name":"r",".index":2,"use_policy":"default"{options}}}}}}}"#
            ))
            .map(|c| c.rules[0].family)
        };
        assert_eq!(rule("").unwrap(), None);
        assert_eq!(rule(r#","family":"any""#).unwrap(), None);
        assert_eq!(rule(r#","family":"ipv6""#).unwrap(), Some(Family::Ipv6));
        assert_eq!(
            rule(r#","dest_ip":"fd00::/8""#).unwrap(),
            Some(Family::Ipv6)
        );
        assert_eq!(
            rule(r#","src_ip":"10.0.0.0/8""#).unwrap(),
            Some(Family::Ipv4)
        );
        assert_eq!(
            rule(r#","family":"ip""#).unwrap_err().to_string(),
            "rule 'r' option 'family': expected one of any|ipv4|ipv6, got \"ip\""
        );
    }
}
