//! The plan: pure data saying which marks, tables, ip rules and choices the system should have.
//!
//! It is computed from the validated config plus what is known about each link right now
//! (its device, whether it is alive). Renderers turn it into tool input; nothing here touches
//! the system, so it is tested with plain values.

use crate::config::{AddrSet, Balance, Cidr, Config, Family, LastResort, Rule, Tunnel};
use crate::hash;
use crate::source::LinkState;
use std::net::IpAddr;

mod dns;
mod routing;
mod tunnel;

pub use dns::{DnsGroup, DnsWay};
pub use routing::{Footprint, IpRule, Route, Routing, RuleAction};
pub use tunnel::OuterPin;

/// One enabled WAN link with the numbers that identify it in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub family: Family,
    pub device: Option<String>,
    pub gateway: Option<IpAddr>,
    pub source: Option<IpAddr>,
    /// Whether traffic leaving the link is SNATed (to `source`) or masqueraded.
    pub nat: bool,
    /// IPv6 prefixes of the link: sources in them are pinned to it and never NATed.
    pub prefixes: Vec<Cidr>,
    /// The link's DNS servers: queries to them leave by it (see [`Plan::dns_groups`]).
    pub dns: Vec<IpAddr>,
    /// Mark value inside the mask (packet mark and conntrack mark).
    pub mark: u32,
    pub table: u32,
    /// Usable: alive, and for a tunnel, some underlay is too.
    pub up: bool,
    /// A backup link (`standby`): a policy uses it only while no non-standby member is up.
    pub standby: bool,
    /// A tunnel's underlay and outer endpoint (see [`Plan::outer_pins`]).
    pub tunnel: Option<Tunnel>,
}

/// One link's share of a policy's new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Index into [`Plan::links`].
    pub link: usize,
    pub weight: u32,
}

/// What a policy does with a new connection right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Spread over the live links of the lowest live metric tier.
    Spread(Vec<Share>),
    /// No member is alive.
    Fallback(LastResort),
}

/// A policy after liveness has been applied: one choice per family it has members of. A family
/// without members is not balanced by the policy (its traffic keeps the main table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPlan {
    pub name: String,
    pub choices: Vec<(Family, Choice)>,
    pub balance: Balance,
    /// With hash balancing, per family: the owner (index into [`Plan::links`]) of every bucket.
    pub buckets: Vec<(Family, Vec<usize>)>,
}

impl PolicyPlan {
    /// The bucket table of `family` (empty without hash balancing).
    pub fn buckets_of(&self, family: Family) -> &[usize] {
        self.buckets
            .iter()
            .find(|(f, _)| *f == family)
            .map_or(&[], |(_, table)| table.as_slice())
    }

    /// Links the policy spreads new connections over right now, all families.
    pub fn spread_links(&self) -> Vec<usize> {
        self.choices
            .iter()
            .flat_map(|(_, choice)| match choice {
                Choice::Spread(shares) => shares.iter().map(|s| s.link).collect(),
                Choice::Fallback(_) => Vec::new(),
            })
            .collect()
    }
}

/// Which ip rule selector: everything, our mark under our mask, or the device a local socket
/// is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    All,
    Fwmark { mark: u32, mask: u32 },
    Oif(DeviceName),
}

/// A kernel device name (at most 15 bytes), kept inline so ip rules stay `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceName([u8; 16]);

impl DeviceName {
    /// None for a name the kernel could not have (empty or longer than 15 bytes).
    pub fn new(name: &str) -> Option<DeviceName> {
        let bytes = name.as_bytes();
        let mut out = [0u8; 16];
        (1..16).contains(&bytes.len()).then(|| {
            out[..bytes.len()].copy_from_slice(bytes);
            DeviceName(out)
        })
    }

    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        std::str::from_utf8(&self.0[..len]).unwrap_or_default()
    }
}

impl std::fmt::Debug for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Everything the renderers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub footprint: Footprint,
    pub links: Vec<Link>,
    /// Ingress devices whose new connections are balanced; empty = every non-WAN device.
    pub lan: Vec<String>,
    pub policies: Vec<PolicyPlan>,
    /// Classification rules; empty = everything goes to the first policy.
    pub rules: Vec<Rule>,
    /// Address sets of our table (their kernel contents outlive every apply).
    pub sets: Vec<AddrSet>,
    /// Balance the router's own new connections too.
    pub local_traffic: bool,
    /// Steer DNS queries to the links' servers (globals `dns_follow`).
    pub dns_follow: bool,
    /// Packet mark sent to an `unreachable` ip rule when a policy has no live link.
    pub unreachable_mark: u32,
    /// Likewise for `blackhole`.
    pub blackhole_mark: u32,
}

