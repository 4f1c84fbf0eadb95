//! One classification rule as iptables rules: its matches, then the goto.

use super::steer::last_resort;
use crate::config::matches::{WEEKDAYS, clock};
use crate::config::{Days, Family, Proto, Rule, Schedule};
use crate::names::IPT_PREFIX;
use crate::render::Verdict;
use std::fmt::Write;

/// One classification rule as `family`'s matches and a goto: one iptables rule per ingress
/// device and source MAC it lists (each match takes one).
pub(super) fn classify(family: Family, rule: &Rule) -> Vec<String> {
    let mut m = String::new();
    let proto = match rule.proto {
        Proto::Icmp => Some(family.icmp().to_string()),
        proto => proto.keyword(),
    };
    if let Some(proto) = proto {
        let _ = write!(m, "-p {proto} ");
    }
    for (flag, cidrs) in [("-s", &rule.src_ip), ("-d", &rule.dest_ip)] {
        if !cidrs.is_empty() {
            let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
            let _ = write!(m, "{flag} {} ", list.join(","));
        }
    }
    for (flag, ports) in [("--sports", &rule.src_port), ("--dports", &rule.dest_port)] {
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(|p| p.render(':')).collect();
            let _ = write!(m, "-m multiport {flag} {} ", list.join(","));
        }
    }
    if let Some(schedule) = &rule.schedule {
        m.push_str(&time(schedule));
    }
    let target = match Verdict::from(rule.target) {
        Verdict::Policy(i) => format!("-g {IPT_PREFIX}POLICY_{}", i + 1),
        Verdict::Resort(resort) => last_resort(resort),
    };
    let devices = each(&rule.src_dev, |dev| format!("-i {dev} "));
    let macs = each(&rule.src_mac, |mac| format!("-m mac --mac-source {mac} "));
    let (m, target) = (&m, &target);
    devices
        .iter()
        .flat_map(|dev| macs.iter().map(move |mac| format!("{dev}{m}{mac}{target}")))
        .collect()
}

/// One match per item, or one empty match when there are none.
fn each<T>(items: &[T], spell: impl Fn(&T) -> String) -> Vec<String> {
    match items {
        [] => vec![String::new()],
        items => items.iter().map(spell).collect(),
    }
}

/// `-m time`: the range (crossing midnight as the match itself does), days, and the
/// kernel's time zone unless the times are UTC.
fn time(schedule: &Schedule) -> String {
    let mut m = "-m time ".to_string();
    if let Some((from, to)) = schedule.hours {
        let _ = write!(m, "--timestart {} --timestop {} ", clock(from), clock(to));
    }
    let days = |option: &str, days: &Days, name: &dyn Fn(u32) -> String| {
        let names: Vec<String> = days.listed().map(name).collect();
        let not = if days.invert { "! " } else { "" };
        format!("{not}--{option} {} ", names.join(","))
    };
    if let Some(weekdays) = &schedule.weekdays {
        m.push_str(&days("weekdays", weekdays, &|d| {
            WEEKDAYS[d as usize][..3].to_string()
        }));
    }
    if let Some(monthdays) = &schedule.monthdays {
        m.push_str(&days("monthdays", monthdays, &|d| d.to_string()));
    }
    if !schedule.utc {
        m.push_str("--kerneltz ");
    }
    m
}
