//! The `table { ... }` block: each link's mark chains, the last-resort chains, the steering
//! chains ([`super::policy`]), the rules chain ([`super::classify`]) and the three hook chains
//! that lead connections into them; and the declarations that create or delete chains.

use super::{classify, dns, only, policy, set, tunnel};
use crate::config::Family;
use crate::config::family::ICMPV6_LINK_TYPES;
use crate::names::NFT_TABLE;
use crate::plan::{Link, Plan};
use crate::render::hex;
use std::fmt::Write;

/// The base chains and the line that hooks each into the kernel: one priority below mangle
/// (and srcnat), so our marks are set before other mangle rules and routing see the packet.
/// The DNS translation runs just after dstnat (-100), so a port forward or DNS redirect of the
/// firewall's wins over it.
const HOOKS: [(&str, &str); 5] = [
    (
        "prerouting",
        "type filter hook prerouting priority mangle - 1; policy accept;",
    ),
    (
        "output",
        "type route hook output priority mangle - 1; policy accept;",
    ),
    (
        "postrouting",
        "type nat hook postrouting priority srcnat - 1; policy accept;",
    ),
    (
        dns::NAT_HOOKS[0],
        "type nat hook prerouting priority -99; policy accept;",
    ),
    (
        dns::NAT_HOOKS[1],
        "type nat hook output priority -99; policy accept;",
    ),
];

/// Only a connection's first packet goes further: later ones keep the mark restored for them.
const NEW_ONLY: &str = "ct state != new return";

/// Traffic for the router itself (or every host of a segment) is never balanced.
const NOT_LOCAL: &str = "fib daddr type { local, broadcast, multicast } return";

/// The hook line of a base chain (none for regular chains).
fn hook_of(chain: &str) -> Option<&'static str> {
    HOOKS
        .iter()
        .find(|(name, _)| *name == chain)
        .map(|(_, hook)| *hook)
}

/// The whole table block, chains in the order they are defined.
pub(super) fn table(plan: &Plan) -> String {
    let mut out = format!("table {NFT_TABLE} {{\n");
    link_chains(&mut out, plan);
    policy::chains(&mut out, plan);
    chain(&mut out, "rules", &classify::rules_chain(plan));
    chain(&mut out, "prerouting", &prerouting(plan));
    chain(&mut out, "output", &output(plan));
    chain(&mut out, "postrouting", &postrouting(plan));
    dns::nat_hooks(&mut out, plan);
    out.push_str("}\n");
    out
}

/// Chain `name` with its rules, a base chain's hook line first.
pub(super) fn chain<S: AsRef<str>>(out: &mut String, name: &str, rules: &[S]) {
    let _ = writeln!(out, "\tchain {name} {{");
    if let Some(hook) = hook_of(name) {
        let _ = writeln!(out, "\t\t{hook}");
    }
    for rule in rules {
        let _ = writeln!(out, "\t\t{}", rule.as_ref());
    }
    out.push_str("\t}\n");
}

/// `add chain` (with its hook, for a base chain) then `flush chain` for each of `chains`: the
/// chain exists, empty, whatever the kernel had.
pub(super) fn declare(out: &mut String, chains: &[String]) {
    for name in chains {
        let hook = hook_of(name).map_or(String::new(), |hook| format!(" {{ {hook} }}"));
        let _ = writeln!(out, "add chain {NFT_TABLE} {name}{hook}");
        let _ = writeln!(out, "flush chain {NFT_TABLE} {name}");
    }
}

/// Deletes the chains of `previous` not among `chains` (added and flushed first, so deleting
/// cannot fail on a chain the kernel lost or one that still has rules).
pub(super) fn delete_dropped(out: &mut String, previous: &[String], chains: &[String]) {
    for chain in previous.iter().filter(|c| !chains.contains(c)) {
        let _ = writeln!(
            out,
            "add chain {NFT_TABLE} {chain}\nflush chain {NFT_TABLE} {chain}\ndelete chain {NFT_TABLE} {chain}"
        );
    }
}

/// Chains defined by a ruleset text, in order: lets the next apply delete those it drops.
pub fn chains_in(ruleset: &str) -> Vec<String> {
    ruleset
        .lines()
        .filter_map(|line| line.strip_prefix("\tchain ")?.strip_suffix(" {"))
        .map(str::to_string)
        .collect()
}

/// The chain that gives link `link` its mark, entered once per new connection.
pub fn mark_chain(link: &str) -> String {
    format!("mark_{link}")
}

/// The chain that gives a later packet of a link's connection the link's mark again.
fn restore_chain(link: &str) -> String {
    format!("restore_{link}")
}

/// `PLACE mark & MASK != 0 return`: a packet or connection that already has one of our marks
/// is left alone.
pub(super) fn marked(plan: &Plan, place: &str) -> String {
    format!("{place} mark & {} != 0 return", hex(plan.footprint.mask))
}

/// Per link its mark chain and restore chain, then the chains that mark for the last resorts
/// (their routing rules answer unreachable or drop). Marks only touch our mask's bits.
fn link_chains(out: &mut String, plan: &Plan) {
    let keep = hex(!plan.footprint.mask);
    let set_packet = |mark: u32| format!("meta mark set meta mark & {keep} | {}", hex(mark));
    for link in &plan.links {
        let packet = set_packet(link.mark);
        let connection = format!("ct mark set ct mark & {keep} | {}", hex(link.mark));
        // Only a new connection's first packet passes here: the counter is the number of new
        // connections given to the link since this apply (the ubus status reads it).
        chain(
            out,
            &mark_chain(&link.name),
            &[format!("counter {packet}"), connection],
        );
        chain(out, &restore_chain(&link.name), &[packet]);
    }
    chain(
        out,
        "last_unreachable",
        &[set_packet(plan.unreachable_mark)],
    );
    chain(out, "last_blackhole", &[set_packet(plan.blackhole_mark)]);
}