impl Plan {
    /// Builds the plan from the config and one [`LinkState`] per interface section.
    pub fn build(config: &Config, states: &[LinkState]) -> Plan {
        let g = &config.globals;
        let footprint = Footprint {
            mask: g.mark_mask,
            priority_base: g.priority_base,
            table_base: g.table_base,
        };
        let mut links = Vec::new();
        let mut link_of_interface = vec![None; config.interfaces.len()];
        for (i, iface) in config.interfaces.iter().enumerate() {
            if !iface.enabled {
                continue;
            }
            let state = states
                .get(i)
                .cloned()
                .unwrap_or_else(|| LinkState::from_config(iface));
            link_of_interface[i] = Some(links.len());
            let mut prefixes = state.prefixes;
            prefixes.dedup();
            links.push(Link {
                name: iface.name.clone(),
                family: iface.family,
                up: state.up && state.device.is_some(),
                device: state.device,
                gateway: state.gateway,
                source: state.source,
                nat: iface.nat,
                prefixes,
                dns: state.dns,
                mark: footprint.mark(iface.id),
                table: footprint.table(iface.id),
                standby: iface.standby.is_standby(),
                tunnel: iface.tunnel.clone(),
            });
        }
        tunnel::down_with_underlay(&mut links);
        let policies = config
            .policies
            .iter()
            .map(|p| {
                let mut choices = Vec::new();
                let mut buckets = Vec::new();
                for family in Family::ALL {
                    let members: Vec<(usize, u32, u32)> = p
                        .members
                        .iter()
                        .filter_map(|m| {
                            let link = link_of_interface[m.interface]?;
                            (links[link].family == family).then_some((link, m.metric, m.weight))
                        })
                        .collect();
                    let members = waiting_standby_out(&links, members);
                    if members.is_empty() {
                        continue;
                    }
                    choices.push((family, choose(&links, &members, p.last_resort)));
                    if matches!(p.balance, Balance::Hash(_)) {
                        buckets.push((family, hash::table(&live_tier(&links, &members))));
                    }
                }
                PolicyPlan {
                    name: p.name.clone(),
                    choices,
                    balance: p.balance,
                    buckets,
                }
            })
            .collect();
        Plan {
            footprint,
            links,
            lan: g.lan.clone(),
            policies,
            rules: config.rules.clone(),
            sets: config.sets.clone(),
            local_traffic: g.local_traffic,
            dns_follow: g.dns_follow,
            unreachable_mark: footprint.unreachable_mark(),
            blackhole_mark: footprint.blackhole_mark(),
        }
    }

    /// Whether any link carries `family`: a family without links is left to the main table
    /// entirely, and nothing of ours is installed for it.
    pub fn has(&self, family: Family) -> bool {
        self.links.iter().any(|l| l.family == family)
    }

