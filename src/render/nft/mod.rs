//! Plan -> `nft -f` text: our whole table, replaced in one transaction.
//!
//! Masked mark copies use per-link setter chains reached through a verdict map, because nft
//! before kernel 6.13 cannot combine two registers (`meta mark & ~m | ct mark & m`).

use super::{hex, policy_slots};
use crate::config::classes::set_name;
use crate::config::family::ICMPV6_LINK_TYPES;
use crate::config::{Balance, Family, HashKey, LastResort, Proto, Rule, RuleTarget};
use crate::hash;
use crate::names::NFT_TABLE;
use crate::plan::{Choice, Link, Plan, PolicyPlan};
use std::fmt::Write;

/// What an earlier apply defined in our table (from its record): this one deletes what it
/// drops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Previous<'a> {
    pub chains: &'a [String],
    /// Set declarations as [`set_declarations`] writes them.
    pub sets: &'a [String],
    /// Static entries as [`static_elements`] writes them (`SET ENTRY`).
    pub elements: &'a [String],
}

/// The complete ruleset in one atomic `nft -f`. Every chain is declared (created if missing)
/// and flushed, the chains and sets of the `previous` apply that this one drops are deleted,
/// then everything is defined. Flushing chains instead of the table keeps the hooks registered
/// (a clean apply destroys nothing, so the kernel's wait for destroyed objects, an RCU grace
/// period of about 10 ms, is paid only when old rules go) and keeps the sets' elements: what
/// dnsmasq resolved and which link each sticky source holds survive every apply. Whatever goes
/// is added first, so the transaction holds whatever the kernel has (someone may have flushed
/// the ruleset since the previous apply).
pub fn ruleset(plan: &Plan, previous: Previous) -> String {
    let body = chains(plan);
    let sets = set_declarations(plan);
    let mut out = format!("table {NFT_TABLE}\n");
    for line in &sets {
        let _ = writeln!(out, "add set {NFT_TABLE} {line}");
    }
    let names = chains_in(&body);
    for name in &names {
        let _ = writeln!(out, "add chain {NFT_TABLE} {name}{}", hook_of(name));
        let _ = writeln!(out, "flush chain {NFT_TABLE} {name}");
    }
    for chain in previous.chains.iter().filter(|c| !names.contains(c)) {
        let _ = writeln!(
            out,
            "add chain {NFT_TABLE} {chain}\nflush chain {NFT_TABLE} {chain}\ndelete chain {NFT_TABLE} {chain}"
        );
    }
    for declaration in previous.sets.iter().filter(|d| !sets.contains(d)) {
        let name = declaration.split(' ').next().unwrap_or_default();
        let _ = writeln!(
            out,
            "add set {NFT_TABLE} {declaration}\ndelete set {NFT_TABLE} {name}"
        );
    }
    out.push_str(&body);
    let wanted = static_elements(plan);
    for set in &plan.sets {
        for v6 in [false, true] {
            let entries: Vec<String> = set.entries_of(v6).map(ToString::to_string).collect();
            if !entries.is_empty() {
                let _ = writeln!(
                    out,
                    "add element {NFT_TABLE} {} {{ {} }}",
                    set.kernel_name(v6),
                    entries.join(", ")
                );
            }
        }
    }
    // Static entries the config dropped (from sets still there): added first, so deleting
    // never fails.
    let mut kept = wanted;
    kept.sort_unstable();
    let set_names: Vec<&str> = sets.iter().filter_map(|d| d.split(' ').next()).collect();
    let dropped = previous
        .elements
        .iter()
        .filter(|e| kept.binary_search(e).is_err());
    for element in dropped {
        let Some((set, entry)) = element.split_once(' ') else {
            continue;
        };
        if set_names.contains(&set) {
            let _ = writeln!(
                out,
                "add element {NFT_TABLE} {set} {{ {entry} }}\ndelete element {NFT_TABLE} {set} {{ {entry} }}"
            );
        }
    }
    out.push_str(&sticky_drops(plan));
    out
}

/// The hook line of a base chain (empty for regular chains).
fn hook_of(chain: &str) -> &'static str {
    match chain {
        "prerouting" => PREROUTING_HOOK,
        "output" => OUTPUT_HOOK,
        "postrouting" => POSTROUTING_HOOK,
        _ => "",
    }
}

