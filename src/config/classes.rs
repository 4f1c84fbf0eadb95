//! Traffic classes: address sets (`config set`, a rule's `dest_set`/`src_set`), sticky rules
//! and hash balancing. Only reading and validation live here; the plan decides what they
//! become in the kernel.

use super::family::Cidr;
use super::model::{Balance, Config};
use super::value::{SectionReader, valid_name};
use crate::error::{Error, Result};

/// How long a sticky source keeps its link after its last new connection, unless the rule
/// says otherwise (mwan3's default).
pub const DEFAULT_STICKY_TIMEOUT: u32 = 600;

/// What `balance hash` hashes: the source address, or source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey {
    Src,
    SrcDst,
}

/// `config set NAME`: the sets `NAME_v4` and `NAME_v6` in our table, with static entries; a
/// set a rule names without a section gets none (dnsmasq or the user fills it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSet {
    pub name: String,
    pub entries: Vec<Cidr>,
}

impl AddrSet {
    /// The kernel set holding this set's entries of one family.
    pub fn kernel_name(&self, v6: bool) -> String {
        set_name(&self.name, v6)
    }

    /// The static entries of one family.
    pub fn entries_of(&self, v6: bool) -> impl Iterator<Item = &Cidr> {
        self.entries.iter().filter(move |p| p.addr.is_ipv6() == v6)
    }
}

/// `NAME_v4` / `NAME_v6`: the names dnsmasq's `nftset=` lines refer to.
pub fn set_name(name: &str, v6: bool) -> String {
    format!("{name}_{}", if v6 { "v6" } else { "v4" })
}

/// A rule's sticky setting: new connections of a source keep the link of its previous one
/// for `timeout` seconds after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sticky {
    pub timeout: u32,
}

impl Config {
    /// Address sets, sticky rules and hash balancing are built on nftables sets and jhash;
    /// with the iptables backend they are refused, naming the first section that asks. nft
    /// has no match for days of the month, and matches weekdays in the kernel's time zone
    /// only: with nftables those are refused.
    pub fn check_backend_supports(&self, nftables: bool) -> Result<()> {
        if nftables {
            return self.check_nftables_supports();
        }
        let refuse = |section: String, option: &str| {
            Err(Error::config(
                &section,
                Some(option),
                "needs the nftables backend (set globals option backend 'nftables')",
            ))
        };
        for rule in &self.rules {
            if rule.sticky.is_some() {
                return refuse(rule.label.clone(), "sticky");
            }
            if rule.dest_set.is_some() {
                return refuse(rule.label.clone(), "dest_set");
            }
            if rule.src_set.is_some() {
                return refuse(rule.label.clone(), "src_set");
            }
        }
        if let Some(policy) = self
            .policies
            .iter()
            .find(|p| matches!(p.balance, Balance::Hash(_)))
        {
            return refuse(format!("policy '{}'", policy.name), "balance");
        }
        Ok(())
    }
}

impl Config {
    /// The time matches nft cannot express, naming the first rule that asks.
    fn check_nftables_supports(&self) -> Result<()> {
        for rule in &self.rules {
            let Some(schedule) = rule.schedule else {
                continue;
            };
            if schedule.monthdays.is_some() {
                return Err(Error::config(
                    &rule.label,
                    Some("monthdays"),
                    "nftables has no match for days of the month (set globals option backend 'iptables')",
                ));
            }
            if schedule.utc && schedule.weekdays.is_some() {
                return Err(Error::config(
                    &rule.label,
                    Some("utc_time"),
                    "nftables matches weekdays in the kernel's time zone only (leave utc_time out, or set globals option backend 'iptables')",
                ));
            }
        }
        Ok(())
    }
}

/// Reads a `config set` section.
pub fn read_set(r: &mut SectionReader) -> Result<AddrSet> {
    let name = r.section.name.clone();
    check_set_name(r, "name", &name)?;
    // A repeated entry is harmless: nft adds an element once.
    let entries = r.cidrs("entry")?;
    Ok(AddrSet { name, entries })
}

/// A set name: it becomes `NAME_v4`/`NAME_v6` in nft and in dnsmasq's config.
fn check_set_name(r: &SectionReader, option: &str, name: &str) -> Result<()> {
    if valid_name(name) && name.len() <= 32 {
        Ok(())
    } else {
        Err(r.error(
            option,
            format!(
                "expected a set name of letters, digits and _ (1..32 characters), got \"{name}\""
            ),
        ))
    }
}

/// A rule's `dest_set` (or mwan3's `ipset`) and `src_set`.
pub fn read_set_refs(r: &mut SectionReader) -> Result<(Option<String>, Option<String>)> {
    let dest = r.single("dest_set")?;
    let ipset = r.single("ipset")?;
    let dest = match (dest, ipset) {
        (Some(a), Some(b)) if a != b => {
            return Err(r.error(
                "ipset",
                format!("is the old name of dest_set, which already says \"{a}\", got \"{b}\""),
            ));
        }
        (a, b) => a.or(b),
    };
    let src = r.single("src_set")?;
    for (option, name) in [("dest_set", dest), ("src_set", src)] {
        if let Some(name) = name {
            check_set_name(r, option, name)?;
        }
    }
    Ok((dest.map(str::to_string), src.map(str::to_string)))
}

/// A rule's `sticky` and `timeout` (seconds, 1..86400).
pub fn read_sticky(r: &mut SectionReader) -> Result<Option<Sticky>> {
    let sticky = r.bool("sticky", false)?;
    let timeout = r.int("timeout", DEFAULT_STICKY_TIMEOUT, 1, 86_400)?;
    Ok(sticky.then_some(Sticky { timeout }))
}

/// `option hash`: `src` (default) or `src dst`.
pub fn read_hash_key(r: &mut SectionReader, default: HashKey) -> Result<HashKey> {
    r.choice(
        "hash",
        default,
        &[("src", HashKey::Src), ("src dst", HashKey::SrcDst)],
    )
}
