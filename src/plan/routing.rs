//! The routing half of the plan: the ip rules and per-link tables we own, and how our marks,
//! priorities and table numbers are laid out under the footprint, so that apply, re-apply and
//! `stop` find exactly ours among everyone's.

use super::{DeviceName, Plan, Selector};
use crate::config::Family;
use std::net::IpAddr;

/// What an ip rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Lookup(u32),
    /// `lookup main suppress_prefixlength 0`: LAN and connected routes win over link tables.
    MainWithoutDefault,
    Unreachable,
    Blackhole,
}

/// One policy-routing rule we own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRule {
    pub priority: u32,
    pub selector: Selector,
    pub action: RuleAction,
}

/// The default route of one link's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    pub device: String,
    pub gateway: Option<IpAddr>,
}

/// The kernel objects we may own: used to find ours among everyone's rules and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub mask: u32,
    pub priority_base: u32,
    pub table_base: u32,
}

/// The routing objects one apply owns: exactly the ip rules and link tables of these link
/// numbers under this footprint. Recorded after every apply, so a later apply or `stop` removes
/// what was ours and nothing else, whatever else lives at nearby priorities or tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub footprint: Footprint,
    /// Interface numbers (1-based config order) of the enabled IPv4 links.
    pub links: Vec<u32>,
    /// The same for the IPv6 links, whose rules and tables are in the kernel's IPv6 lists.
    pub links6: Vec<u32>,
}

impl Footprint {
    /// The packet mark of link number `id`.
    pub fn mark(&self, id: u32) -> u32 {
        id << self.mask.trailing_zeros()
    }

    /// The routing table of link number `id`.
    pub fn table(&self, id: u32) -> u32 {
        self.table_base + id
    }

    /// The mark sent to the `unreachable` rule when a policy has no live link: the highest
    /// value under the mask.
    pub fn unreachable_mark(&self) -> u32 {
        self.mask
    }

    /// The mark sent to the `blackhole` rule: the value below [`Footprint::unreachable_mark`].
    pub fn blackhole_mark(&self) -> u32 {
        self.mask - self.mark(1)
    }
}

impl Routing {
    /// The link numbers of `family`.
    pub fn ids(&self, family: Family) -> &[u32] {
        match family {
            Family::Ipv4 => &self.links,
            Family::Ipv6 => &self.links6,
        }
    }

    /// The ip rules of `family`: main-without-default first, then the two last-resort marks,
    /// then per link a lookup followed by an `unreachable` that catches its marked packets when
    /// its table is empty (device gone), so they never leak out another link. None for a family
    /// without links.
    pub fn rules(&self, family: Family) -> Vec<IpRule> {
        if self.ids(family).is_empty() {
            return Vec::new();
        }
        let f = &self.footprint;
        let base = f.priority_base;
        let fwmark = |mark| Selector::Fwmark { mark, mask: f.mask };
        let mut rules = vec![
            IpRule {
                priority: base,
                selector: Selector::All,
                action: RuleAction::MainWithoutDefault,
            },
            IpRule {
                priority: base + 1,
                selector: fwmark(f.unreachable_mark()),
                action: RuleAction::Unreachable,
            },
            IpRule {
                priority: base + 2,
                selector: fwmark(f.blackhole_mark()),
                action: RuleAction::Blackhole,
            },
        ];
        for &id in self.ids(family) {
            rules.push(IpRule {
                priority: base + 1 + 2 * id,
                selector: fwmark(f.mark(id)),
                action: RuleAction::Lookup(f.table(id)),
            });
            rules.push(IpRule {
                priority: base + 2 + 2 * id,
                selector: fwmark(f.mark(id)),
                action: RuleAction::Unreachable,
            });
        }
        rules
    }

    /// Whether `rule` is a bound-device rule of ours ([`Plan::ip_rules`]): at our first
    /// priority, with an `oif` selector, looking up one of our link tables of `family`. Which
    /// device it names follows netifd, so ownership goes by that shape.
    pub fn owns_bound_device_rule(&self, family: Family, rule: &IpRule) -> bool {
        rule.priority == self.footprint.priority_base
            && matches!(rule.selector, Selector::Oif(_))
            && matches!(rule.action, RuleAction::Lookup(table) if self.has_table(family, table))
    }

    /// Whether `table` is one of the link tables of `family`.
    pub fn has_table(&self, family: Family, table: u32) -> bool {
        self.ids(family)
            .iter()
            .any(|&id| self.footprint.table(id) == table)
    }
}

impl Plan {
    /// The routing objects this plan owns: its footprint and link numbers per family.
    pub fn routing(&self) -> Routing {
        let ids = |family| {
            self.links_of(family)
                .map(|l| l.table - self.footprint.table_base)
                .collect()
        };
        Routing {
            footprint: self.footprint,
            links: ids(Family::Ipv4),
            links6: ids(Family::Ipv6),
        }
    }

    /// The ip rules we want (see [`Routing::rules`]), with one more per link of `family` with a
    /// device right after the first: a local socket bound to a WAN device keeps it whatever
    /// mark its packets get, its route coming from that link's table (the rule sees only bound
    /// sockets).
    pub fn ip_rules(&self, family: Family) -> Vec<IpRule> {
        let mut rules = self.routing().rules(family);
        let bound: Vec<IpRule> = self
            .links_of(family)
            .filter_map(|link| {
                Some(IpRule {
                    priority: self.footprint.priority_base,
                    selector: Selector::Oif(DeviceName::new(link.device.as_deref()?)?),
                    action: RuleAction::Lookup(link.table),
                })
            })
            .collect();
        if !rules.is_empty() {
            rules.splice(1..1, bound);
        }
        rules
    }

    /// One default route per link of `family` whose device is known (a down link with a
    /// present device keeps its route: it only leaves the choice, its pinned connections still
    /// need it).
    pub fn routes(&self, family: Family) -> Vec<Route> {
        self.links_of(family)
            .filter_map(|link| {
                Some(Route {
                    table: link.table,
                    device: link.device.clone()?,
                    gateway: link.gateway,
                })
            })
            .collect()
    }
}
