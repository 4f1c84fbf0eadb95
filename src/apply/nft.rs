//! The nftables backend: one `inet` table, loaded as one `nft -f` transaction that the kernel
//! commits whole or refuses whole (so it is its own check).

use super::exec;
use super::{Firewall, FirewallTool};
use crate::error::Result;
use crate::names::NFT_TABLE;
use crate::plan::Plan;
use crate::render::nft::{self, SetDeclaration, StaticElement};
use crate::state::Applied;

/// nftables through `nft`.
pub struct Nftables;

impl FirewallTool for Nftables {
    fn render(&self, plan: &Plan, previous: Option<&Applied>, _ipv6: bool) -> Result<Firewall> {
        let main = nft::ruleset(
            plan,
            nft::Previous {
                chains: previous.map(|p| p.chains.as_slice()).unwrap_or_default(),
                sets: previous.map(|p| p.sets.as_slice()).unwrap_or_default(),
                elements: previous.map(|p| p.elements.as_slice()).unwrap_or_default(),
            },
        );
        Ok(Firewall {
            main,
            ipv6: String::new(),
        })
    }

    fn chains_in(&self, text: &str) -> Vec<String> {
        nft::chains_in(text)
    }

    fn sets(&self, plan: &Plan) -> (Vec<SetDeclaration>, Vec<StaticElement>) {
        (nft::set_declarations(plan), nft::static_elements(plan))
    }

    fn policy_update(&self, plan: &Plan) -> Firewall {
        Firewall {
            main: nft::policy_update(plan),
            ipv6: String::new(),
        }
    }

    /// The transaction is validated whole by the kernel before it commits: no separate check.
    fn check(&self, _firewall: &Firewall) -> Result<()> {
        Ok(())
    }

    fn load(&self, firewall: &Firewall) -> Result<()> {
        for (_, text) in firewall.texts() {
            exec::run("nft", &["-f", "-"], text)?;
        }
        Ok(())
    }

    fn remove(&self, _recorded: &[String]) -> Result<()> {
        if exec::on_path("nft") {
            let text = format!("table {NFT_TABLE}\ndelete table {NFT_TABLE}\n");
            exec::run("nft", &["-f", "-"], &text)?;
        }
        Ok(())
    }
}

/// Our table as `nft -j` lists it, for `explain`'s set contents; `None` when there is no table
/// (nothing applied, or `nft` missing): the sets are empty then.
pub fn list_table_json() -> Option<String> {
    let (family, table) = NFT_TABLE.split_once(' ').unwrap_or(("inet", NFT_TABLE));
    exec::run("nft", &["-j", "list", "table", family, table], "").ok()
}
