//! Plan -> `nft -f` text. This renderer owns our table (`names::NFT_TABLE`) whole: its chains
//! ([`chains`]: per-link marks, hooks; [`policy`]: steering to links; [`classify`]: the rules
//! chain; [`dns`]: DNS that follows the link; [`tunnel`]: tunnels' outer packets) and its sets ([`sets`]: address sets and sticky sources). Each text it writes is one
//! transaction; the entry points are [`ruleset`] (everything) and [`policy_update`] (what a
//! link state change needs).
//!
//! Masked mark copies use per-link setter chains reached through a verdict map, because nft
//! before kernel 6.13 cannot combine two registers (`meta mark & ~m | ct mark & m`).

mod chains;
mod classify;
mod dns;
mod policy;
mod sets;
mod tunnel;

pub use chains::{chains_in, mark_chain};
pub use policy::policy_update;
pub use sets::{
    SetDeclaration, SetKind, StaticElement, set_declarations, static_elements, sticky_set,
};

use crate::config::Family;
use crate::names::NFT_TABLE;
use crate::plan::Plan;

/// What an earlier apply defined in our table (from its record): this one deletes what it
/// drops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Previous<'a> {
    pub chains: &'a [String],
    /// The sets it declared.
    pub sets: &'a [SetDeclaration],
    /// The static set entries it added.
    pub elements: &'a [StaticElement],
}

/// The complete ruleset in one atomic `nft -f`. Every chain is declared (created if missing)
/// and flushed, the chains and sets of the `previous` apply that this one drops are deleted,
/// then everything is defined. Flushing chains instead of the table keeps the hooks registered
/// (a clean apply destroys nothing, so the kernel's wait for destroyed objects, an RCU grace
/// period of about 10 ms, is paid only when old rules go) and keeps the sets' elements: what
/// dnsmasq resolved and which link each sticky source holds survive every apply. Whatever goes
/// is added first, so the transaction holds whatever the kernel has (someone may have flushed
/// the ruleset since the previous apply).
pub fn ruleset(plan: &Plan, previous: Previous) -> String {
    let body = chains::table(plan);
    let chains = chains_in(&body);
    let sets = set_declarations(plan);
    let mut out = format!("table {NFT_TABLE}\n");
    sets::declare(&mut out, &sets);
    chains::declare(&mut out, &chains);
    chains::delete_dropped(&mut out, previous.chains, &chains);
    sets::delete_dropped(&mut out, previous.sets, &sets);
    out.push_str(&body);
    sets::add_elements(&mut out, plan);
    sets::delete_dropped_elements(&mut out, plan, previous.elements, &sets);
    out.push_str(&sets::sticky_drops(plan));
    out
}

/// `meta nfproto X ` where both families have links (a rule meant for one of them); nothing
/// where only one has, since the other never gets past the hook chains' family return.
fn only(plan: &Plan, family: Family) -> String {
    match plan.single_family() {
        Some(_) => String::new(),
        None => format!("meta nfproto {family} "),
    }
}

/// An anonymous nft set `{ a, b }`.
fn set(items: impl Iterator<Item = String>) -> String {
    format!("{{ {} }}", items.collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::tiers_plan;

    #[test]
    fn ruleset_deletes_what_the_previous_apply_had_and_this_one_drops() {
        let plan = tiers_plan([true, true, true]);
        let kept = chains_in(&ruleset(&plan, Previous::default()));
        let chains = [kept[0].clone(), "gone".to_string()];
        let sets = [SetDeclaration {
            name: "gone_v4".into(),
            family: crate::config::Family::Ipv4,
            kind: SetKind::Addresses,
        }];
        let elements = [StaticElement {
            set: "gone_v4".into(),
            entry: crate::config::Cidr::parse("10.0.0.1").unwrap(),
        }];
        let text = ruleset(
            &plan,
            Previous {
                chains: &chains,
                sets: &sets,
                elements: &elements,
            },
        );
        assert!(text.contains(
            "add chain inet connmark_lb gone\nflush chain inet connmark_lb gone\ndelete chain inet connmark_lb gone\n"
        ));
        assert!(!text.contains(&format!("delete chain inet connmark_lb {}\n", kept[0])));
        assert!(text.contains(
            "add set inet connmark_lb gone_v4 { type ipv4_addr; flags interval,timeout; }\ndelete set inet connmark_lb gone_v4\n"
        ));
        // The set itself goes, so its entries need no deletion of their own.
        assert!(!text.contains("element"));
    }
}