const PREROUTING_HOOK: &str =
    " { type filter hook prerouting priority mangle - 1; policy accept; }";
const OUTPUT_HOOK: &str = " { type route hook output priority mangle - 1; policy accept; }";
const POSTROUTING_HOOK: &str = " { type nat hook postrouting priority srcnat - 1; policy accept; }";

/// The static entries of every address set, as `SET ENTRY`: recorded, so the next apply
/// removes those the config drops and leaves the dynamic ones alone.
pub fn static_elements(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for set in &plan.sets {
        for v6 in [false, true] {
            let name = set.kernel_name(v6);
            out.extend(set.entries_of(v6).map(|e| format!("{name} {e}")));
        }
    }
    out
}

/// Whether `text` is a set declaration [`set_declarations`] could have written (a record is
/// checked before its names reach nft).
pub fn is_set_declaration(text: &str) -> bool {
    let Some((name, rest)) = text.split_once(' ') else {
        return false;
    };
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && Family::ALL.iter().any(|&family| {
            ["interval,timeout", "dynamic,timeout"]
                .iter()
                .any(|flags| rest == set_declaration_body(family, flags))
        })
}

fn set_declaration_body(family: Family, flags: &str) -> String {
    let kind = match family {
        Family::Ipv4 => "ipv4_addr",
        Family::Ipv6 => "ipv6_addr",
    };
    format!("{{ type {kind}; flags {flags}; }}")
}

/// `NAME { type ...; flags ...; }` of every set: each address set's `NAME_v4` and `NAME_v6`,
/// and one sticky set per sticky rule and link (of the link's family).
pub fn set_declarations(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for set in &plan.sets {
        for family in Family::ALL {
            out.push(format!(
                "{} {}",
                set.kernel_name(family == Family::Ipv6),
                set_declaration_body(family, "interval,timeout")
            ));
        }
    }
    for rule in plan.rules.iter().filter(|r| r.sticky.is_some()) {
        for link in &plan.links {
            out.push(format!(
                "{} {}",
                sticky_set(rule, &link.name),
                set_declaration_body(link.family, "dynamic,timeout")
            ));
        }
    }
    out
}

/// The set holding the sources of `rule` that stick to link `link`.
pub fn sticky_set(rule: &Rule, link: &str) -> String {
    format!("sticky_{}_{link}", rule.name)
}