    /// The only family with links, when there is just one.
    pub fn single_family(&self) -> Option<Family> {
        match (self.has(Family::Ipv4), self.has(Family::Ipv6)) {
            (true, false) => Some(Family::Ipv4),
            (false, true) => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// Usable links with prefixes of their own: new connections from those prefixes are pinned
    /// to them. A link that is not usable pins nothing, so its hosts are balanced (and NATed)
    /// over the live links until it returns.
    pub fn pins(&self) -> impl Iterator<Item = &Link> {
        self.links.iter().filter(|l| l.up && !l.prefixes.is_empty())
    }

    /// Whether the ruleset has a prefix-pinning stage (some link has prefixes, usable or not),
    /// so a link state change only rewrites its contents.
    pub fn pins_prefixes(&self) -> bool {
        self.links.iter().any(|l| !l.prefixes.is_empty())
    }

    /// The links of `family`.
    pub fn links_of(&self, family: Family) -> impl Iterator<Item = &Link> {
        self.links.iter().filter(move |l| l.family == family)
    }

    /// WAN devices we know, for inbound marking and for the default LAN set.
    pub fn wan_devices(&self) -> impl Iterator<Item = (&Link, &str)> {
        self.links
            .iter()
            .filter_map(|l| l.device.as_deref().map(|d| (l, d)))
    }
}

/// `members` without the standby links while some non-standby member is up: a backup carries
/// nothing (and gets no hash buckets) until every primary of the policy is down, whatever its
/// metric.
fn waiting_standby_out(links: &[Link], members: Vec<(usize, u32, u32)>) -> Vec<(usize, u32, u32)> {
    if members
        .iter()
        .any(|(l, _, _)| links[*l].up && !links[*l].standby)
    {
        members
            .into_iter()
            .filter(|(l, _, _)| !links[*l].standby)
            .collect()
    } else {
        members
    }
}

/// A policy's choice among `members` (link, metric, weight) of one family: the live links of
/// the lowest live metric by weight, or the last resort.
fn choose(links: &[Link], members: &[(usize, u32, u32)], last_resort: LastResort) -> Choice {
    let live: Vec<&(usize, u32, u32)> = members.iter().filter(|(l, _, _)| links[*l].up).collect();
    match live.iter().map(|(_, metric, _)| *metric).min() {
        None => Choice::Fallback(last_resort),
        Some(tier) => Choice::Spread(reduce(
            live.iter()
                .filter(|(_, metric, _)| *metric == tier)
                .map(|&&(link, _, weight)| Share { link, weight })
                .collect(),
        )),
    }
}

/// The members of the lowest metric with a live link, as `(link, weight, live)` for the hash
/// bucket table (dead members included: their buckets are dealt to the live ones).
fn live_tier(links: &[Link], members: &[(usize, u32, u32)]) -> Vec<(usize, u32, bool)> {
    let tier = members
        .iter()
        .filter(|(l, _, _)| links[*l].up)
        .map(|(_, metric, _)| *metric)
        .min();
    members
        .iter()
        .filter(|(_, metric, _)| Some(*metric) == tier)
        .map(|&(link, _, weight)| (link, weight, links[link].up))
        .collect()
}

/// Divides weights by their greatest common divisor so rotation tables stay short.
fn reduce(mut shares: Vec<Share>) -> Vec<Share> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = shares.iter().fold(0, |acc, s| gcd(acc, s.weight)).max(1);
    for s in &mut shares {
        s.weight /= g;
    }
    shares
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::raw::RawConfig;

    pub(crate) fn config(json: &str) -> Config {
        Config::from_raw(&RawConfig::from_json_text(json).unwrap()).unwrap()
    }

    pub(crate) const TIERS: &str = r#"{"values":{
        "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","gateway":"10.0.1.1"},
        "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2","gateway":"10.0.2.1"},
        "lte":{".type":"interface",".name":"lte",".index":3,"device":"wwan0"},
        "m_wan":{".type":"member",".name":"m_wan",".index":4,"interface":"wan","weight":"4"},
        "m_wanb":{".type":"member",".name":"m_wanb",".index":5,"interface":"wanb","weight":"2"},
        "m_lte":{".type":"member",".name":"m_lte",".index":6,"interface":"lte","metric":"2"},
        "main":{".type":"policy",".name":"main",".index":7,"use_member":["m_wan","m_wanb","m_lte"],"last_resort":"blackhole"}
    }}"#;

    /// The [`TIERS`] plan with only the links marked in `up` alive.
    pub(crate) fn tiers_plan(up: [bool; 3]) -> Plan {
        let c = config(TIERS);
        Plan::build(&c, &states(&c, &up))
    }

    /// The fixed link states of `config` with only the links marked in `up` alive.
    pub(crate) fn states(config: &Config, up: &[bool]) -> Vec<LinkState> {
        config
            .interfaces
            .iter()
            .zip(up)
            .map(|(i, &up)| LinkState {
                up,
                ..LinkState::from_config(i)
            })
            .collect()
    }

    /// A spread over `(link, weight)` pairs.
    fn spread(shares: &[(usize, u32)]) -> Choice {
        Choice::Spread(
            shares
                .iter()
                .map(|&(link, weight)| Share { link, weight })
                .collect(),
        )
    }

    #[test]
    fn lowest_live_tier_with_reduced_weights() {
        let plan = tiers_plan([true, true, true]);
        assert_eq!(
            plan.policies[0].choices,
            [(Family::Ipv4, spread(&[(0, 2), (1, 1)]))]
        );
        assert_eq!(plan.links[2].mark, 0x300);
        assert_eq!(plan.links[2].table, 4003);
        assert_eq!(plan.unreachable_mark, 0x3f00);
        assert_eq!(plan.blackhole_mark, 0x3e00);
    }

    #[test]
    fn backup_tier_takes_over_then_last_resort() {
        for (up, choice) in [
            ([false, false, true], spread(&[(2, 1)])),
            (
                [false, false, false],
                Choice::Fallback(LastResort::Blackhole),
            ),
        ] {
            assert_eq!(tiers_plan(up).policies[0].choices, [(Family::Ipv4, choice)]);
        }
    }

    #[test]
    fn a_standby_link_of_the_same_metric_waits_for_every_primary() {
        let text = TIERS
            .replace(
                r#""device":"wwan0""#,
                r#""device":"wwan0","standby":"warm""#,
            )
            .replace(r#""interface":"lte","metric":"2""#, r#""interface":"lte""#)
            .replace(r#""last_resort":"blackhole""#, r#""balance":"hash""#);
        let c = config(&text);
        for (up, owners) in [
            ([true, true, true], vec![0, 1]),
            ([false, true, true], vec![1]),
            ([false, false, true], vec![2]),
        ] {
            let plan = Plan::build(&c, &states(&c, &up));
            assert!(plan.links[2].standby);
            let mut spread = plan.policies[0].spread_links();
            spread.sort_unstable();
            assert_eq!(spread, owners, "up {up:?}");
            let mut buckets = plan.policies[0].buckets_of(Family::Ipv4).to_vec();
            buckets.sort_unstable();
            buckets.dedup();
            assert_eq!(buckets, owners, "bucket owners, up {up:?}");
        }
    }

    #[test]
    fn ip_rules_are_ours_and_routes_follow_devices() {
        let c = config(TIERS);
        let mut st = states(&c, &[true, true, true]);
        st[2].device = None;
        let plan = Plan::build(&c, &st);
        let rules = plan.ip_rules(Family::Ipv4);
        assert!(plan.ip_rules(Family::Ipv6).is_empty());
        assert_eq!(
            rules.len(),
            3 + 2 + 2 * 3,
            "an oif rule per link with a device"
        );
        let prios: Vec<u32> = rules.iter().map(|r| r.priority).collect();
        assert_eq!(
            prios,
            [
                4000, 4000, 4000, 4001, 4002, 4003, 4004, 4005, 4006, 4007, 4008
            ]
        );
        assert_eq!(
            rules[2].selector,
            Selector::Oif(DeviceName::new("eth2").unwrap())
        );
        assert_eq!(rules[2].action, RuleAction::Lookup(4002));
        let foreign_oif = IpRule {
            action: RuleAction::Lookup(100),
            ..rules[2]
        };
        assert!(
            plan.routing()
                .owns_bound_device_rule(Family::Ipv4, &rules[2])
        );
        assert!(
            !plan
                .routing()
                .owns_bound_device_rule(Family::Ipv4, &foreign_oif)
        );
        assert!(
            !plan
                .routing()
                .owns_bound_device_rule(Family::Ipv6, &rules[2])
        );
        assert_eq!(plan.routes(Family::Ipv4).len(), 2);
        assert!(!plan.links[2].up, "a link without a device is never up");
        let routing = plan.routing();
        assert_eq!(
            (routing.links.as_slice(), routing.links6.as_slice()),
            (&[1, 2, 3][..], &[][..])
        );
        assert!(routing.has_table(Family::Ipv4, 4003) && !routing.has_table(Family::Ipv4, 4004));
        assert!(!routing.has_table(Family::Ipv6, 4003));
    }

    pub(crate) const DUAL: &str = r#"{"values":{
        "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
        "wan6":{".type":"interface",".name":"wan6",".index":2,"family":"ipv6","device":"eth1",
                "prefix":"2001:db8:1::/56"},
        "wanb6":{".type":"interface",".name":"wanb6",".index":3,"family":"ipv6","device":"eth2",
                 "weight":"3","prefix":"2001:db8:2::/56"}
    }}"#;

    /// The [`DUAL`] plan with only the links marked in `up` alive.
    pub(crate) fn dual_plan(up: [bool; 3]) -> Plan {
        let c = config(DUAL);
        Plan::build(&c, &states(&c, &up))
    }

    #[test]
    fn each_family_is_balanced_over_its_own_links_and_pins_follow_liveness() {
        let plan = dual_plan([true, true, true]);
        assert_eq!(
            plan.policies[0].choices,
            [
                (Family::Ipv4, spread(&[(0, 1)])),
                (Family::Ipv6, spread(&[(1, 1), (2, 3)]))
            ]
        );
        assert_eq!(plan.single_family(), None);
        let pinned: Vec<&str> = plan.pins().map(|l| l.name.as_str()).collect();
        assert_eq!(pinned, ["wan6", "wanb6"]);
        let rules6 = plan.ip_rules(Family::Ipv6);
        assert_eq!(
            rules6.len(),
            3 + 2 + 2 * 2,
            "with an oif rule per IPv6 link"
        );
        assert_eq!(rules6[1].action, RuleAction::Lookup(4002));
        assert_eq!(rules6[5].action, RuleAction::Lookup(4002));
        assert_eq!(plan.routes(Family::Ipv6).len(), 2);

        let plan = dual_plan([true, false, true]);
        let pinned: Vec<&str> = plan.pins().map(|l| l.name.as_str()).collect();
        assert_eq!(
            pinned,
            ["wanb6"],
            "a dead link's prefix is balanced instead"
        );
        assert!(plan.pins_prefixes());
        let plan = dual_plan([true, false, false]);
        assert_eq!(
            plan.policies[0].choices[1],
            (Family::Ipv6, Choice::Fallback(LastResort::Unreachable))
        );
    }
}
