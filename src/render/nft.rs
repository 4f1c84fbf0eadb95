//! Plan -> `nft -f` text: our whole table, replaced in one transaction.
//!
//! Masked mark copies use per-link setter chains reached through a verdict map, because nft
//! before kernel 6.13 cannot combine two registers (`meta mark & ~m | ct mark & m`).

use super::{hex, policy_slots};
use crate::config::{Balance, Cidr, LastResort, PortRange, Proto, Rule, RuleTarget};
use crate::names::NFT_TABLE;
use crate::plan::{Choice, Link, Plan, PolicyPlan};
use std::fmt::Write;

/// The complete ruleset: create-if-missing, delete, recreate, all in one atomic `nft -f`.
pub fn ruleset(plan: &Plan) -> String {
    let mask = plan.footprint.mask;
    let keep = !mask;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "table {NFT_TABLE}\ndelete table {NFT_TABLE}\ntable {NFT_TABLE} {{"
    );
    let set_packet = |out: &mut String, mark: u32| {
        let _ = writeln!(
            out,
            "\t\tmeta mark set meta mark & {} | {}",
            hex(keep),
            hex(mark)
        );
    };
    for link in &plan.links {
        let _ = writeln!(out, "\tchain mark_{} {{", link.name);
        set_packet(&mut out, link.mark);
        let _ = writeln!(
            out,
            "\t\tct mark set ct mark & {} | {}\n\t}}",
            hex(keep),
            hex(link.mark)
        );
        let _ = writeln!(out, "\tchain restore_{} {{", link.name);
        set_packet(&mut out, link.mark);
        out.push_str("\t}\n");
    }
    for (name, mark) in [
        ("last_unreachable", plan.unreachable_mark),
        ("last_blackhole", plan.blackhole_mark),
    ] {
        let _ = writeln!(out, "\tchain {name} {{");
        set_packet(&mut out, mark);
        out.push_str("\t}\n");
    }
    for policy in &plan.policies {
        let _ = writeln!(
            out,
            "\tchain policy_{} {{\n\t\t{}\n\t}}",
            policy.name,
            policy_rule(plan, policy)
        );
    }
    out.push_str("\tchain rules {\n");
    for rule in &plan.rules {
        let _ = writeln!(out, "\t\t{}", classify(plan, rule));
    }
    if plan.rules.is_empty() {
        if let Some(first) = plan.policies.first() {
            let _ = writeln!(out, "\t\tgoto policy_{}", first.name);
        }
    }
    out.push_str("\t}\n");

    let restore = restore_map(plan);
    let _ = writeln!(
        out,
        "\tchain prerouting {{\n\t\ttype filter hook prerouting priority mangle - 1; policy accept;\n\t\tmeta nfproto != ipv4 return"
    );
    let _ = writeln!(out, "\t\t{restore}");
    let _ = writeln!(out, "\t\tct mark & {} != 0 return", hex(mask));
    out.push_str("\t\tct state != new return\n");
    let inbound: Vec<String> = plan
        .wan_devices()
        .map(|(link, dev)| format!("\"{dev}\" : goto mark_{}", link.name))
        .collect();
    if !inbound.is_empty() {
        let _ = writeln!(out, "\t\tiifname vmap {{ {} }}", inbound.join(", "));
    }
    out.push_str("\t\tfib daddr type { local, broadcast, multicast } return\n");
    if plan.lan.is_empty() {
        out.push_str("\t\tiifname != \"lo\" goto rules\n");
    } else {
        let _ = writeln!(
            out,
            "\t\tiifname {} goto rules",
            set(plan.lan.iter().map(|d| format!("\"{d}\"")))
        );
    }
    out.push_str("\t}\n");
    let _ = writeln!(
        out,
        "\tchain output {{\n\t\ttype route hook output priority mangle - 1; policy accept;\n\t\tmeta nfproto != ipv4 return\n\t\t{restore}\n\t}}"
    );
    let _ = writeln!(
        out,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat - 1; policy accept;\n\t\tmeta nfproto != ipv4 return"
    );
    for (link, dev) in plan.wan_devices() {
        match link.source {
            Some(addr) => {
                let _ = writeln!(out, "\t\toifname \"{dev}\" snat ip to {addr}");
            }
            None => {
                let _ = writeln!(out, "\t\toifname \"{dev}\" masquerade");
            }
        }
    }
    out.push_str("\t}\n}\n");
    out
}

/// Only the policy chains: what a link state change needs, as one small transaction.
pub fn policy_update(plan: &Plan) -> String {
    let mut out = String::new();
    for policy in &plan.policies {
        let _ = writeln!(
            out,
            "flush chain {NFT_TABLE} policy_{0}\nadd rule {NFT_TABLE} policy_{0} {1}",
            policy.name,
            policy_rule(plan, policy)
        );
    }
    out
}

