//! Plan + live routing state -> the `ip -batch` operations that bring the kernel to the plan.
//!
//! Additions come before removals, and identical objects are left alone, so a re-apply changes
//! nothing and a changed apply never leaves a marked packet without a rule. Every operation
//! knows its inverse, so a failed batch can be rolled back line by line.

use super::hex;
use crate::config::Family;
use crate::live::{IpState, LiveRoute};
use crate::plan::{IpRule, Plan, Route, Routing, RuleAction, Selector};
use std::fmt;

/// One line of an `ip -batch` script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpOp {
    RuleAdd(IpRule),
    RuleDel(IpRule),
    /// Install `new`; `old` is what the table had before (for rollback).
    RouteReplace {
        new: Route,
        old: Option<Route>,
    },
    /// Remove a route of ours; `old` restores it on rollback when we can represent it.
    RouteDel {
        table: u32,
        dst: String,
        old: Option<Route>,
    },
}

impl IpOp {
    /// The operation that undoes this one.
    pub fn inverse(&self) -> Option<IpOp> {
        Some(match self {
            IpOp::RuleAdd(r) => IpOp::RuleDel(*r),
            IpOp::RuleDel(r) => IpOp::RuleAdd(*r),
            IpOp::RouteReplace { new, old: None } => IpOp::RouteDel {
                table: new.table,
                dst: "default".to_string(),
                old: None,
            },
            IpOp::RouteReplace {
                new,
                old: Some(old),
            } => IpOp::RouteReplace {
                new: old.clone(),
                old: Some(new.clone()),
            },
            IpOp::RouteDel { old, .. } => IpOp::RouteReplace {
                new: old.clone()?,
                old: None,
            },
        })
    }
}

impl fmt::Display for IpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpOp::RuleAdd(r) => write!(f, "rule add {}", RuleSpec(r)),
            IpOp::RuleDel(r) => write!(f, "rule del {}", RuleSpec(r)),
            IpOp::RouteReplace { new, .. } => {
                write!(f, "route replace default")?;
                if let Some(gw) = new.gateway {
                    write!(f, " via {gw}")?;
                }
                write!(f, " dev {} table {}", new.device, new.table)
            }
            IpOp::RouteDel { table, dst, .. } => write!(f, "route del {dst} table {table}"),
        }
    }
}

struct RuleSpec<'a>(&'a IpRule);

impl fmt::Display for RuleSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "priority {}", r.priority)?;
        match r.selector {
            Selector::Fwmark { mark, mask } => write!(f, " fwmark {}/{}", hex(mark), hex(mask))?,
            Selector::Oif(device) => write!(f, " oif {}", device.as_str())?,
            Selector::All => {}
        }
        match r.action {
            RuleAction::Lookup(table) => write!(f, " lookup {table}"),
            RuleAction::MainWithoutDefault => write!(f, " lookup main suppress_prefixlength 0"),
            RuleAction::Unreachable => write!(f, " unreachable"),
            RuleAction::Blackhole => write!(f, " blackhole"),
        }
    }
}

/// The operations that turn `live` (the routing state of `family`) into `plan`'s, plus
/// removal of the objects of that family `previous` applies owned that the plan no longer wants
/// (links dropped, other bases or mask).
pub fn diff(plan: &Plan, family: Family, live: &IpState, previous: &[Routing]) -> Vec<IpOp> {
    let want_rules = plan.ip_rules(family);
    let want_routes = plan.routes(family);
    let mut ops = Vec::new();
    for rule in &want_rules {
        if !live.rules.contains(rule) {
            ops.push(IpOp::RuleAdd(*rule));
        }
    }
    for route in &want_routes {
        let old = live
            .routes
            .iter()
            .find(|l| l.table == route.table && l.dst == "default");
        if old.and_then(|l| l.route.as_ref()) != Some(route) {
            ops.push(IpOp::RouteReplace {
                new: route.clone(),
                old: old.and_then(|l| l.route.clone()),
            });
        }
    }
    let mut owned = previous.to_vec();
    owned.push(plan.routing());
    ops.extend(removal(live, family, &owned, &want_rules, &want_routes));
    ops
}

/// Removal of every rule and route of `owned` in `family` (whose routing state `live` is) that
/// is not wanted (all of them for `stop`): a rule only when it is exactly one we render, a
/// route only when it is the default route of one of our link tables. Other rules at our
/// priorities and other routes in any table, ours or not, are someone else's.
pub fn removal(
    live: &IpState,
    family: Family,
    owned: &[Routing],
    want_rules: &[IpRule],
    want_routes: &[Route],
) -> Vec<IpOp> {
    let rules: Vec<IpRule> = owned.iter().flat_map(|o| o.rules(family)).collect();
    let mut ops = Vec::new();
    for rule in &live.rules {
        let ours =
            rules.contains(rule) || owned.iter().any(|o| o.owns_bound_device_rule(family, rule));
        if ours && !want_rules.contains(rule) && !ops.contains(&IpOp::RuleDel(*rule)) {
            ops.push(IpOp::RuleDel(*rule));
        }
    }
    for LiveRoute { table, dst, route } in &live.routes {
        let wanted = want_routes.iter().any(|r| r.table == *table);
        if dst == "default" && owned.iter().any(|o| o.has_table(family, *table)) && !wanted {
            ops.push(IpOp::RouteDel {
                table: *table,
                dst: dst.clone(),
                old: route.clone(),
            });
        }
    }
    ops
}

/// The batch text for `ops`.
pub fn batch(ops: &[IpOp]) -> String {
    ops.iter().map(|op| format!("{op}\n")).collect()
}
