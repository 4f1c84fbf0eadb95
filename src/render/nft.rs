//! Plan -> `nft -f` text: our whole table, replaced in one transaction.
//!
//! Masked mark copies use per-link setter chains reached through a verdict map, because nft
//! before kernel 6.13 cannot combine two registers (`meta mark & ~m | ct mark & m`).

use super::{hex, policy_slots};
use crate::config::family::ICMPV6_LINK_TYPES;
use crate::config::{Balance, Family, LastResort, Proto, Rule, RuleTarget};
use crate::names::NFT_TABLE;
use crate::plan::{Choice, Link, Plan, PolicyPlan};
use std::fmt::Write;

/// The complete ruleset in one atomic `nft -f`: create the table if missing, flush its rules,
/// delete the chains the previous ruleset had and this one does not (`stale`), define
/// everything. Flushing instead of deleting the table keeps the hooks registered: a clean
/// apply destroys nothing, and the kernel's wait for destroyed objects (an RCU grace period,
/// about 10 ms) is paid only when old rules exist. A stale chain is added before it is
/// deleted, so the transaction holds whatever the kernel has (someone may have flushed the
/// ruleset since the previous apply).
pub fn ruleset(plan: &Plan, stale: &[String]) -> String {
    let mask = plan.footprint.mask;
    let keep = !mask;
    let mut out = format!("table {NFT_TABLE}\nflush table {NFT_TABLE}\n");
    for chain in stale {
        let _ = writeln!(
            out,
            "add chain {NFT_TABLE} {chain}\ndelete chain {NFT_TABLE} {chain}"
        );
    }
    let _ = writeln!(out, "table {NFT_TABLE} {{");
    let set_packet = |mark: u32| format!("meta mark set meta mark & {} | {}", hex(keep), hex(mark));
    for link in &plan.links {
        let set_ct = format!("ct mark set ct mark & {} | {}", hex(keep), hex(link.mark));
        let packet = set_packet(link.mark);
        chain(
            &mut out,
            &format!("mark_{}", link.name),
            &[&packet, &set_ct],
        );
        chain(&mut out, &format!("restore_{}", link.name), &[&packet]);
    }
    chain(
        &mut out,
        "last_unreachable",
        &[&set_packet(plan.unreachable_mark)],
    );
    chain(
        &mut out,
        "last_blackhole",
        &[&set_packet(plan.blackhole_mark)],
    );
    if plan.pins_prefixes() {
        let pins = pin_rules(plan);
        chain(
            &mut out,
            PINS,
            &pins.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    for policy in &plan.policies {
        let rules = policy_rules(plan, policy);
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        chain(&mut out, &format!("policy_{}", policy.name), &rules);
    }
    out.push_str("\tchain rules {\n");
    if plan.pins_prefixes() {
        // A pin's goto returns here once its mark chain has run: a pinned connection is done.
        let _ = writeln!(
            out,
            "\t\tjump {PINS}\n\t\tmeta mark & {} != 0 return",
            hex(mask)
        );
    }
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
    let skip = skipped(plan);
    let _ = writeln!(
        out,
        "\tchain prerouting {{\n\t\ttype filter hook prerouting priority mangle - 1; policy accept;\n{skip}\t\t{restore}"
    );
    let _ = writeln!(out, "\t\tct mark & {} != 0 return", hex(mask));
    out.push_str("\t\tct state != new return\n");
    for family in Family::ALL {
        let inbound: Vec<String> = plan
            .wan_devices()
            .filter(|(link, _)| link.family == family)
            .map(|(link, dev)| format!("\"{dev}\" : goto mark_{}", link.name))
            .collect();
        if !inbound.is_empty() {
            let _ = writeln!(
                out,
                "\t\t{}iifname vmap {{ {} }}",
                only(plan, family),
                inbound.join(", ")
            );
        }
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
        "\tchain output {{\n\t\ttype route hook output priority mangle - 1; policy accept;\n{skip}\t\t{restore}\n\t}}"
    );
    let _ = write!(
        out,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat - 1; policy accept;\n{}",
        lines(family_return(plan))
    );
    for (link, dev) in plan.wan_devices().filter(|(link, _)| link.nat) {
        let family = link.family;
        let own = if link.prefixes.is_empty() {
            String::new()
        } else {
            format!(
                "{} saddr != {} ",
                family.nft(),
                set(link.prefixes.iter().map(ToString::to_string))
            )
        };
        let action = match link.source {
            Some(addr) => format!("snat {} to {addr}", family.nft()),
            None => "masquerade".to_string(),
        };
        let _ = writeln!(
            out,
            "\t\t{}oifname \"{dev}\" {own}{action}",
            only(plan, family)
        );
    }
    out.push_str("\t}\n}\n");
    out
}

/// The chain that pins new connections from a link's own prefixes to that link.
const PINS: &str = "prefixes";

/// `meta nfproto X ` where both families have links (a rule meant for one of them); nothing
/// where only one has, since the other never gets past [`family_return`].
fn only(plan: &Plan, family: Family) -> String {
    match plan.single_family() {
        Some(_) => String::new(),
        None => format!("meta nfproto {family} "),
    }
}

/// The first line of a base chain: with links of one family only, the other family's packets
/// leave at once (as they always did before IPv6 links existed).
fn family_return(plan: &Plan) -> String {
    match plan.single_family() {
        Some(family) => format!("\t\tmeta nfproto != {family} return"),
        None => String::new(),
    }
}

/// What a hook chain lets pass untouched before anything else: the family without links, and
/// with IPv6 links, neighbour and router discovery and multicast listener messages, which are
/// link-local control traffic and must never be marked or balanced.
fn skipped(plan: &Plan) -> String {
    let mut out = lines(family_return(plan));
    if plan.has(Family::Ipv6) {
        let _ = writeln!(
            out,
            "\t\ticmpv6 type {} return",
            set(ICMPV6_LINK_TYPES.iter().map(|(name, _)| name.to_string()))
        );
    }
    out
}

/// `line` with its newline, or nothing for no line.
fn lines(line: String) -> String {
    if line.is_empty() { line } else { line + "\n" }
}

/// The rules of the prefix-pinning chain: one per usable link with prefixes.
fn pin_rules(plan: &Plan) -> Vec<String> {
    plan.pins()
        .map(|link| {
            format!(
                "ip6 saddr {} goto mark_{}",
                set(link.prefixes.iter().map(ToString::to_string)),
                link.name
            )
        })
        .collect()
}

/// Chains defined by a ruleset text, in order: lets the next apply delete those it drops.
pub fn chains_in(ruleset: &str) -> Vec<String> {
    ruleset
        .lines()
        .filter_map(|line| line.strip_prefix("\tchain ")?.strip_suffix(" {"))
        .map(str::to_string)
        .collect()
}

/// Chains of the `previous` apply that `current` no longer defines.
pub fn stale_chains(previous: &[String], current: &str) -> Vec<String> {
    let keep = chains_in(current);
    previous
        .iter()
        .filter(|c| !keep.contains(c))
        .cloned()
        .collect()
}

/// Only the policy chains (and the prefix pins, which follow liveness too): what a link state
/// change needs, as one small transaction.
pub fn policy_update(plan: &Plan) -> String {
    let mut out = String::new();
    let mut refill = |chain: &str, rules: &[String]| {
        let _ = writeln!(out, "flush chain {NFT_TABLE} {chain}");
        for rule in rules {
            let _ = writeln!(out, "add rule {NFT_TABLE} {chain} {rule}");
        }
    };
    if plan.pins_prefixes() {
        refill(PINS, &pin_rules(plan));
    }
    for policy in &plan.policies {
        refill(
            &format!("policy_{}", policy.name),
            &policy_rules(plan, policy),
        );
    }
    out
}

/// The rules of a policy chain: per family it has members of, a numgen verdict map over the
/// live links' slots (or the last resort).
fn policy_rules(plan: &Plan, policy: &PolicyPlan) -> Vec<String> {
    policy
        .choices
        .iter()
        .map(|(family, choice)| format!("{}{}", only(plan, *family), choice_rule(plan, choice)))
        .collect()
}

/// One family's choice as a single rule.
fn choice_rule(plan: &Plan, choice: &Choice) -> String {
    match choice {
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
    let addressed = !rule.src_ip.is_empty() || !rule.dest_ip.is_empty();
    if let (Some(family), false) = (rule.family, addressed) {
        let _ = write!(m, "meta nfproto {family} ");
    }
    match (rule.proto, rule.family) {
        (Proto::Icmp, Some(family)) => {
            let _ = write!(m, "meta l4proto {} ", family.icmp());
        }
        (Proto::Icmp, None) if plan.has(Family::Ipv6) => {
            let both = Family::ALL.map(Family::icmp);
            let _ = write!(
                m,
                "meta l4proto {} ",
                set(both.iter().map(ToString::to_string))
            );
        }
        (proto, _) => {
            if let Some(proto) = proto.keyword() {
                let _ = write!(m, "meta l4proto {proto} ");
            }
        }
    }
    let family = rule.family.unwrap_or(Family::Ipv4).nft();
    for (key, cidrs) in [("saddr", &rule.src_ip), ("daddr", &rule.dest_ip)] {
        if !cidrs.is_empty() {
            let _ = write!(
                m,
                "{family} {key} {} ",
                set(cidrs.iter().map(ToString::to_string))
            );
        }
    }
    for (key, ports) in [("th sport", &rule.src_port), ("th dport", &rule.dest_port)] {
        if !ports.is_empty() {
            let _ = write!(m, "{key} {} ", set(ports.iter().map(|p| p.render('-'))));
        }
    }
    let verdict = match rule.target {
        RuleTarget::Policy(i) => format!("goto policy_{}", plan.policies[i].name),
        RuleTarget::Default => "accept".to_string(),
        RuleTarget::Unreachable => "goto last_unreachable".to_string(),
        RuleTarget::Blackhole => "goto last_blackhole".to_string(),
    };
    m + &verdict
}

/// A regular chain with its rules.
fn chain(out: &mut String, name: &str, rules: &[&str]) {
    let _ = writeln!(out, "\tchain {name} {{");
    for rule in rules {
        let _ = writeln!(out, "\t\t{rule}");
    }
    out.push_str("\t}\n");
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

    #[test]
    fn policy_update_refills_the_prefix_pins_with_the_live_links() {
        use crate::plan::tests::dual_plan;
        assert_eq!(
            policy_update(&dual_plan([true, false, true])),
            "flush chain inet connmark_lb prefixes\n\
             add rule inet connmark_lb prefixes ip6 saddr { 2001:db8:2::/56 } goto mark_wanb6\n\
             flush chain inet connmark_lb policy_balanced\n\
             add rule inet connmark_lb policy_balanced meta nfproto ipv4 goto mark_wan\n\
             add rule inet connmark_lb policy_balanced meta nfproto ipv6 goto mark_wanb6\n"
        );
    }
}
