//! Plan -> `iptables-restore --noflush` text: our chains in mangle and nat, one load.
//!
//! Declaring a chain with `:NAME` flushes it under --noflush, so our chains are rewritten in
//! place; jumps from built-in chains are added only when the live state lacks them, and our
//! stale chains are deleted, so re-apply never duplicates anything.
//!
//! [`table`] writes one table's section and knows what of the live state is ours; [`steer`]
//! the rules that choose a link; [`classify`] a rule's matches; [`dns`] DNS that follows the
//! link; [`tunnel`] tunnels' outer packets.

mod classify;
mod dns;
mod steer;
mod table;
mod tunnel;

pub use table::{chains_in, ours, removal};

use super::hex;
use crate::config::Family;
use crate::config::family::ICMPV6_LINK_TYPES;
use crate::live::IptablesState;
use crate::names::IPT_PREFIX;
use crate::plan::Plan;
use steer::choice_rules;
use table::Table;

/// Text for `family`'s tool (`iptables-restore` or `ip6tables-restore`) that installs (or
/// rewrites) everything of `plan` in that family, given what is live now in it. A family
/// without links gets only the removal of what is live.
pub fn ruleset(plan: &Plan, family: Family, live: &IptablesState) -> String {
    if !plan.has(family) {
        return removal(live);
    }
    let mut out = String::new();
    for table in [mangle(plan, family), nat(plan, family)] {
        table.write(&mut out, Some(live));
    }
    out
}

/// The chains [`ruleset`] defines for `plan` in `family`, without writing the text: what
/// `stop` removes besides the record's.
pub fn chains(plan: &Plan, family: Family) -> Vec<String> {
    if !plan.has(family) {
        return Vec::new();
    }
    [mangle(plan, family), nat(plan, family)]
        .into_iter()
        .flat_map(|table| table.chains.into_iter().map(|(name, _)| name))
        .collect()
}

/// The mangle table of `family`, chains declared in the order they are first written: each
/// link's mark chain, the last-resort chains, the steering chains, `RULES`, then the hooks.
fn mangle(plan: &Plan, family: Family) -> Table {
    let mut mangle = Table::new("mangle");
    let mask = hex(plan.footprint.mask);
    for link in plan.links_of(family) {
        let chain = mark_chain(plan, link.mark);
        mangle.rule(
            &chain,
            &format!("-j MARK --set-xmark {}/{mask}", hex(link.mark)),
        );
        mangle.rule(
            &chain,
            &format!("-j CONNMARK --save-mark --nfmask {mask} --ctmask {mask}"),
        );
    }
    for (chain, mark) in [
        ("LAST_UNREACHABLE", plan.unreachable_mark),
        ("LAST_BLACKHOLE", plan.blackhole_mark),
    ] {
        mangle.rule(chain, &format!("-j MARK --set-xmark {}/{mask}", hex(mark)));
    }
    let pins = family == Family::Ipv6 && plan.pins_prefixes();
    if pins {
        add_pins(&mut mangle, plan);
    }
    add_policies(&mut mangle, plan, family);
    tunnel::add_pins(&mut mangle, plan, family);
    dns::add_steering(&mut mangle, plan, family);
    add_rules(&mut mangle, plan, family, pins, RULES);
    if plan.local_traffic && local_rules_apart(plan, family) {
        add_rules(&mut mangle, plan, family, pins, LOCAL_RULES);
    }
    add_prerouting(&mut mangle, plan, family);
    add_output(&mut mangle, plan, family);
    mangle
}

/// The chain (without prefix) that classifies a new connection by the rules.
const RULES: &str = "RULES";
/// The same for the router's own connections, without the rules that match a MAC or an
/// ingress device: the kernel refuses the MAC match where the output hook can reach it.
const LOCAL_RULES: &str = "LOCAL_RULES";

/// Whether the router's own connections need a rules chain of their own in `family`.
fn local_rules_apart(plan: &Plan, family: Family) -> bool {
    rules_of(plan, family).any(|r| r.needs_ingress())
}

