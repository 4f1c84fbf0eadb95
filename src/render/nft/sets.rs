//! Our named sets: each address set's `NAME_v4` and `NAME_v6` (static entries from the config,
//! dynamic ones from dnsmasq) and one set of sticky sources per sticky rule and link. Sets
//! outlive applies with their elements; only what the config dropped is deleted.

use super::policy::policy_of;
use crate::config::{Family, Rule};
use crate::names::NFT_TABLE;
use crate::plan::{Plan, PolicyPlan};
use std::fmt::Write;

/// The set holding the sources of `rule` that stick to link `link`.
pub fn sticky_set(rule: &Rule, link: &str) -> String {
    format!("sticky_{}_{link}", rule.name)
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
                declaration_body(family, "interval,timeout")
            ));
        }
    }
    for rule in plan.rules.iter().filter(|r| r.sticky.is_some()) {
        for link in &plan.links {
            out.push(format!(
                "{} {}",
                sticky_set(rule, &link.name),
                declaration_body(link.family, "dynamic,timeout")
            ));
        }
    }
    out
}

/// What follows the name in a declaration: the address type of `family` and the set's flags.
fn declaration_body(family: Family, flags: &str) -> String {
    let kind = match family {
        Family::Ipv4 => "ipv4_addr",
        Family::Ipv6 => "ipv6_addr",
    };
    format!("{{ type {kind}; flags {flags}; }}")
}

/// The set name a declaration starts with.
fn declared_name(declaration: &str) -> &str {
    declaration.split(' ').next().unwrap_or_default()
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
                .any(|flags| rest == declaration_body(family, flags))
        })
}

/// `add set` for each of `declarations`: a set that exists keeps its elements.
pub(super) fn declare(out: &mut String, declarations: &[String]) {
    for declaration in declarations {
        let _ = writeln!(out, "add set {NFT_TABLE} {declaration}");
    }
}

/// Deletes the sets of `previous` not among `declarations` (each added first, so deleting
/// cannot fail on a set the kernel lost).
pub(super) fn delete_dropped(out: &mut String, previous: &[String], declarations: &[String]) {
    for declaration in previous.iter().filter(|d| !declarations.contains(d)) {
        let name = declared_name(declaration);
        let _ = writeln!(
            out,
            "add set {NFT_TABLE} {declaration}\ndelete set {NFT_TABLE} {name}"
        );
    }
}

/// Each address set's kernel sets (v4, then v6) with their static entries.
fn static_entries(plan: &Plan) -> impl Iterator<Item = (String, Vec<String>)> + '_ {
    plan.sets.iter().flat_map(|set| {
        [false, true].map(|v6| {
            let entries = set.entries_of(v6).map(ToString::to_string).collect();
            (set.kernel_name(v6), entries)
        })
    })
}

/// The static entries of every address set, as `SET ENTRY`: recorded, so the next apply
/// removes those the config drops and leaves the dynamic ones alone.
pub fn static_elements(plan: &Plan) -> Vec<String> {
    static_entries(plan)
        .flat_map(|(name, entries)| entries.into_iter().map(move |e| format!("{name} {e}")))
        .collect()
}

/// `add element` of each kernel set's static entries (adding one already there is no error).
pub(super) fn add_elements(out: &mut String, plan: &Plan) {
    for (name, entries) in static_entries(plan) {
        if !entries.is_empty() {
            let _ = writeln!(
                out,
                "add element {NFT_TABLE} {name} {{ {} }}",
                entries.join(", ")
            );
        }
    }
}

/// Static entries the config dropped (from sets still `declared`): added first, so deleting
/// never fails.
pub(super) fn delete_dropped_elements(
    out: &mut String,
    plan: &Plan,
    previous: &[String],
    declared: &[String],
) {
    let mut kept = static_elements(plan);
    kept.sort_unstable();
    let names: Vec<&str> = declared.iter().map(|d| declared_name(d)).collect();
    let dropped = previous.iter().filter(|e| kept.binary_search(e).is_err());
    for element in dropped {
        let Some((set, entry)) = element.split_once(' ') else {
            continue;
        };
        if names.contains(&set) {
            let _ = writeln!(
                out,
                "add element {NFT_TABLE} {set} {{ {entry} }}\ndelete element {NFT_TABLE} {set} {{ {entry} }}"
            );
        }
    }
}

/// `flush set` for the sticky sources of every link its rule's policy does not use now: a
/// link leaving use drops its sticky entries, so those sources choose again.
pub(super) fn sticky_drops(plan: &Plan) -> String {
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