/// Forwarded and inbound traffic: a connection of ours gets its mark back; a new one coming
/// in on a WAN device takes that link (so replies leave where it came in); a new one from the
/// LAN is classified.
fn prerouting(plan: &Plan) -> Vec<String> {
    let mut rules = skipped(plan);
    rules.push(restore_map(plan));
    rules.push(marked(plan, "ct"));
    rules.push(NEW_ONLY.to_string());
    for family in Family::ALL {
        let inbound: Vec<String> = plan
            .wan_devices()
            .filter(|(link, _)| link.family == family)
            .map(|(link, dev)| format!("\"{dev}\" : goto {}", mark_chain(&link.name)))
            .collect();
        if !inbound.is_empty() {
            rules.push(format!(
                "{}iifname vmap {{ {} }}",
                only(plan, family),
                inbound.join(", ")
            ));
        }
    }
    rules.push(NOT_LOCAL.to_string());
    rules.extend(dns::jump(plan));
    rules.push(if plan.lan.is_empty() {
        "iifname != \"lo\" goto rules".to_string()
    } else {
        let lan = device_set(plan.lan.iter().map(String::as_str));
        format!("iifname {lan} goto rules")
    });
    rules
}

/// The router's own traffic: a connection of ours gets its mark back; a new one that carries
/// none of our marks (the daemon's probes do) and leaves the router has a tunnel's outer
/// packets pinned to an underlay, its DNS steered and, with `local_traffic`, is steered like
/// LAN traffic.
fn output(plan: &Plan) -> Vec<String> {
    let mut rules = skipped(plan);
    rules.push(restore_map(plan));
    if plan.local_traffic || plan.steers_dns() || plan.has_tunnels() {
        rules.extend([
            marked(plan, "ct"),
            marked(plan, "meta"),
            NEW_ONLY.to_string(),
            NOT_LOCAL.to_string(),
        ]);
    }
    rules.extend(tunnel::jump(plan));
    rules.extend(dns::jump(plan));
    if plan.local_traffic {
        rules.extend(local_rules(plan));
    }
    rules
}

/// Address translation of what leaves by a link with `nat`: sources outside the link's own
/// prefixes take the link's address (a fixed one by snat, else masquerade).
fn postrouting(plan: &Plan) -> Vec<String> {
    let mut rules: Vec<String> = family_return(plan).into_iter().collect();
    for (link, dev) in plan.wan_devices().filter(|(link, _)| link.nat) {
        let family = link.family.nft();
        let own = if link.prefixes.is_empty() {
            String::new()
        } else {
            let prefixes = set(link.prefixes.iter().map(ToString::to_string));
            format!("{family} saddr != {prefixes} ")
        };
        let action = match link.source {
            Some(addr) => format!("snat {family} to {addr}"),
            None => "masquerade".to_string(),
        };
        rules.push(format!(
            "{}oifname \"{dev}\" {own}{action}",
            only(plan, link.family)
        ));
    }
    rules
}

/// An anonymous set of interface names, each quoted.
fn device_set<'a>(devices: impl Iterator<Item = &'a str>) -> String {
    set(devices.map(|d| format!("\"{d}\"")))
}

/// The first rule of a base chain: with links of one family only, the other family's packets
/// leave at once (as they always did before IPv6 links existed).
fn family_return(plan: &Plan) -> Option<String> {
    plan.single_family()
        .map(|family| format!("meta nfproto != {family} return"))
}

/// What a hook chain lets pass untouched before anything else: the family without links, and
/// with IPv6 links, neighbour and router discovery and multicast listener messages, which are
/// link-local control traffic and must never be marked or balanced.
fn skipped(plan: &Plan) -> Vec<String> {
    let mut rules: Vec<String> = family_return(plan).into_iter().collect();
    if plan.has(Family::Ipv6) {
        let types = set(ICMPV6_LINK_TYPES.iter().map(|(name, _)| name.to_string()));
        rules.push(format!("icmpv6 type {types} return"));
    }
    rules
}

/// `ct mark & mask vmap { mark : goto restore_link, ... }` for every link.
fn restore_map(plan: &Plan) -> String {
    let entries: Vec<String> = plan
        .links
        .iter()
        .map(|l: &Link| format!("{} : goto {}", hex(l.mark), restore_chain(&l.name)))
        .collect();
    format!(
        "ct mark & {} vmap {{ {} }}",
        hex(plan.footprint.mask),
        entries.join(", ")
    )
}

/// The router's new connections with `local_traffic` (output hook, so a changed mark
/// re-routes them): one bound to a link's address whose first route left by another link is
/// pinned to the link of its address; the rest that would leave by a WAN device is classified
/// like LAN traffic.
fn local_rules(plan: &Plan) -> Vec<String> {
    let mut rules = Vec::new();
    let mut devices: Vec<&str> = Vec::new();
    for (_, device) in plan.wan_devices() {
        if !devices.contains(&device) {
            devices.push(device);
        }
    }
    if devices.is_empty() {
        return rules;
    }
    let wan = device_set(devices.into_iter());
    rules.push(format!("oifname != {wan} return"));
    for (link, dev) in plan.wan_devices() {
        if let Some(addr) = link.source {
            rules.push(format!(
                "{} saddr {addr} oifname != \"{dev}\" goto {}",
                link.family.nft(),
                mark_chain(&link.name)
            ));
        }
    }
    rules.push("goto rules".to_string());
    rules
}
