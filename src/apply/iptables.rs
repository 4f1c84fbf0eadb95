//! The iptables backend: our chains in the `mangle` and `nat` tables of iptables and
//! ip6tables, loaded with `iptables-restore --noflush` after a `--test` run of the same text
//! (the tool commits table by table, so a refused second table must be found first).

use super::exec;
use super::{Firewall, FirewallTool};
use crate::config::Family;
use crate::error::Result;
use crate::live::IptablesState;
use crate::plan::Plan;
use crate::render::iptables;
use crate::render::nft::{SetDeclaration, StaticElement};
use crate::state::Applied;

/// iptables and ip6tables through their `-save`/`-restore` tools.
pub struct Iptables;

impl FirewallTool for Iptables {
    /// Reads what is live first, to add our jumps once and drop our stale chains; ip6tables
    /// only when `ipv6` (IPv6 links wanted, or installed before).
    fn render(&self, plan: &Plan, previous: Option<&Applied>, ipv6: bool) -> Result<Firewall> {
        let recorded = previous.map(|p| p.chains.as_slice()).unwrap_or_default();
        let text = |family| -> Result<String> {
            let live = iptables::ours(read_iptables(family)?.1, recorded);
            Ok(iptables::ruleset(plan, family, &live))
        };
        Ok(Firewall {
            main: text(Family::Ipv4)?,
            ipv6: if ipv6 {
                text(Family::Ipv6)?
            } else {
                String::new()
            },
        })
    }

    fn chains_in(&self, text: &str) -> Vec<String> {
        iptables::chains_in(text)
    }

    fn sets(&self, _plan: &Plan) -> (Vec<SetDeclaration>, Vec<StaticElement>) {
        (Vec::new(), Vec::new())
    }

    fn policy_update(&self, plan: &Plan) -> Firewall {
        Firewall {
            main: iptables::policy_update(plan, Family::Ipv4),
            ipv6: iptables::policy_update(plan, Family::Ipv6),
        }
    }

    fn check(&self, firewall: &Firewall) -> Result<()> {
        for (family, text) in firewall.texts() {
            exec::run(&restore(family), &["--noflush", "--test"], text)?;
        }
        Ok(())
    }

    fn load(&self, firewall: &Firewall) -> Result<()> {
        for (family, text) in firewall.texts() {
            exec::run(&restore(family), &["--noflush"], text)?;
        }
        Ok(())
    }

    /// Our chains (always defined or `recorded`) and their jumps, in both families. With
    /// iptables-nft, a table we took chains from and that now holds nothing is deleted too.
    fn remove(&self, recorded: &[String]) -> Result<()> {
        for family in Family::ALL {
            if !exec::on_path(&format!("{}-save", family.iptables())) {
                continue;
            }
            let (save, live) = read_iptables(family)?;
            let live = iptables::ours(live, recorded);
            let text = iptables::removal(&live);
            if text.is_empty() {
                continue;
            }
            exec::run(&restore(family), &["--noflush"], &text)?;
            if save.contains("(nf_tables)") && exec::on_path("nft") {
                let touched: Vec<&str> = ["mangle", "nat"]
                    .into_iter()
                    .filter(|t| live.chains.iter().any(|(table, _)| table == t))
                    .collect();
                drop_empty_tables(family, &touched)?;
            }
        }
        Ok(())
    }
}

/// Every chain the iptables rulesets of `plan` define, in both families: what `stop` removes
/// besides the record's.
pub fn chains_of(plan: &Plan) -> Vec<String> {
    Family::ALL
        .into_iter()
        .flat_map(|family| iptables::chains(plan, family))
        .collect()
}

/// The tool that loads `family`'s text.
fn restore(family: Family) -> String {
    format!("{}-restore", family.iptables())
}

/// `iptables-save` (or `ip6tables-save`) output and what of it carries our prefix.
fn read_iptables(family: Family) -> Result<(String, IptablesState)> {
    let save = exec::run(&format!("{}-save", family.iptables()), &[], "")?;
    let live = IptablesState::parse(&save);
    Ok((save, live))
}

/// Deletes those of the iptables-nft `tables` of `family` (nft family ip or ip6) that hold
/// nothing any more.
fn drop_empty_tables(family: Family, tables: &[&str]) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let nft_family = family.nft();
    let listing = exec::run("nft", &["-j", "list", "ruleset", nft_family], "")?;
    let text: String = crate::live::empty_ip_tables(&listing, nft_family, tables)?
        .iter()
        .map(|t| format!("delete table {nft_family} {t}\n"))
        .collect();
    if !text.is_empty() {
        exec::run("nft", &["-f", "-"], &text)?;
    }
    Ok(())
}