/// The chains of the table, as one `table { ... }` block.
fn chains(plan: &Plan) -> String {
    let mask = plan.footprint.mask;
    let keep = !mask;
    let mut out = format!("table {NFT_TABLE} {{\n");
    let set_packet = |mark: u32| format!("meta mark set meta mark & {} | {}", hex(keep), hex(mark));
    for link in &plan.links {
        let set_ct = format!("ct mark set ct mark & {} | {}", hex(keep), hex(link.mark));
        let packet = set_packet(link.mark);
        // Only a new connection's first packet passes here: the counter is the number of new
        // connections given to the link since this apply (the ubus status reads it).
        chain(
            &mut out,
            &mark_chain(&link.name),
            &[&format!("counter {packet}"), &set_ct],
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
        let rules = policy_rules(plan, policy, &|link| format!("mark_{link}"));
        chain_of(&mut out, &format!("policy_{}", policy.name), &rules);
    }
    for rule in plan.rules.iter().filter(|r| r.sticky.is_some()) {
        let name = &rule.name;
        chain_of(
            &mut out,
            &format!("sticky_{name}"),
            &sticky_rules(plan, rule),
        );
        for link in &plan.links {
            let lines = stick_rules(rule, link);
            chain_of(&mut out, &format!("stick_{name}_{}", link.name), &lines);
        }
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
        for line in classify(plan, rule) {
            let _ = writeln!(out, "\t\t{line}");
        }
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
        "\tchain output {{\n\t\ttype route hook output priority mangle - 1; policy accept;\n{skip}\t\t{restore}"
    );
    if plan.local_traffic {
        local_rules(&mut out, plan);
    }
    out.push_str("\t}\n");
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

/// The chain that gives link `link` its mark, entered once per new connection.
pub fn mark_chain(link: &str) -> String {
    format!("mark_{link}")
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

/// The router's own new connections (output hook, so a changed mark re-routes them): a
/// socket that carries one of our marks keeps it (our probes); one bound to a link's address
/// whose first route left by another link is pinned to the link of its address; the rest that
/// would leave by a WAN device is classified like LAN traffic.
fn local_rules(out: &mut String, plan: &Plan) {
    let mask = hex(plan.footprint.mask);
    let _ = writeln!(out, "\t\tct mark & {mask} != 0 return");
    let _ = writeln!(out, "\t\tmeta mark & {mask} != 0 return");
    out.push_str("\t\tct state != new return\n");
    out.push_str("\t\tfib daddr type { local, broadcast, multicast } return\n");
    let mut devices: Vec<&str> = Vec::new();
    for (_, device) in plan.wan_devices() {
        if !devices.contains(&device) {
            devices.push(device);
        }
    }
    if devices.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\t\toifname != {} return",
        set(devices.iter().map(|d| format!("\"{d}\"")))
    );
    for (link, dev) in plan.wan_devices() {
        if let Some(addr) = link.source {
            let _ = writeln!(
                out,
                "\t\t{} saddr {addr} oifname != \"{dev}\" goto mark_{}",
                link.family.nft(),
                link.name
            );
        }
    }
    out.push_str("\t\tgoto rules\n");
}

/// Chains defined by a ruleset text, in order: lets the next apply delete those it drops.
pub fn chains_in(ruleset: &str) -> Vec<String> {
    ruleset
        .lines()
        .filter_map(|line| line.strip_prefix("\tchain ")?.strip_suffix(" {"))
        .map(str::to_string)
        .collect()
}

/// Only the policy chains (and the prefix pins, which follow liveness too), the sticky rules'
/// chains and the sticky sources of links that left their policy: what a link state change
/// needs, as one small transaction.
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
            &policy_rules(plan, policy, &|link| format!("mark_{link}")),
        );
    }
    for rule in plan.rules.iter().filter(|r| r.sticky.is_some()) {
        refill(&format!("sticky_{}", rule.name), &sticky_rules(plan, rule));
    }
    out.push_str(&sticky_drops(plan));
    out
}

/// The policy a rule sends its connections to, if any.
fn policy_of<'p>(plan: &'p Plan, rule: &Rule) -> Option<&'p PolicyPlan> {
    match rule.target {
        RuleTarget::Policy(i) => plan.policies.get(i),
        _ => None,
    }
}

/// `flush set` for the sticky sources of every link its rule's policy does not use now: a
/// link leaving use drops its sticky entries, so those sources choose again.
fn sticky_drops(plan: &Plan) -> String {
    let mut out = String::new();
    for rule in plan.rules.iter().filter(|r| r.sticky.is_some()) {
        let live = policy_of(plan, rule)
            .map(PolicyPlan::spread_links)
            .unwrap_or_default();
        for (index, link) in plan.links.iter().enumerate() {
            if !live.contains(&index) {
                let name = sticky_set(rule, &link.name);
                let _ = writeln!(out, "flush set {NFT_TABLE} {name}");
            }
        }
    }
    out
}

/// A sticky rule's chain: a source found in a live link's set takes that link again; any
/// other source gets the policy's choice, through the link's `stick_` chain that remembers it.
fn sticky_rules(plan: &Plan, rule: &Rule) -> Vec<String> {
    let Some(policy) = policy_of(plan, rule) else {
        return Vec::new();
    };
    let mut out: Vec<String> = policy
        .spread_links()
        .into_iter()
        .map(|index| {
            let link = &plan.links[index];
            format!(
                "{} saddr @{} goto stick_{}_{}",
                link.family.nft(),
                sticky_set(rule, &link.name),
                rule.name,
                link.name
            )
        })
        .collect();
    let chain = |link: &str| format!("stick_{}_{link}", rule.name);
    out.extend(policy_rules(plan, policy, &chain));
    out
}

/// A link's `stick_` chain: (re)start the source's timeout in the link's set, then mark.
fn stick_rules(rule: &Rule, link: &Link) -> Vec<String> {
    let timeout = rule.sticky.map_or(0, |s| s.timeout);
    let family = link.family;
    vec![
        format!(
            "meta nfproto {family} update @{} {{ {} saddr timeout {timeout}s }}",
            sticky_set(rule, &link.name),
            family.nft()
        ),
        format!("goto mark_{}", link.name),
    ]
}

