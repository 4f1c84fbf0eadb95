//! The text of one `-restore --noflush` table section, and what of the live state is ours:
//! chains are declared (which flushes them), stale ones of ours deleted, and the jumps from
//! built-in chains into ours made exactly one each.

use crate::live::IptablesState;
use crate::names::{IPT_PREFIX, JUMPS};
use std::fmt::Write;

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
pub(super) struct Table {
    name: &'static str,
    pub(super) chains: Vec<(String, Vec<String>)>,
}

impl Table {
    pub(super) fn new(name: &'static str) -> Self {
        Table {
            name,
            chains: Vec::new(),
        }
    }

    /// Makes sure `chain` exists even if it gets no rule.
    pub(super) fn declare(&mut self, chain: &str) -> &mut Vec<String> {
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

    pub(super) fn rule(&mut self, chain: &str, spec: &str) {
        self.declare(chain).push(spec.to_string());
    }

    /// Writes the table's section. With `live`, our chains that are no longer wanted are
    /// deleted and the jumps from built-in chains are made exactly one each into the chains
    /// declared here (none into those that are not); without it, only the declared chains are
    /// rewritten.
    pub(super) fn write(&self, out: &mut String, live: Option<&IptablesState>) {
        let _ = writeln!(out, "*{}", self.name);
        for (chain, _) in &self.chains {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        let Some(live) = live else {
            self.write_rules(out);
            out.push_str("COMMIT\n");
            return;
        };
        let declared = |chain: &str| self.chains.iter().any(|(c, _)| c == chain);
        // (built-in chain, our chain, jumps present, jumps wanted)
        let jumps: Vec<(&str, String, usize, usize)> = JUMPS
            .iter()
            .filter(|(table, _, _)| *table == self.name)
            .map(|(table, builtin, ours)| {
                let target = format!("{IPT_PREFIX}{ours}");
                let present = live
                    .jumps
                    .iter()
                    .filter(|(t, b, c)| t == table && b == builtin && *c == target)
                    .count();
                let wanted = usize::from(declared(&target));
                (*builtin, target, present, wanted)
            })
            .collect();
        // Jumps go before the chains they lead to can be deleted.
        for (builtin, target, present, wanted) in &jumps {
            for _ in *wanted..*present {
                let _ = writeln!(out, "-D {builtin} -j {target}");
            }
        }
        let stale: Vec<&String> = live
            .chains
            .iter()
            .filter(|(table, chain)| table == self.name && !declared(chain))
            .map(|(_, chain)| chain)
            .collect();
        for chain in &stale {
            let _ = writeln!(out, "-F {chain}");
        }
        self.write_rules(out);
        for chain in &stale {
            let _ = writeln!(out, "-X {chain}");
        }
        for (builtin, target, present, wanted) in &jumps {
            if *wanted == 1 && *present == 0 {
                let _ = writeln!(out, "-I {builtin} 1 -j {target}");
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
