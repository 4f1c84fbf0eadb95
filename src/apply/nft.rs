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

/// Our table as `nft -j` lists it, for `explain`'s set contents; `None` when there is no set to
/// read (no table: nothing applied, or `nft` missing). An `nft` built without JSON (OpenWrt's
/// nftables-nojson) refuses `-j`: with sets in our table that is an error, never empty sets.
pub fn list_table_json() -> Result<Option<String>> {
    let (family, table) = NFT_TABLE.split_once(' ').unwrap_or(("inet", NFT_TABLE));
    let refused = match exec::run("nft", &["-j", "list", "table", family, table], "") {
        Ok(text) => return Ok(Some(text)),
        Err(e) => e,
    };
    // The terse plain listing works on every nft and names each set.
    match exec::run("nft", &["-t", "list", "table", family, table], "") {
        Ok(text) if text.lines().any(|l| l.trim_start().starts_with("set ")) => Err(refused.wrap(
            "explain reads our address sets with `nft -j`, which this nft refuses \
             (install nftables-json)",
        )),
        _ => Ok(None),
    }
}
