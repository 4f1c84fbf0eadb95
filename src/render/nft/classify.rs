//! The rules chain: each classification rule as nft rules, first match decides where a new
//! connection goes (a policy, a sticky rule's chain, or a last resort).

use super::chains::marked;
use super::policy::{PINS, last_resort, policy_chain, sticky_chain};
use super::set;
use crate::config::classes::set_name;
use crate::config::matches::{DAY, WEEKDAYS, clock};
use crate::config::{Family, Proto, Rule, Schedule};
use crate::plan::Plan;
use crate::render::Verdict;
use std::fmt::Write;

/// The rules of the `rules` chain: the prefix pins first, then every rule in config order;
/// without rules, every connection goes to the first policy.
pub(super) fn rules_chain(plan: &Plan) -> Vec<String> {
    let mut rules = Vec::new();
    if plan.pins_prefixes() {
        // A pin's goto returns here once its mark chain has run: a pinned connection is done.
        rules.push(format!("jump {PINS}"));
        rules.push(marked(plan, "meta"));
    }
    rules.extend(plan.rules.iter().flat_map(|rule| classify(plan, rule)));
    if plan.rules.is_empty() {
        if let Some(first) = plan.policies.first() {
            rules.push(format!("goto {}", policy_chain(&first.name)));
        }
    }
    rules
}

/// One classification rule as nft rules: matchers then the verdict; one rule per family when
/// it names address sets (an nft rule matches one family's addresses).
fn classify(plan: &Plan, rule: &Rule) -> Vec<String> {
    let matches = protocol(plan, rule) + &endpoints(rule) + &origin(rule) + &when(rule);
    let verdict = verdict(plan, rule);
    if rule.dest_set.is_none() && rule.src_set.is_none() {
        return vec![matches + &verdict];
    }
    set_families(plan, rule)
        .into_iter()
        .map(|family| format!("{matches}{}{verdict}", set_matches(rule, family)))
        .collect()
}

/// Whether a rule matches addresses, which name its family themselves.
fn addressed(rule: &Rule) -> bool {
    !rule.src_ip.is_empty() || !rule.dest_ip.is_empty()
}

/// The family match (unless the addresses give it) and the protocol match: ICMP of either
/// family is both ICMP protocols where IPv6 links exist.
fn protocol(plan: &Plan, rule: &Rule) -> String {
    let mut m = String::new();
    if let (Some(family), false) = (rule.family, addressed(rule)) {
        let _ = write!(m, "meta nfproto {family} ");
    }
    let proto = match (rule.proto, rule.family) {
        (Proto::Icmp, Some(family)) => Some(family.icmp().to_string()),
        (Proto::Icmp, None) if plan.has(Family::Ipv6) => {
            let both = Family::ALL.map(Family::icmp);
            Some(set(both.iter().map(ToString::to_string)))
        }
        (proto, _) => proto.keyword(),
    };
    if let Some(proto) = proto {
        let _ = write!(m, "meta l4proto {proto} ");
    }
    m
}

/// The address and port matches, sources before destinations.
fn endpoints(rule: &Rule) -> String {
    let mut m = String::new();
    let family = rule.family.unwrap_or(Family::Ipv4).nft();
    for (key, cidrs) in [("saddr", &rule.src_ip), ("daddr", &rule.dest_ip)] {
        if !cidrs.is_empty() {
            let cidrs = set(cidrs.iter().map(ToString::to_string));
            let _ = write!(m, "{family} {key} {cidrs} ");
        }
    }
    for (key, ports) in [("th sport", &rule.src_port), ("th dport", &rule.dest_port)] {
        if !ports.is_empty() {
            let _ = write!(m, "{key} {} ", set(ports.iter().map(|p| p.render('-'))));
        }
    }
    m
}

/// The ingress device and source hardware address matches.
fn origin(rule: &Rule) -> String {
    let mut m = String::new();
    if !rule.src_dev.is_empty() {
        let devices = set(rule.src_dev.iter().map(|d| format!("\"{d}\"")));
        let _ = write!(m, "iifname {devices} ");
    }
    if !rule.src_mac.is_empty() {
        let macs = set(rule.src_mac.iter().map(ToString::to_string));
        let _ = write!(m, "ether saddr {macs} ");
    }
    m
}

/// The time matches. Local times are written as nft reads them (it converts them to UTC when
/// it loads the rule), UTC ones as seconds since midnight, which nft takes as they are. A
/// range is always written with both ends (nft's conversion of a one-sided comparison does
/// not wrap at midnight); one that crosses midnight as the day without its complement.
/// Weekdays are matched in the kernel's time zone. Month days have no nft match: the config
/// is refused with this backend before anything is rendered.
fn when(rule: &Rule) -> String {
    let Some(schedule) = rule.schedule else {
        return String::new();
    };
    let mut m = String::new();
    if let Some(range) = hour_range(&schedule) {
        let _ = write!(m, "meta hour {range} ");
    }
    if let Some(days) = schedule.weekdays {
        let names = set(days
            .listed()
            .map(|d| format!("\"{}\"", WEEKDAYS[d as usize])));
        let not = if days.invert { "!= " } else { "" };
        let _ = write!(m, "meta day {not}{names} ");
    }
    m
}

/// `a-b`, or `!= a-b` for the complement of a range that crosses midnight; None for a range
/// that covers the whole day.
fn hour_range(schedule: &Schedule) -> Option<String> {
    let (from, to) = schedule.hours?;
    let time = |seconds: u32| match schedule.utc {
        true => seconds.to_string(),
        false => format!("\"{}\"", clock(seconds)),
    };
    if from <= to {
        return Some(format!("{}-{}", time(from), time(to)));
    }
    // The complement of [from, DAY) + [0, to] is [to + 1, from - 1], empty when they touch.
    let (gap_from, gap_to) = (to + 1, from - 1);
    (gap_from <= gap_to && gap_to < DAY).then(|| format!("!= {}-{}", time(gap_from), time(gap_to)))
}

/// Where the rule sends a matching new connection.
fn verdict(plan: &Plan, rule: &Rule) -> String {
    match Verdict::from(rule.target) {
        Verdict::Policy(_) if rule.sticky.is_some() => format!("goto {}", sticky_chain(rule)),
        Verdict::Policy(i) => format!("goto {}", policy_chain(&plan.policies[i].name)),
        Verdict::Resort(resort) => last_resort(resort).to_string(),
    }
}

/// The families a rule with address sets is written for: its own, IPv4 when its addresses
/// are, else each family that has links.
fn set_families(plan: &Plan, rule: &Rule) -> Vec<Family> {
    match rule.family {
        Some(family) => vec![family],
        None if addressed(rule) => vec![Family::Ipv4],
        None => Family::ALL.into_iter().filter(|f| plan.has(*f)).collect(),
    }
}

/// The address set matches of a rule in `family`, each naming that family's kernel set.
fn set_matches(rule: &Rule, family: Family) -> String {
    let mut m = String::new();
    for (dir, set) in [("saddr", &rule.src_set), ("daddr", &rule.dest_set)] {
        if let Some(name) = set {
            let kernel = set_name(name, family == Family::Ipv6);
            let _ = write!(m, "{} {dir} @{kernel} ", family.nft());
        }
    }
    m
}