/// The rules of a policy chain, each link's verdict given by `target` (its mark chain, or a
/// sticky rule's `stick_` chain): per family it has members of, a numgen verdict map over the
/// live links' slots, or for hash balancing a jhash verdict map over the bucket table (or the
/// last resort).
fn policy_rules(plan: &Plan, policy: &PolicyPlan, target: &dyn Fn(&str) -> String) -> Vec<String> {
    policy
        .choices
        .iter()
        .map(|(family, choice)| {
            let rule = choice_rule(plan, policy, *family, choice, target);
            format!("{}{rule}", only(plan, *family))
        })
        .collect()
}

/// One family's choice as a single rule.
fn choice_rule(
    plan: &Plan,
    policy: &PolicyPlan,
    family: Family,
    choice: &Choice,
    target: &dyn Fn(&str) -> String,
) -> String {
    let goto = |link: usize| format!("goto {}", target(&plan.links[link].name));
    match choice {
        Choice::Spread(shares) if shares.len() == 1 => goto(shares[0].link),
        Choice::Spread(shares) => match policy.balance {
            Balance::Hash(key) => {
                let proto = family.nft();
                let fields = match key {
                    HashKey::Src => format!("{proto} saddr"),
                    HashKey::SrcDst => format!("{proto} saddr . {proto} daddr"),
                };
                let entries: Vec<String> = hash::ranges(policy.buckets_of(family))
                    .into_iter()
                    .map(|(from, to, link)| format!("{} : {}", range(from, to), goto(link)))
                    .collect();
                format!(
                    "jhash {fields} mod {} seed {:#x} vmap {{ {} }}",
                    hash::BUCKETS,
                    hash::SEED,
                    entries.join(", ")
                )
            }
            balance => {
                let total: u32 = shares.iter().map(|s| s.weight).sum();
                let kind = if balance == Balance::Random {
                    "random"
                } else {
                    "inc"
                };
                let slots: Vec<String> = policy_slots(shares)
                    .map(|(from, to, share)| format!("{} : {}", range(from, to), goto(share.link)))
                    .collect();
                format!("numgen {kind} mod {total} vmap {{ {} }}", slots.join(", "))
            }
        },
        Choice::Fallback(resort) => last_resort(*resort).to_string(),
    }
}

/// `n` or `from-to`.
fn range(from: u32, to: u32) -> String {
    if from == to {
        from.to_string()
    } else {
        format!("{from}-{to}")
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

/// One classification rule as nft rules: matchers then the verdict; one rule per family when
/// it names address sets (an nft rule matches one family's addresses).
fn classify(plan: &Plan, rule: &Rule) -> Vec<String> {
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
        RuleTarget::Policy(_) if rule.sticky.is_some() => format!("goto sticky_{}", rule.name),
        RuleTarget::Policy(i) => format!("goto policy_{}", plan.policies[i].name),
        RuleTarget::Default => "accept".to_string(),
        RuleTarget::Unreachable => "goto last_unreachable".to_string(),
        RuleTarget::Blackhole => "goto last_blackhole".to_string(),
    };
    if rule.dest_set.is_none() && rule.src_set.is_none() {
        return vec![m + &verdict];
    }
    let families: Vec<Family> = match rule.family {
        Some(family) => vec![family],
        None if addressed => vec![Family::Ipv4],
        None => Family::ALL.into_iter().filter(|f| plan.has(*f)).collect(),
    };
    families
        .into_iter()
        .map(|family| {
            let mut line = m.clone();
            for (dir, set) in [("saddr", &rule.src_set), ("daddr", &rule.dest_set)] {
                if let Some(name) = set {
                    let kernel = set_name(name, family == Family::Ipv6);
                    let _ = write!(line, "{} {dir} @{kernel} ", family.nft());
                }
            }
            line + &verdict
        })
        .collect()
}

/// A regular chain with its rules.
fn chain_of(out: &mut String, name: &str, rules: &[String]) {
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    chain(out, name, &rules);
}

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
