//! Plan -> `iptables-restore --noflush` text: our chains in mangle and nat, one load.
//!
//! Declaring a chain with `:NAME` flushes it under --noflush, so our chains are rewritten in
//! place; jumps from built-in chains are added only when the live state lacks them, and our
//! stale chains are deleted, so re-apply never duplicates anything.

use super::{Verdict, hex, policy_slots, total_weight};
use crate::config::family::ICMPV6_LINK_TYPES;
use crate::config::{Balance, Family, LastResort, Proto, Rule};
use crate::live::IptablesState;
use crate::names::{IPT_PREFIX, JUMPS};
use crate::plan::{Choice, Plan};
use std::fmt::Write;

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
    add_rules(&mut mangle, plan, family, pins);
    add_prerouting(&mut mangle, plan, family);
    mangle.rule("OUTPUT", &restore(plan));
    if plan.local_traffic {
        local_rules(&mut mangle, plan, family);
    }
    mangle
}

/// The `RULES` chain: the prefix pins (with `pins`), then each rule of `family` in config
/// order; without rules, every connection goes to the first policy.
fn add_rules(mangle: &mut Table, plan: &Plan, family: Family, pins: bool) {
    mangle.declare("RULES");
    if pins {
        // A pin's goto returns here once its mark chain has run: a pinned connection is done.
        mangle.rule("RULES", &format!("-j {IPT_PREFIX}{PINS}"));
        mangle.rule("RULES", &marked(plan, "mark"));
    }
    for rule in plan
        .rules
        .iter()
        .filter(|r| r.family.is_none_or(|f| f == family))
    {
        mangle.rule("RULES", &classify(family, rule));
    }
    if plan.rules.is_empty() && !plan.policies.is_empty() {
        mangle.rule("RULES", &format!("-g {IPT_PREFIX}POLICY_1"));
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

/// The router's own new connections, as in the nft output chain: a socket carrying one of
/// our marks keeps it, one bound to a link's address whose first route left by another link
/// is pinned to its address's link, the rest leaving by a WAN device is classified.
fn local_rules(mangle: &mut Table, plan: &Plan, family: Family) {
    mangle.rule("OUTPUT", &marked(plan, "connmark"));
    mangle.rule("OUTPUT", &marked(plan, "mark"));
    mangle.rule("OUTPUT", NEW_ONLY);
    mangle.rule("OUTPUT", &not_local(family));
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
    mangle.rule("LOCAL", &format!("-g {IPT_PREFIX}RULES"));
}

/// The chain (without prefix) that pins new connections from a link's own prefixes to it.
const PINS: &str = "PREFIXES";

/// Only the policy chains of `family` (and its prefix pins), rewritten in place: what a link
/// state change needs, as one small `-restore --noflush` that leaves every other chain and jump
/// alone. Empty for a family without links.
pub fn policy_update(plan: &Plan, family: Family) -> String {
    if !plan.has(family) {
        return String::new();
    }
    let mut mangle = Table::new("mangle");
    if family == Family::Ipv6 && plan.pins_prefixes() {
        add_pins(&mut mangle, plan);
    }
    add_policies(&mut mangle, plan, family);
    let mut out = String::new();
    mangle.write(&mut out, None);
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

/// Chains every ruleset defines whatever the config, without the prefix.
const FIXED_CHAINS: [&str; 6] = [
    "PREROUTING",
    "OUTPUT",
    "POSTROUTING",
    "RULES",
    "LAST_UNREACHABLE",
    "LAST_BLACKHOLE",
];

/// Chains declared by a ruleset text (`:NAME - [0:0]`), in order.
pub fn chains_in(ruleset: &str) -> Vec<String> {
    ruleset
        .lines()
        .filter_map(|line| line.strip_prefix(':')?.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Only what of `live` is ours: the chains we always define, those in `recorded` (applied or
/// rendered), and the jumps from built-in chains into our fixed entry chains. Someone else's
/// chain is not ours merely because its name starts with our prefix.
pub fn ours(live: IptablesState, recorded: &[String]) -> IptablesState {
    let fixed = |chain: &str| {
        chain
            .strip_prefix(IPT_PREFIX)
            .is_some_and(|name| FIXED_CHAINS.contains(&name))
    };
    let entry = |chain: &str| {
        JUMPS
            .iter()
            .any(|(_, _, ours)| chain.strip_prefix(IPT_PREFIX) == Some(ours))
    };
    IptablesState {
        chains: live
            .chains
            .into_iter()
            .filter(|(_, c)| fixed(c) || recorded.contains(c))
            .collect(),
        jumps: live
            .jumps
            .into_iter()
            .filter(|(_, _, c)| entry(c))
            .collect(),
    }
}

/// Text that removes every chain and jump of ours found in `live` (empty when none).
pub fn removal(live: &IptablesState) -> String {
    let mut out = String::new();
    for table in ["mangle", "nat"] {
        let chains: Vec<&str> = live
            .chains
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, c)| c.as_str())
            .collect();
        let jumps: Vec<_> = live.jumps.iter().filter(|(t, _, _)| t == table).collect();
        if chains.is_empty() && jumps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{table}");
        for (_, builtin, target) in jumps {
            let _ = writeln!(out, "-D {builtin} -j {target}");
        }
        for chain in &chains {
            let _ = writeln!(out, "-F {chain}");
        }
        for chain in &chains {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Chains of one table in declaration order, with their rules.
struct Table {
    name: &'static str,
    chains: Vec<(String, Vec<String>)>,
}

impl Table {
    fn new(name: &'static str) -> Self {
        Table {
            name,
            chains: Vec::new(),
        }
    }

    /// Makes sure `chain` exists even if it gets no rule.
    fn declare(&mut self, chain: &str) -> &mut Vec<String> {
        let full = format!("{IPT_PREFIX}{chain}");
        let i = match self.chains.iter().position(|(c, _)| *c == full) {
            Some(i) => i,
            None => {
                self.chains.push((full, Vec::new()));
                self.chains.len() - 1
            }
        };
        &mut self.chains[i].1
    }

    fn rule(&mut self, chain: &str, spec: &str) {
        self.declare(chain).push(spec.to_string());
    }

    /// Writes the table's section. With `live`, our chains that are no longer wanted are
    /// deleted and the jumps from built-in chains are made exactly one each; without it, only
    /// the declared chains are rewritten.
    fn write(&self, out: &mut String, live: Option<&IptablesState>) {
        let _ = writeln!(out, "*{}", self.name);
        for (chain, _) in &self.chains {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        let Some(live) = live else {
            self.write_rules(out);
            out.push_str("COMMIT\n");
            return;
        };
        for (table, chain) in &live.chains {
            if table == self.name && !self.chains.iter().any(|(c, _)| c == chain) {
                let _ = writeln!(out, "-F {chain}");
            }
        }
        self.write_rules(out);
        for (table, chain) in &live.chains {
            if table == self.name && !self.chains.iter().any(|(c, _)| c == chain) {
                let _ = writeln!(out, "-X {chain}");
            }
        }
        for (table, builtin, ours) in JUMPS {
            if table != self.name {
                continue;
            }
            let target = format!("{IPT_PREFIX}{ours}");
            let present = live
                .jumps
                .iter()
                .filter(|(t, b, c)| t == table && b == builtin && *c == target)
                .count();
            if present == 0 {
                let _ = writeln!(out, "-I {builtin} 1 -j {target}");
            }
            for _ in 1..present {
                let _ = writeln!(out, "-D {builtin} -j {target}");
            }
        }
        out.push_str("COMMIT\n");
    }

    fn write_rules(&self, out: &mut String) {
        for (chain, rules) in &self.chains {
            for rule in rules {
                let _ = writeln!(out, "-A {chain} {rule}");
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

/// The rules of one family's choice in a policy chain: statistic matches taking each link's
/// share of what the rules before them left over, the last link taking the rest.
fn choice_rules(plan: &Plan, balance: Balance, choice: &Choice) -> Vec<String> {
    let goto_link =
        |link: usize| format!("-g {IPT_PREFIX}{}", mark_chain(plan, plan.links[link].mark));
    match choice {
        Choice::Spread(shares) => {
            let total = total_weight(shares);
            let mut out = Vec::new();
            match balance {
                Balance::RoundRobin => {
                    for (from, to, share) in policy_slots(shares) {
                        for slot in from..=to {
                            if slot + 1 == total {
                                out.push(goto_link(share.link));
                            } else {
                                out.push(format!(
                                    "-m statistic --mode nth --every {} --packet 0 {}",
                                    total - slot,
                                    goto_link(share.link)
                                ));
                            }
                        }
                    }
                }
                // Hash balancing needs nft's jhash: apply and check refuse it with iptables
                // (Config::check_backend), so it never reaches this point.
                Balance::Random | Balance::Hash(_) => {
                    let mut left = total;
                    for share in shares {
                        if share.weight == left {
                            out.push(goto_link(share.link));
                        } else {
                            out.push(format!(
                                "-m statistic --mode random --probability {} {}",
                                probability(share.weight, left),
                                goto_link(share.link)
                            ));
                        }
                        left -= share.weight;
                    }
                }
            }
            out
        }
        Choice::Fallback(resort) => vec![last_resort(*resort)],
    }
}

/// The target of a last resort: the chain that marks for its routing rule, or the main table.
fn last_resort(resort: LastResort) -> String {
    match resort {
        LastResort::Unreachable => format!("-g {IPT_PREFIX}LAST_UNREACHABLE"),
        LastResort::Blackhole => format!("-g {IPT_PREFIX}LAST_BLACKHOLE"),
        LastResort::Default => "-j ACCEPT".to_string(),
    }
}

/// `part / whole` (< 1) as a decimal with 10 digits, in integer arithmetic: keeps float
/// formatting out of the binary.
fn probability(part: u32, whole: u32) -> String {
    let scaled = u64::from(part) * 10_000_000_000 / u64::from(whole);
    format!("0.{scaled:010}")
}

/// One classification rule as `family`'s matches and a goto.
fn classify(family: Family, rule: &Rule) -> String {
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
    let target = match Verdict::from(rule.target) {
        Verdict::Policy(i) => format!("-g {IPT_PREFIX}POLICY_{}", i + 1),
        Verdict::Resort(resort) => last_resort(resort),
    };
    m + &target
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

    #[test]
    fn probability_has_ten_digits() {
        assert_eq!(probability(1, 3), "0.3333333333");
        assert_eq!(probability(1, 2), "0.5000000000");
        assert_eq!(probability(999, 1000), "0.9990000000");
    }
}
