//! Our named sets: each address set's `NAME_v4` and `NAME_v6` (static entries from the config,
//! dynamic ones from dnsmasq) and one set of sticky sources per sticky rule and link. Sets
//! outlive applies with their elements; only what the config dropped is deleted.

use super::policy::policy_of;
use crate::config::{Cidr, Family, Rule};
use crate::names::{NFT_TABLE, is_kernel_name};
use crate::plan::{Plan, PolicyPlan};
use std::fmt::{self, Write};

/// What a set of ours is for, which decides its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// An address set: prefixes (`interval`) from the config and dnsmasq, with timeouts.
    Addresses,
    /// Sticky sources, added by the packet path (`dynamic`), each with its timeout.
    Sticky,
}

impl SetKind {
    /// The word the record stores.
    pub fn name(self) -> &'static str {
        match self {
            SetKind::Addresses => "addresses",
            SetKind::Sticky => "sticky",
        }
    }

    /// The kind the record's word names.
    pub fn from_name(word: &str) -> Option<SetKind> {
        [SetKind::Addresses, SetKind::Sticky]
            .into_iter()
            .find(|k| k.name() == word)
    }

    fn flags(self) -> &'static str {
        match self {
            SetKind::Addresses => "interval,timeout",
            SetKind::Sticky => "dynamic,timeout",
        }
    }
}

/// One set of our table, as declared (and recorded, so the next apply deletes those it drops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDeclaration {
    /// The kernel name: only ASCII letters, digits and `_` (checked when read back).
    pub name: String,
    pub family: Family,
    pub kind: SetKind,
}

/// `NAME { type ...; flags ...; }`, as `add set` takes it.
impl fmt::Display for SetDeclaration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.family {
            Family::Ipv4 => "ipv4_addr",
            Family::Ipv6 => "ipv6_addr",
        };
        write!(
            f,
            "{} {{ type {kind}; flags {}; }}",
            self.name,
            self.kind.flags()
        )
    }
}

/// One static entry of an address set (from the config), as recorded: the next apply removes
/// those the config drops and never the ones others added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticElement {
    /// The kernel set's name.
    pub set: String,
    pub entry: Cidr,
}

/// `SET ENTRY`.
impl fmt::Display for StaticElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.set, self.entry)
    }
}

impl SetDeclaration {
    /// Whether the name is one we could have made (a record is checked before its names
    /// reach nft).
    pub fn is_valid(&self) -> bool {
        is_kernel_name(&self.name)
    }
}

/// The set holding the sources of `rule` that stick to link `link`.
pub fn sticky_set(rule: &Rule, link: &str) -> String {
    format!("sticky_{}_{link}", rule.name)
}

/// Every set: each address set's `NAME_v4` and `NAME_v6`, and one sticky set per sticky rule
/// and link (of the link's family).
pub fn set_declarations(plan: &Plan) -> Vec<SetDeclaration> {
    let mut out = Vec::new();
    for set in &plan.sets {
        for family in Family::ALL {
            out.push(SetDeclaration {
                name: set.kernel_name(family == Family::Ipv6),
                family,
                kind: SetKind::Addresses,
            });
        }
    }
    for rule in plan.rules.iter().filter(|r| r.sticky.is_some()) {
        for link in &plan.links {
            out.push(SetDeclaration {
                name: sticky_set(rule, &link.name),
                family: link.family,
                kind: SetKind::Sticky,
            });
        }
    }
    out
}

/// `add set` for each of `declarations`: a set that exists keeps its elements.
pub(super) fn declare(out: &mut String, declarations: &[SetDeclaration]) {
    for declaration in declarations {
        let _ = writeln!(out, "add set {NFT_TABLE} {declaration}");
    }
}

/// Deletes the sets of `previous` not among `declarations` (each added first, so deleting
/// cannot fail on a set the kernel lost).
pub(super) fn delete_dropped(
    out: &mut String,
    previous: &[SetDeclaration],
    declarations: &[SetDeclaration],
) {
    for declaration in previous.iter().filter(|d| !declarations.contains(d)) {
        let name = &declaration.name;
        let _ = writeln!(
            out,
            "add set {NFT_TABLE} {declaration}\ndelete set {NFT_TABLE} {name}"
        );
    }
}

/// Each address set's kernel sets (v4, then v6) with their static entries.
fn static_entries(plan: &Plan) -> impl Iterator<Item = (String, Vec<Cidr>)> + '_ {
    plan.sets.iter().flat_map(|set| {
        [false, true].map(|v6| (set.kernel_name(v6), set.entries_of(v6).copied().collect()))
    })
}

/// The static entries of every address set: recorded, so the next apply removes those the
/// config drops and leaves the dynamic ones alone.
pub fn static_elements(plan: &Plan) -> Vec<StaticElement> {
    static_entries(plan)
        .flat_map(|(set, entries)| {
            entries.into_iter().map(move |entry| StaticElement {
                set: set.clone(),
                entry,
            })
        })
        .collect()
}

/// `add element` of each kernel set's static entries (adding one already there is no error).
pub(super) fn add_elements(out: &mut String, plan: &Plan) {
    for (name, entries) in static_entries(plan) {
        if !entries.is_empty() {
            let entries: Vec<String> = entries.iter().map(ToString::to_string).collect();
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
    previous: &[StaticElement],
    declared: &[SetDeclaration],
) {
    let mut kept: Vec<String> = static_elements(plan)
        .iter()
        .map(ToString::to_string)
        .collect();
    kept.sort_unstable();
    let dropped = previous
        .iter()
        .filter(|e| kept.binary_search(&e.to_string()).is_err());
    for StaticElement { set, entry } in dropped {
        if declared.iter().any(|d| &d.name == set) {
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
