//! The rules that choose a link in a policy chain, and the last resorts.

use super::mark_chain;
use crate::config::{Balance, LastResort};
use crate::names::IPT_PREFIX;
use crate::plan::{Choice, Plan};
use crate::render::{policy_slots, total_weight};

/// The rules of one family's choice in a policy chain: statistic matches taking each link's
/// share of what the rules before them left over, the last link taking the rest.
pub(super) fn choice_rules(plan: &Plan, balance: Balance, choice: &Choice) -> Vec<String> {
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
pub(super) fn last_resort(resort: LastResort) -> String {
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

#[cfg(test)]
mod tests {
    use super::probability;

    #[test]
    fn probability_has_ten_digits() {
        assert_eq!(probability(1, 3), "0.3333333333");
        assert_eq!(probability(1, 2), "0.5000000000");
        assert_eq!(probability(999, 1000), "0.9990000000");
    }
}