/// The single rule of a policy chain: a numgen verdict map over the live links' slots.
fn policy_rule(plan: &Plan, policy: &PolicyPlan) -> String {
    match &policy.choice {
        Choice::Spread(shares) if shares.len() == 1 => {
            format!("goto mark_{}", plan.links[shares[0].link].name)
        }
        Choice::Spread(shares) => {
            let total: u32 = shares.iter().map(|s| s.weight).sum();
            let kind = match plan.balance {
                Balance::RoundRobin => "inc",
                Balance::Random => "random",
            };
            let slots: Vec<String> = policy_slots(shares)
                .map(|(from, to, share)| {
                    let key = if from == to {
                        from.to_string()
                    } else {
                        format!("{from}-{to}")
                    };
                    format!("{key} : goto mark_{}", plan.links[share.link].name)
                })
                .collect();
            format!("numgen {kind} mod {total} vmap {{ {} }}", slots.join(", "))
        }
        Choice::Fallback(resort) => last_resort(*resort).to_string(),
    }
}

fn last_resort(resort: LastResort) -> &'static str {
    match resort {
        LastResort::Unreachable => "goto last_unreachable",
        LastResort::Blackhole => "goto last_blackhole",
        LastResort::Default => "accept",
    }
}

/// `ct mark & mask vmap { mark : goto restore_link, ... }` for every link.
fn restore_map(plan: &Plan) -> String {
    let entries: Vec<String> = plan
        .links
        .iter()
        .map(|l: &Link| format!("{} : goto restore_{}", hex(l.mark), l.name))
        .collect();
    format!(
        "ct mark & {} vmap {{ {} }}",
        hex(plan.footprint.mask),
        entries.join(", ")
    )
}

/// One classification rule: matchers then the verdict.
fn classify(plan: &Plan, rule: &Rule) -> String {
    let mut m = String::new();
    match rule.proto {
        Proto::All => {}
        Proto::Tcp => m.push_str("meta l4proto tcp "),
        Proto::Udp => m.push_str("meta l4proto udp "),
        Proto::Icmp => m.push_str("meta l4proto icmp "),
        Proto::Number(n) => {
            let _ = write!(m, "meta l4proto {n} ");
        }
    }
    let cidrs = |list: &[Cidr]| set(list.iter().map(|c| format!("{}/{}", c.addr, c.len)));
    let ports = |list: &[PortRange]| {
        set(list.iter().map(|p| {
            if p.from == p.to {
                p.from.to_string()
            } else {
                format!("{}-{}", p.from, p.to)
            }
        }))
    };
    if !rule.src_ip.is_empty() {
        let _ = write!(m, "ip saddr {} ", cidrs(&rule.src_ip));
    }
    if !rule.dest_ip.is_empty() {
        let _ = write!(m, "ip daddr {} ", cidrs(&rule.dest_ip));
    }
    if !rule.src_port.is_empty() {
        let _ = write!(m, "th sport {} ", ports(&rule.src_port));
    }
    if !rule.dest_port.is_empty() {
        let _ = write!(m, "th dport {} ", ports(&rule.dest_port));
    }
    let verdict = match rule.target {
        RuleTarget::Policy(i) => format!("goto policy_{}", plan.policies[i].name),
        RuleTarget::Default => "accept".to_string(),
        RuleTarget::Unreachable => "goto last_unreachable".to_string(),
        RuleTarget::Blackhole => "goto last_blackhole".to_string(),
    };
    m + &verdict
}

/// An anonymous nft set `{ a, b }`.
fn set(items: impl Iterator<Item = String>) -> String {
    format!("{{ {} }}", items.collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::tiers_plan;

    #[test]
    fn policy_update_flushes_and_refills_each_policy_chain() {
        assert_eq!(
            policy_update(&tiers_plan([true, true, true])),
            "flush chain inet connmark_lb policy_main\n\
             add rule inet connmark_lb policy_main numgen inc mod 3 vmap { 0-1 : goto mark_wan, 2 : goto mark_wanb }\n"
        );
        assert_eq!(
            policy_update(&tiers_plan([false, true, true])),
            "flush chain inet connmark_lb policy_main\nadd rule inet connmark_lb policy_main goto mark_wanb\n"
        );
        assert_eq!(
            policy_update(&tiers_plan([false, false, false])),
            "flush chain inet connmark_lb policy_main\nadd rule inet connmark_lb policy_main goto last_blackhole\n"
        );
    }
}