/// The rules that match `family`, in config order.
fn rules_of(plan: &Plan, family: Family) -> impl Iterator<Item = &crate::config::Rule> {
    plan.rules
        .iter()
        .filter(move |r| r.family.is_none_or(|f| f == family))
}

/// The rules chain `chain` ([`RULES`] or [`LOCAL_RULES`]): the prefix pins (with `pins`),
/// then each rule of `family` in config order; without rules, every connection goes to the
/// first policy.
fn add_rules(mangle: &mut Table, plan: &Plan, family: Family, pins: bool, chain: &str) {
    mangle.declare(chain);
    if pins {
        // A pin's goto returns here once its mark chain has run: a pinned connection is done.
        mangle.rule(chain, &format!("-j {IPT_PREFIX}{PINS}"));
        mangle.rule(chain, &marked(plan, "mark"));
    }
    for rule in rules_of(plan, family).filter(|r| chain == RULES || !r.needs_ingress()) {
        for line in classify::classify(family, rule) {
            mangle.rule(chain, &line);
        }
    }
    if plan.rules.is_empty() && !plan.policies.is_empty() {
        mangle.rule(chain, &format!("-g {IPT_PREFIX}POLICY_1"));
    }
}

/// Forwarded and inbound traffic, as in the nft prerouting chain: link-local IPv6 control
/// messages pass, a connection of ours gets its mark back, a new one coming in on a WAN device
/// takes that link, a new one from the LAN is classified.
fn add_prerouting(mangle: &mut Table, plan: &Plan, family: Family) {
    if family == Family::Ipv6 {
        for (_, icmp_type) in ICMPV6_LINK_TYPES {
            mangle.rule(
                "PREROUTING",
                &format!("-p ipv6-icmp -m icmp6 --icmpv6-type {icmp_type} -j RETURN"),
            );
        }
    }
    mangle.rule("PREROUTING", &restore(plan));
    mangle.rule("PREROUTING", &marked(plan, "connmark"));
    mangle.rule("PREROUTING", NEW_ONLY);
    for (link, dev) in plan.wan_devices().filter(|(l, _)| l.family == family) {
        let target = mark_chain(plan, link.mark);
        mangle.rule("PREROUTING", &format!("-i {dev} -g {IPT_PREFIX}{target}"));
    }
    mangle.rule("PREROUTING", &not_local(family));
    for line in dns::jump(plan) {
        mangle.rule("PREROUTING", &line);
    }
    if plan.lan.is_empty() {
        mangle.rule("PREROUTING", &format!("! -i lo -g {IPT_PREFIX}RULES"));
    }
    for dev in &plan.lan {
        mangle.rule("PREROUTING", &format!("-i {dev} -g {IPT_PREFIX}RULES"));
    }
}

/// The nat table of `family`: what leaves by a link with `nat` takes the link's address (a
/// fixed one by SNAT, else masquerade), except sources in the link's own prefixes.
fn nat(plan: &Plan, family: Family) -> Table {
    let mut nat = Table::new("nat");
    nat.declare("POSTROUTING");
    for (link, dev) in plan
        .wan_devices()
        .filter(|(l, _)| l.family == family && l.nat)
    {
        for prefix in &link.prefixes {
            nat.rule("POSTROUTING", &format!("-o {dev} -s {prefix} -j RETURN"));
        }
        let action = match link.source {
            Some(addr) => format!("-j SNAT --to-source {addr}"),
            None => "-j MASQUERADE".to_string(),
        };
        nat.rule("POSTROUTING", &format!("-o {dev} {action}"));
    }
    dns::add_nat(&mut nat, plan, family);
    nat
}

/// Gives a later packet of one of our connections its connection's mark again.
fn restore(plan: &Plan) -> String {
    let mask = hex(plan.footprint.mask);
    format!(
        "-m connmark ! --mark 0x0/{mask} -j CONNMARK --restore-mark --nfmask {mask} --ctmask {mask}"
    )
}

