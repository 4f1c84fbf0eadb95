//! Appliers: the only code that changes the system.
//!
//! An apply reads the live routing state (one `ip`), renders, loads the firewall text (one
//! atomic `nft -f`, or a checked `iptables-restore`) and changes ip rules and routes (one
//! `ip -batch`, only when something differs). A failure at any step rolls back what the
//! earlier steps changed, so the previous working state stays; see [`apply`] for the order.

pub mod exec;
pub mod sysctl;

use crate::config::{BackendChoice, Config, Family};
use crate::error::{Context, Error, Result};
use crate::live::{IP_READ_BATCH, IP_READ_RULES_ROUTES, IpState, IptablesState};
use crate::names::NFT_TABLE;
use crate::plan::{Footprint, LinkState, Plan};
use crate::render::ip::{self, IpOp};
use crate::render::{iptables, nft};
use crate::state::{self, Applied};
use std::path::Path;

/// The firewall text of one load. nftables carries both families in `main` (one `inet`
/// table); iptables has one text per tool, `ipv6` for `ip6tables-restore` (empty: nothing of
/// IPv6 to change, and no process for it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firewall {
    pub main: String,
    pub ipv6: String,
}

/// The firewall tool in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    /// Resolves `auto` to nftables when `nft` is installed (fw4 systems), else iptables.
    pub fn resolve(choice: BackendChoice) -> Backend {
        match choice {
            BackendChoice::Nftables => Backend::Nftables,
            BackendChoice::Iptables => Backend::Iptables,
            BackendChoice::Auto if exec::on_path("nft") => Backend::Nftables,
            BackendChoice::Auto => Backend::Iptables,
        }
    }

    /// The name used in state files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }

    /// Renders the firewall text for `plan`. nftables drops the chains of the `previous`
    /// ruleset that are gone; iptables first reads what is live, to add its jumps once and drop
    /// stale chains, in ip6tables too when `ipv6` (IPv6 links wanted, or installed before).
    pub fn render(self, plan: &Plan, previous: Option<&Applied>, ipv6: bool) -> Result<Firewall> {
        match self {
            Backend::Nftables => {
                let text = nft::ruleset(plan, &[]);
                let stale = previous
                    .filter(|p| p.backend == self.name())
                    .map(|p| nft::stale_chains(&p.firewall, &text))
                    .unwrap_or_default();
                let main = if stale.is_empty() {
                    text
                } else {
                    nft::ruleset(plan, &stale)
                };
                Ok(Firewall {
                    main,
                    ipv6: String::new(),
                })
            }
            Backend::Iptables => Ok(Firewall {
                main: iptables::ruleset(plan, Family::Ipv4, &read_iptables(Family::Ipv4)?),
                ipv6: if ipv6 {
                    iptables::ruleset(plan, Family::Ipv6, &read_iptables(Family::Ipv6)?)
                } else {
                    String::new()
                },
            }),
        }
    }

    /// Renders only the policy chains for `plan`: what a change of link liveness needs, for
    /// [`Backend::load`].
    pub fn policy_update(self, plan: &Plan) -> Firewall {
        match self {
            Backend::Nftables => Firewall {
                main: nft::policy_update(plan),
                ipv6: String::new(),
            },
            Backend::Iptables => Firewall {
                main: iptables::policy_update(plan, Family::Ipv4),
                ipv6: iptables::policy_update(plan, Family::Ipv6),
            },
        }
    }

    /// The tool that loads `family`'s text.
    fn tool(self, family: Family) -> String {
        match self {
            Backend::Nftables => "nft".to_string(),
            Backend::Iptables => format!("{}-restore", family.iptables()),
        }
    }

    /// The texts with the family each is for, leaving out empty ones.
    fn texts(firewall: &Firewall) -> impl Iterator<Item = (Family, &str)> {
        [
            (Family::Ipv4, &firewall.main),
            (Family::Ipv6, &firewall.ipv6),
        ]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(family, text)| (family, text.as_str()))
    }

    /// Validates `firewall` with the tools themselves without changing anything.
    pub fn check(self, firewall: &Firewall) -> Result<()> {
        for (family, text) in Self::texts(firewall) {
            let tool = self.tool(family);
            match self {
                Backend::Nftables => exec::run(&tool, &["-c", "-f", "-"], text),
                Backend::Iptables => exec::run(&tool, &["--noflush", "--test"], text),
            }?;
        }
        Ok(())
    }

    /// Loads `firewall`: one atomic operation per tool.
    pub fn load(self, firewall: &Firewall) -> Result<()> {
        for (family, text) in Self::texts(firewall) {
            let tool = self.tool(family);
            match self {
                Backend::Nftables => exec::run(&tool, &["-f", "-"], text),
                Backend::Iptables => exec::run(&tool, &["--noflush"], text),
            }?;
        }
        Ok(())
    }

    /// Removes all our firewall objects of this backend (nothing else), of both families.
    pub fn remove(self) -> Result<()> {
        match self {
            Backend::Nftables => {
                if exec::on_path("nft") {
                    let text = format!("table {NFT_TABLE}\ndelete table {NFT_TABLE}\n");
                    exec::run("nft", &["-f", "-"], &text)?;
                }
                Ok(())
            }
            Backend::Iptables => {
                for family in Family::ALL {
                    if !exec::on_path(&format!("{}-save", family.iptables())) {
                        continue;
                    }
                    let text = iptables::removal(&read_iptables(family)?);
                    if !text.is_empty() {
                        exec::run(&self.tool(family), &["--noflush"], &text)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn other(self) -> Backend {
        match self {
            Backend::Nftables => Backend::Iptables,
            Backend::Iptables => Backend::Nftables,
        }
    }
}

fn read_iptables(family: Family) -> Result<IptablesState> {
    let tool = format!("{}-save", family.iptables());
    Ok(IptablesState::parse(&exec::run(&tool, &[], "")?))
}

/// Reads `family`'s rules and routes (and, for IPv4, the devices) with one `ip` process.
pub fn read_ip(family: Family) -> Result<IpState> {
    let batch = match family {
        Family::Ipv4 => IP_READ_BATCH,
        Family::Ipv6 => IP_READ_RULES_ROUTES,
    };
    IpState::parse(&exec::run(
        "ip",
        &[family.ip_flag(), "-j", "-batch", "-"],
        batch,
    )?)
}

/// The ip changes of one apply, per family.
pub type IpChanges = Vec<(Family, Vec<IpOp>)>;

/// Runs each family's operations as one `ip -batch`; if one fails, what ran before it (in
/// its batch and the batches before) is undone and the failure reported.
pub fn run_ip_changes(changes: &IpChanges) -> Result<()> {
    for (i, (family, ops)) in changes.iter().enumerate() {
        if let Err(e) = run_ip(*family, ops) {
            return match undo_ip(&changes[..i]) {
                Ok(()) => Err(e),
                Err(rollback) => Err(Error::Many(vec![e, rollback])),
            };
        }
    }
    Ok(())
}

/// Undoes `changes` that were made, last first.
fn undo_ip(changes: &[(Family, Vec<IpOp>)]) -> Result<()> {
    for (family, ops) in changes.iter().rev() {
        let undo: Vec<IpOp> = ops.iter().rev().filter_map(IpOp::inverse).collect();
        if !undo.is_empty() {
            exec::run(
                "ip",
                &[family.ip_flag(), "-batch", "-", "-force"],
                &ip::batch(&undo),
            )
            .map_err(|e| e.wrap("rolling back ip changes"))?;
        }
    }
    Ok(())
}

/// Runs `ops` as one `ip -batch` of `family`; if a line fails, undoes the lines before it and
/// reports the failure.
pub fn run_ip(family: Family, ops: &[IpOp]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let flag = family.ip_flag();
    let Err(error) = exec::run("ip", &[flag, "-batch", "-"], &ip::batch(ops)) else {
        return Ok(());
    };
    let done = failed_line(&error).map_or(0, |line| line.saturating_sub(1));
    let error = match ops.get(done) {
        Some(op) if failed_line(&error).is_some() => error.wrap(format!("`ip {op}`")),
        _ => error,
    };
    let undo: Vec<IpOp> = ops[..done.min(ops.len())]
        .iter()
        .rev()
        .filter_map(IpOp::inverse)
        .collect();
    if !undo.is_empty() {
        if let Err(rollback) = exec::run("ip", &[flag, "-batch", "-", "-force"], &ip::batch(&undo))
        {
            return Err(Error::Many(vec![
                error,
                rollback.wrap("rolling back ip changes"),
            ]));
        }
    }
    Err(error)
}

/// `ip -batch` names the failing line as `Command failed -:N`.
fn failed_line(error: &Error) -> Option<usize> {
    let Error::Exec { stderr, .. } = error else {
        return None;
    };
    let at = stderr.find("Command failed -:")? + "Command failed -:".len();
    stderr[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Marks links whose device does not exist (yet) as unknown: no route, no inbound rule; the
/// hotplug hook re-applies when it appears.
pub fn present_devices(mut states: Vec<LinkState>, live: &IpState) -> Vec<LinkState> {
    for s in &mut states {
        if s.device.as_ref().is_some_and(|d| !live.devices.contains(d)) {
            s.device = None;
            s.up = false;
        }
    }
    states
}

/// Applies `config` with the given link states; returns the plan now in force.
///
/// nftables: the ruleset is loaded first, as one transaction the kernel validates whole and
/// commits or refuses whole (it is its own check); then the ip changes; if those fail, they are
/// undone and the previous ruleset is put back. iptables-restore commits table by table, so
/// there the text is checked with `--test` first, the ip changes come next, and a failed load
/// undoes them.
pub fn apply(config: &Config, states: Vec<LinkState>, state_dir: &Path) -> Result<Plan> {
    let backend = Backend::resolve(config.globals.backend);
    let live = read_ip(Family::Ipv4).context("reading routing state")?;
    let plan = Plan::build(config, &present_devices(states, &live));
    let previous = state::load_applied(state_dir);
    // IPv6 state is read (and rewritten) when IPv6 links are wanted or the last apply installed
    // some: an IPv4-only router pays no process for IPv6.
    let ipv6 = plan.has(Family::Ipv6) || previous.as_ref().is_some_and(|p| p.ipv6);
    let firewall = backend
        .render(&plan, previous.as_ref(), ipv6)
        .context("reading iptables state")?;
    let stale: Vec<Footprint> = previous
        .iter()
        .map(|a| a.footprint)
        .filter(|f| *f != plan.footprint)
        .collect();
    let mut changes = vec![(Family::Ipv4, ip::diff(&plan, Family::Ipv4, &live, &stale))];
    if ipv6 {
        let live6 = read_ip(Family::Ipv6).context("reading IPv6 routing state")?;
        changes.push((Family::Ipv6, ip::diff(&plan, Family::Ipv6, &live6, &stale)));
    }
    let loading = format!("loading the {} rules", backend.name());
    match backend {
        Backend::Nftables => {
            backend.load(&firewall).context(loading)?;
            if let Err(e) = run_ip_changes(&changes) {
                let restore = match previous.as_ref().filter(|p| p.backend == backend.name()) {
                    Some(p) => backend.load(&Firewall {
                        main: p.firewall.clone(),
                        ipv6: String::new(),
                    }),
                    None => backend.remove(),
                };
                let e = e.wrap("changing ip rules and routes");
                return Err(match restore {
                    Ok(()) => e,
                    Err(r) => Error::Many(vec![e, r.wrap("restoring the previous rules")]),
                });
            }
        }
        Backend::Iptables => {
            backend
                .check(&firewall)
                .with_context(|| format!("checking the {} rules", backend.name()))?;
            run_ip_changes(&changes).context("changing ip rules and routes")?;
            if let Err(e) = backend.load(&firewall) {
                let e = e.wrap(loading);
                return Err(match undo_ip(&changes) {
                    Ok(()) => e,
                    Err(r) => Error::Many(vec![e, r]),
                });
            }
        }
    }
    sysctl::apply(&plan).context("setting sysctls")?;
    if previous
        .as_ref()
        .is_some_and(|p| p.backend != backend.name())
    {
        backend
            .other()
            .remove()
            .context("removing the previous backend's rules")?;
    }
    state::save_applied(
        state_dir,
        &Applied {
            backend: backend.name().to_string(),
            footprint: plan.footprint,
            firewall: firewall.main,
            ipv6: plan.has(Family::Ipv6),
        },
    )?;
    Ok(plan)
}

/// Removes everything we may have added under any of `footprints`; keeps going after an error
/// and reports them all.
pub fn stop(footprints: &[Footprint], state_dir: &Path) -> Result<()> {
    let mut errors = Vec::new();
    for backend in [Backend::Nftables, Backend::Iptables] {
        if let Err(e) = backend.remove() {
            errors.push(e.wrap(format!("removing {} rules", backend.name())));
        }
    }
    for family in Family::ALL {
        let routing = read_ip(family).and_then(|live| {
            let (first, rest) = footprints
                .split_first()
                .ok_or_else(|| Error::Usage("stop needs at least one footprint".into()))?;
            run_ip(family, &ip::removal(&live, first, rest, &[], &[]))
        });
        if let Err(e) = routing {
            errors.push(e.wrap(format!("removing {} ip rules and routes", family.label())));
        }
    }
    if let Err(e) = state::clear_applied(state_dir) {
        errors.push(e);
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Many(errors)),
    }
}
