//! Renderers: plan (plus, where a diff is needed, the live state) -> text for one tool each.
//!
//! Pure functions only; golden tests in tests/golden pin their output. What the nft and
//! iptables renderers decide alike (slot ranges, what a rule's target amounts to) lives here,
//! so the two backends cannot drift apart; each renderer only spells it in its tool's syntax.

pub mod ip;
pub mod iptables;
pub mod nft;

use crate::config::{LastResort, RuleTarget};
use crate::plan::Share;

/// Marks and masks are always written in one hex form so goldens and dumps compare easily.
pub fn hex(value: u32) -> String {
    format!("{value:#010x}")
}

/// Consecutive slot ranges `(first, last, share)` of a weighted rotation over `shares`: share
/// i owns `weight` consecutive slots, so round-robin is exact over every full cycle.
pub fn policy_slots(shares: &[Share]) -> impl Iterator<Item = (u32, u32, Share)> + '_ {
    shares.iter().scan(0u32, |next, share| {
        let from = *next;
        *next += share.weight;
        Some((from, *next - 1, *share))
    })
}

/// The number of slots of a rotation over `shares` (what [`policy_slots`] counts up to).
fn total_weight(shares: &[Share]) -> u32 {
    shares.iter().map(|s| s.weight).sum()
}

/// Where a classification rule sends a new connection: to a policy, or to what a policy
/// without a live member would do. A rule naming `unreachable`, `blackhole` or `default` gets
/// the very verdict of that last resort, so each renderer spells those verdicts once.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Policy(usize),
    Resort(LastResort),
}

impl From<RuleTarget> for Verdict {
    fn from(target: RuleTarget) -> Self {
        match target {
            RuleTarget::Policy(i) => Verdict::Policy(i),
            RuleTarget::Default => Verdict::Resort(LastResort::Default),
            RuleTarget::Unreachable => Verdict::Resort(LastResort::Unreachable),
            RuleTarget::Blackhole => Verdict::Resort(LastResort::Blackhole),
        }
    }
}
