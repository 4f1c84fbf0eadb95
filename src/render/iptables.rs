//! Plan -> `iptables-restore --noflush` text: our chains in mangle and nat, one load.
//!
//! Declaring a chain with `:NAME` flushes it under --noflush, so our chains are rewritten in
//! place; jumps from built-in chains are added only when the live state lacks them, and our
//! stale chains are deleted, so re-apply never duplicates anything.

use super::{hex, policy_slots};
use crate::config::{Balance, LastResort, Rule, RuleTarget};
use crate::live::IptablesState;
use crate::names::IPT_PREFIX;
use crate::plan::{Choice, Plan, PolicyPlan};
use std::fmt::Write;

/// (table, built-in chain, our chain) jumps we install, at the top of the built-in chain.
pub const JUMPS: [(&str, &str, &str); 3] = [
    ("mangle", "PREROUTING", "PREROUTING"),
    ("mangle", "OUTPUT", "OUTPUT"),
    ("nat", "POSTROUTING", "POSTROUTING"),
];

/// Text that installs (or rewrites) everything for `plan`, given what is live now.
pub fn ruleset(plan: &Plan, live: &IptablesState) -> String {
    let mut mangle = Table::new("mangle");
    let mask = hex(plan.footprint.mask);
    let restore = format!(
        "-m connmark ! --mark 0x0/{mask} -j CONNMARK --restore-mark --nfmask {mask} --ctmask {mask}"
    );
    for link in &plan.links {
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
    add_policies(&mut mangle, plan);
    mangle.declare("RULES");
    for rule in &plan.rules {
        mangle.rule("RULES", &classify(rule));
    }
    if plan.rules.is_empty() && !plan.policies.is_empty() {
        mangle.rule("RULES", &format!("-g {IPT_PREFIX}POLICY_1"));
    }
    mangle.rule("PREROUTING", &restore);
    mangle.rule(
        "PREROUTING",
        &format!("-m connmark ! --mark 0x0/{mask} -j RETURN"),
    );
    mangle.rule("PREROUTING", "-m conntrack ! --ctstate NEW -j RETURN");
    for (link, dev) in plan.wan_devices() {
        let target = mark_chain(plan, link.mark);
        mangle.rule("PREROUTING", &format!("-i {dev} -g {IPT_PREFIX}{target}"));
    }
    mangle.rule(
        "PREROUTING",
        "-m addrtype --dst-type LOCAL,BROADCAST,MULTICAST -j RETURN",
    );
    if plan.lan.is_empty() {
        mangle.rule("PREROUTING", &format!("! -i lo -g {IPT_PREFIX}RULES"));
    }
    for dev in &plan.lan {
        mangle.rule("PREROUTING", &format!("-i {dev} -g {IPT_PREFIX}RULES"));
    }
    mangle.rule("OUTPUT", &restore);

    let mut nat = Table::new("nat");
    nat.declare("POSTROUTING");
    for (link, dev) in plan.wan_devices() {
        let action = match link.source {
            Some(addr) => format!("-j SNAT --to-source {addr}"),
            None => "-j MASQUERADE".to_string(),
        };
        nat.rule("POSTROUTING", &format!("-o {dev} {action}"));
    }

    let mut out = String::new();
    for table in [mangle, nat] {
        table.write(&mut out, Some(live));
    }
    out
}

/// Only the policy chains, rewritten in place: what a link state change needs, as one small
/// `iptables-restore --noflush` that leaves every other chain and jump alone.
pub fn policy_update(plan: &Plan) -> String {
    let mut mangle = Table::new("mangle");
    add_policies(&mut mangle, plan);
    let mut out = String::new();
    mangle.write(&mut out, None);
    out
}

/// One `POLICY_<n>` chain per policy, numbered from 1 in config order.
fn add_policies(mangle: &mut Table, plan: &Plan) {
    for (i, policy) in plan.policies.iter().enumerate() {
        let chain = format!("POLICY_{}", i + 1);
        mangle.declare(&chain);
        for line in policy_rules(plan, policy) {
            mangle.rule(&chain, &line);
        }
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

/// The rules of one policy chain: statistic matches taking each link's share of what the
/// rules before them left over, the last link taking the rest.
fn policy_rules(plan: &Plan, policy: &PolicyPlan) -> Vec<String> {
    let goto_link =
        |link: usize| format!("-g {IPT_PREFIX}{}", mark_chain(plan, plan.links[link].mark));
    match &policy.choice {
        Choice::Spread(shares) => {
            let total: u32 = shares.iter().map(|s| s.weight).sum();
            let mut out = Vec::new();
            match plan.balance {
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
                Balance::Random => {
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
        Choice::Fallback(LastResort::Unreachable) => {
            vec![format!("-g {IPT_PREFIX}LAST_UNREACHABLE")]
        }
        Choice::Fallback(LastResort::Blackhole) => vec![format!("-g {IPT_PREFIX}LAST_BLACKHOLE")],
        Choice::Fallback(LastResort::Default) => vec!["-j ACCEPT".to_string()],
    }
}

/// `part / whole` (< 1) as a decimal with 10 digits, in integer arithmetic: keeps float
/// formatting out of the binary.
fn probability(part: u32, whole: u32) -> String {
    let scaled = u64::from(part) * 10_000_000_000 / u64::from(whole);
    format!("0.{scaled:010}")
}

/// One classification rule as iptables matches and a goto.
fn classify(rule: &Rule) -> String {
    let mut m = String::new();
    if let Some(proto) = rule.proto.keyword() {
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
    let target = match rule.target {
        RuleTarget::Policy(i) => format!("-g {IPT_PREFIX}POLICY_{}", i + 1),
        RuleTarget::Default => "-j ACCEPT".to_string(),
        RuleTarget::Unreachable => format!("-g {IPT_PREFIX}LAST_UNREACHABLE"),
        RuleTarget::Blackhole => format!("-g {IPT_PREFIX}LAST_BLACKHOLE"),
    };
    m + &target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::tiers_plan;

    #[test]
    fn policy_update_rewrites_only_the_policy_chains() {
        assert_eq!(
            policy_update(&tiers_plan([true, true, true])),
            "*mangle\n\
             :CMLB_POLICY_1 - [0:0]\n\
             -A CMLB_POLICY_1 -m statistic --mode nth --every 3 --packet 0 -g CMLB_MARK_1\n\
             -A CMLB_POLICY_1 -m statistic --mode nth --every 2 --packet 0 -g CMLB_MARK_1\n\
             -A CMLB_POLICY_1 -g CMLB_MARK_2\n\
             COMMIT\n"
        );
        assert_eq!(
            policy_update(&tiers_plan([true, false, true])),
            "*mangle\n:CMLB_POLICY_1 - [0:0]\n-A CMLB_POLICY_1 -g CMLB_MARK_1\nCOMMIT\n"
        );
        assert_eq!(
            policy_update(&tiers_plan([false, false, true])),
            "*mangle\n:CMLB_POLICY_1 - [0:0]\n-A CMLB_POLICY_1 -g CMLB_MARK_3\nCOMMIT\n"
        );
        assert_eq!(
            policy_update(&tiers_plan([false, false, false])),
            "*mangle\n:CMLB_POLICY_1 - [0:0]\n-A CMLB_POLICY_1 -g CMLB_LAST_BLACKHOLE\nCOMMIT\n"
        );
    }

    #[test]
    fn policy_update_matches_the_full_ruleset() {
        for up in [
            [true, true, true],
            [false, true, false],
            [false, false, false],
        ] {
            let plan = tiers_plan(up);
            let full = ruleset(&plan, &IptablesState::default());
            for line in policy_update(&plan)
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