/// `-m MODULE ! --mark 0x0/MASK -j RETURN`: a packet or connection (`mark` or `connmark`)
/// that already has one of our marks is left alone.
fn marked(plan: &Plan, module: &str) -> String {
    format!(
        "-m {module} ! --mark 0x0/{} -j RETURN",
        hex(plan.footprint.mask)
    )
}

/// Only a connection's first packet goes further: later ones keep the mark restored for them.
const NEW_ONLY: &str = "-m conntrack ! --ctstate NEW -j RETURN";

/// Traffic for the router itself (or every host of a segment) is never balanced. IPv6 has no
/// broadcast, and the kernel refuses to match it.
fn not_local(family: Family) -> String {
    let types = match family {
        Family::Ipv4 => "LOCAL,BROADCAST,MULTICAST",
        Family::Ipv6 => "LOCAL,MULTICAST",
    };
    format!("-m addrtype --dst-type {types} -j RETURN")
}

/// The router's own traffic, as in the nft output chain: a connection of ours gets its mark
/// back; a new one that carries none of our marks (the daemon's probes do) and leaves the
/// router has a tunnel's outer packets pinned, its DNS steered and, with `local_traffic`, is
/// steered like LAN traffic.
fn add_output(mangle: &mut Table, plan: &Plan, family: Family) {
    mangle.rule("OUTPUT", &restore(plan));
    if plan.local_traffic || plan.steers_dns() || plan.has_tunnels() {
        mangle.rule("OUTPUT", &marked(plan, "connmark"));
        mangle.rule("OUTPUT", &marked(plan, "mark"));
        mangle.rule("OUTPUT", NEW_ONLY);
        mangle.rule("OUTPUT", &not_local(family));
    }
    for line in tunnel::jump(plan).into_iter().chain(dns::jump(plan)) {
        mangle.rule("OUTPUT", &line);
    }
    if plan.local_traffic {
        local_rules(mangle, plan, family);
    }
}

/// The router's new connections with `local_traffic`: one bound to a link's address whose
/// first route left by another link is pinned to its address's link, the rest leaving by a
/// WAN device is classified.
fn local_rules(mangle: &mut Table, plan: &Plan, family: Family) {
    mangle.declare("LOCAL");
    for (link, dev) in plan.wan_devices().filter(|(l, _)| l.family == family) {
        mangle.rule("OUTPUT", &format!("-o {dev} -g {IPT_PREFIX}LOCAL"));
        if let Some(addr) = link.source {
            let target = mark_chain(plan, link.mark);
            mangle.rule(
                "LOCAL",
                &format!("-s {addr} ! -o {dev} -g {IPT_PREFIX}{target}"),
            );
        }
    }
    let rules = match local_rules_apart(plan, family) {
        true => LOCAL_RULES,
        false => RULES,
    };
    mangle.rule("LOCAL", &format!("-g {IPT_PREFIX}{rules}"));
}

/// The chain (without prefix) that pins new connections from a link's own prefixes to it.
const PINS: &str = "PREFIXES";

/// Only the policy chains of `family` (and its prefix pins, tunnels' outer packets and DNS
/// steering), rewritten in
/// place: what a link state change needs, as one small `-restore --noflush` that leaves every
/// other chain and jump alone. Empty for a family without links.
pub fn policy_update(plan: &Plan, family: Family) -> String {
    if !plan.has(family) {
        return String::new();
    }
    let mut mangle = Table::new("mangle");
    if family == Family::Ipv6 && plan.pins_prefixes() {
        add_pins(&mut mangle, plan);
    }
    add_policies(&mut mangle, plan, family);
    tunnel::add_pins(&mut mangle, plan, family);
    dns::add_steering(&mut mangle, plan, family);
    let mut out = String::new();
    mangle.write(&mut out, None);
    let mut nat = Table::new("nat");
    dns::add_nat(&mut nat, plan, family);
    if !nat.chains.is_empty() {
        nat.write(&mut out, None);
    }
    out
}

