//! Renderers: plan (plus, where a diff is needed, the live state) -> text for one tool each.
//!
//! Pure functions only; golden tests in tests/golden pin their output.

pub mod ip;
pub mod iptables;
pub mod nft;

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
