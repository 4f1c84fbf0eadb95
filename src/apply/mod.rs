//! Appliers: the only code that changes the system.
//!
//! An apply reads the live routing state (one `ip`), renders, loads the firewall text (one
//! atomic `nft -f`, or a checked `iptables-restore`) and changes ip rules and routes (one
//! `ip -batch`, only when something differs). A failure at any step rolls back what the
//! earlier steps changed, so the previous working state stays; see [`apply`] for the order.

pub mod exec;
pub mod sysctl;

use crate::config::{BackendChoice, Config};
use crate::error::{Context, Error, Result};
use crate::live::{IP_READ_BATCH, IpState, IptablesState};
use crate::names::NFT_TABLE;
use crate::plan::{Footprint, LinkState, Plan};
use crate::render::ip::{self, IpOp};
use crate::render::{iptables, nft};
use crate::state::{self, Applied};
use std::path::Path;

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

    /// Renders the firewall text for `plan`. nftables drops the chains, sets and static set
    /// entries of the `previous` ruleset that are gone; iptables first reads what is live, to
    /// add its jumps once and drop stale chains.
    pub fn render(self, plan: &Plan, previous: Option<&Applied>) -> Result<String> {
        match self {
            Backend::Nftables => {
                let previous = previous.filter(|p| p.backend == self.name());
                Ok(nft::ruleset(plan, previous.map(|p| p.firewall.as_str())))
            }
            Backend::Iptables => Ok(iptables::ruleset(plan, &read_iptables()?)),
        }
    }

    /// Renders only the policy chains for `plan`: what a change of link liveness needs, for
    /// [`Backend::load`].
    pub fn policy_update(self, plan: &Plan) -> String {
        match self {
            Backend::Nftables => nft::policy_update(plan),
            Backend::Iptables => iptables::policy_update(plan),
        }
    }

    /// Validates `text` with the tool itself without changing anything.
    pub fn check(self, text: &str) -> Result<()> {
        match self {
            Backend::Nftables => exec::run("nft", &["-c", "-f", "-"], text),
            Backend::Iptables => exec::run("iptables-restore", &["--noflush", "--test"], text),
        }
        .map(drop)
    }

    /// Loads `text` in one atomic operation.
    pub fn load(self, text: &str) -> Result<()> {
        match self {
            Backend::Nftables => exec::run("nft", &["-f", "-"], text),
            Backend::Iptables => exec::run("iptables-restore", &["--noflush"], text),
        }
        .map(drop)
    }

    /// Removes all our firewall objects of this backend (nothing else).
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
                if !exec::on_path("iptables-save") {
                    return Ok(());
                }
                let text = iptables::removal(&read_iptables()?);
                if !text.is_empty() {
                    exec::run("iptables-restore", &["--noflush"], &text)?;
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

fn read_iptables() -> Result<IptablesState> {
    Ok(IptablesState::parse(&exec::run("iptables-save", &[], "")?))
}

/// Reads devices, rules and routes with one `ip` process.
pub fn read_ip() -> Result<IpState> {
    IpState::parse(&exec::run(
        "ip",
        &["-4", "-j", "-batch", "-"],
        IP_READ_BATCH,
    )?)
}

/// Runs `ops` as one `ip -batch`; if a line fails, undoes the lines before it and reports the
/// failure.
pub fn run_ip(ops: &[IpOp]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let Err(error) = exec::run("ip", &["-batch", "-"], &ip::batch(ops)) else {
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
        if let Err(rollback) = exec::run("ip", &["-batch", "-", "-force"], &ip::batch(&undo)) {
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
    config.check_backend_supports(backend == Backend::Nftables)?;
    let live = read_ip().context("reading routing state")?;
    let plan = Plan::build(config, &present_devices(states, &live));
    let previous = state::load_applied(state_dir);
    let text = backend
        .render(&plan, previous.as_ref())
        .context("reading iptables state")?;
    let stale: Vec<Footprint> = previous
        .iter()
        .map(|a| a.footprint)
        .filter(|f| *f != plan.footprint)
        .collect();
    let ops = ip::diff(&plan, &live, &stale);
    let loading = format!("loading the {} rules", backend.name());
    match backend {
        Backend::Nftables => {
            backend.load(&text).context(loading)?;
            if let Err(e) = run_ip(&ops) {
                let restore = match previous.as_ref().filter(|p| p.backend == backend.name()) {
                    Some(p) => backend.load(&p.firewall),
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
                .check(&text)
                .with_context(|| format!("checking the {} rules", backend.name()))?;
            run_ip(&ops).context("changing ip rules and routes")?;
            if let Err(e) = backend.load(&text) {
                let undo: Vec<IpOp> = ops.iter().rev().filter_map(IpOp::inverse).collect();
                let rollback = exec::run("ip", &["-batch", "-", "-force"], &ip::batch(&undo));
                let e = e.wrap(loading);
                return Err(match rollback {
                    Ok(_) => e,
                    Err(r) => Error::Many(vec![e, r.wrap("rolling back ip changes")]),
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
            firewall: text,
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
    let routing = read_ip().and_then(|live| {
        let (first, rest) = footprints
            .split_first()
            .ok_or_else(|| Error::Usage("stop needs at least one footprint".into()))?;
        run_ip(&ip::removal(&live, first, rest, &[], &[]))
    });
    if let Err(e) = routing {
        errors.push(e.wrap("removing ip rules and routes"));
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