/// The pinning chain: one rule per prefix of every usable link.
fn add_pins(mangle: &mut Table, plan: &Plan) {
    mangle.declare(PINS);
    for link in plan.pins() {
        let target = mark_chain(plan, link.mark);
        for prefix in &link.prefixes {
            mangle.rule(PINS, &format!("-s {prefix} -g {IPT_PREFIX}{target}"));
        }
    }
}

/// One `POLICY_<n>` chain per policy, numbered from 1 in config order, with its choice for
/// `family` (none: the chain returns and the main table decides).
fn add_policies(mangle: &mut Table, plan: &Plan, family: Family) {
    for (i, policy) in plan.policies.iter().enumerate() {
        let chain = format!("POLICY_{}", i + 1);
        mangle.declare(&chain);
        if let Some((_, choice)) = policy.choices.iter().find(|(f, _)| *f == family) {
            for line in choice_rules(plan, policy.balance, choice) {
                mangle.rule(&chain, &line);
            }
        }
    }
}

/// Name (without prefix) of the chain that marks a new connection with `mark`.
fn mark_chain(plan: &Plan, mark: u32) -> String {
    format!("MARK_{}", mark >> plan.footprint.mask.trailing_zeros())
}

/// The full name of the chain that marks a new connection with `mark`: its first rule's packet
/// counter is the number of new connections given to that link since the last apply.
pub fn mark_chain_name(plan: &Plan, mark: u32) -> String {
    format!("{}{}", crate::names::IPT_PREFIX, mark_chain(plan, mark))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::tiers_plan;

    /// Link states that give a spread, a single link and the last resort.
    const SOME_STATES: [[bool; 3]; 3] = [
        [true, true, true],
        [false, true, false],
        [false, false, false],
    ];

    fn policy_update_v4(plan: &Plan) -> String {
        policy_update(plan, Family::Ipv4)
    }

    #[test]
    fn chains_are_those_the_ruleset_declares() {
        for up in SOME_STATES {
            let plan = tiers_plan(up);
            for family in Family::ALL {
                let text = ruleset(&plan, family, &IptablesState::default());
                assert_eq!(chains(&plan, family), chains_in(&text), "{up:?} {family}");
            }
        }
    }

    #[test]
    fn policy_update_rewrites_only_the_policy_chains() {
        for (up, expected) in [
            (
                [true, true, true],
                "*mangle\n\
                 :CMLB_POLICY_1 - [0:0]\n\
                 -A CMLB_POLICY_1 -m statistic --mode nth --every 3 --packet 0 -g CMLB_MARK_1\n\
                 -A CMLB_POLICY_1 -m statistic --mode nth --every 2 --packet 0 -g CMLB_MARK_1\n\
                 -A CMLB_POLICY_1 -g CMLB_MARK_2\n\
                 COMMIT\n",
            ),
            (
                [true, false, true],
                "*mangle\n:CMLB_POLICY_1 - [0:0]\n-A CMLB_POLICY_1 -g CMLB_MARK_1\nCOMMIT\n",
            ),
            (
                [false, false, true],
                "*mangle\n:CMLB_POLICY_1 - [0:0]\n-A CMLB_POLICY_1 -g CMLB_MARK_3\nCOMMIT\n",
            ),
            (
                [false, false, false],
                "*mangle\n:CMLB_POLICY_1 - [0:0]\n-A CMLB_POLICY_1 -g CMLB_LAST_BLACKHOLE\nCOMMIT\n",
            ),
        ] {
            assert_eq!(policy_update_v4(&tiers_plan(up)), expected, "{up:?}");
        }
    }

    #[test]
    fn policy_update_matches_the_full_ruleset() {
        for up in SOME_STATES {
            let plan = tiers_plan(up);
            let full = ruleset(&plan, Family::Ipv4, &IptablesState::default());
            for line in policy_update_v4(&plan)
                .lines()
                .filter(|l| l.contains("POLICY"))
            {
                assert!(full.lines().any(|f| f == line), "{line} not in\n{full}");
            }
        }
    }
}
