//! Appliers: the only code that changes the system.
//!
//! An apply reads the live routing state (one `ip`), renders, changes ip rules and routes (one
//! `ip -batch`, only when something differs) and loads the firewall text (one atomic
//! `nft -f`, or a checked `iptables-restore`). A failure at any step rolls back what this run's
//! earlier steps changed, so the previous working state stays; see [`apply`] for the order.

pub mod exec;
pub mod sysctl;

use crate::config::{BackendChoice, Config};
use crate::error::{Context, Error, Result};
use crate::live::{IP_READ_BATCH, IpState, IptablesState};
use crate::names::NFT_TABLE;
use crate::plan::{LinkState, Plan, Routing};
use crate::render::ip::{self, IpOp};
use crate::render::{iptables, nft};
use crate::state::{self, Applied, LOCK_WAIT, Lock};
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
    /// entries of the `previous` apply that are gone; iptables first reads what is live, to add
    /// its jumps once and drop our stale chains.
    pub fn render(self, plan: &Plan, previous: Option<&Applied>) -> Result<String> {
        let recorded = previous
            .filter(|p| p.backend == self.name())
            .map(|p| p.chains.as_slice())
            .unwrap_or_default();
        match self {
            Backend::Nftables => {
                let previous = previous.filter(|p| p.backend == self.name());
                Ok(nft::ruleset(
                    plan,
                    nft::Previous {
                        chains: recorded,
                        sets: previous.map(|p| p.sets.as_slice()).unwrap_or_default(),
                        elements: previous.map(|p| p.elements.as_slice()).unwrap_or_default(),
                    },
                ))
            }
            Backend::Iptables => Ok(iptables::ruleset(
                plan,
                &iptables::ours(read_iptables()?.1, recorded),
            )),
        }
    }

    /// The chains a ruleset text of this backend defines, for the record of the apply.
    pub fn chains(self, text: &str) -> Vec<String> {
        match self {
            Backend::Nftables => nft::chains_in(text),
            Backend::Iptables => iptables::chains_in(text),
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

    /// Removes all our firewall objects of this backend (nothing else): our nft table, or the
    /// iptables chains we always define or `recorded`, with their jumps. With iptables-nft, a
    /// table we took chains from and that now holds nothing is deleted too.
    pub fn remove(self, recorded: &[String]) -> Result<()> {
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
                let (save, live) = read_iptables()?;
                let live = iptables::ours(live, recorded);
                let text = iptables::removal(&live);
                if text.is_empty() {
                    return Ok(());
                }
                exec::run("iptables-restore", &["--noflush"], &text)?;
                if save.contains("(nf_tables)") && exec::on_path("nft") {
                    let touched: Vec<&str> = ["mangle", "nat"]
                        .into_iter()
                        .filter(|t| live.chains.iter().any(|(table, _)| table == t))
                        .collect();
                    drop_empty_tables(&touched)?;
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

/// `iptables-save` output and what of it carries our prefix.
fn read_iptables() -> Result<(String, IptablesState)> {
    let save = exec::run("iptables-save", &[], "")?;
    let live = IptablesState::parse(&save);
    Ok((save, live))
}

/// Deletes those of the iptables-nft `tables` (family ip) that hold nothing any more.
fn drop_empty_tables(tables: &[&str]) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let listing = exec::run("nft", &["-j", "list", "ruleset", "ip"], "")?;
    let text: String = crate::live::empty_ip_tables(&listing, tables)?
        .iter()
        .map(|t| format!("delete table ip {t}\n"))
        .collect();
    if !text.is_empty() {
        exec::run("nft", &["-f", "-"], &text)?;
    }
    Ok(())
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

/// Undoes `ops` (a batch that fully succeeded) after a later step failed.
fn undo_ip(ops: &[IpOp], error: Error) -> Error {
    let undo: Vec<IpOp> = ops.iter().rev().filter_map(IpOp::inverse).collect();
    if undo.is_empty() {
        return error;
    }
    match exec::run("ip", &["-batch", "-", "-force"], &ip::batch(&undo)) {
        Ok(_) => error,
        Err(r) => Error::Many(vec![error, r.wrap("rolling back ip changes")]),
    }
}

/// Applies `config` with the given link states; returns the plan now in force.
///
/// Serialised with every other change by the state directory's lock. The record of the apply
/// is written to a temp file before anything changes (an unwritable state directory changes
/// nothing). Then the ip rules and routes change (one `ip -batch`, undone line by line if a
/// line fails), then the firewall text loads: nftables as one transaction the kernel commits
/// whole or refuses whole, iptables after a `--test` check (iptables-restore commits table by
/// table). If the load fails, exactly the ip changes of this run are undone; nothing else
/// (another run's rules, the record) is touched.
pub fn apply(config: &Config, states: Vec<LinkState>, state_dir: &Path) -> Result<Plan> {
    let _lock = Lock::acquire(state_dir, LOCK_WAIT)?;
    let backend = Backend::resolve(config.globals.backend);
    config.check_backend_supports(backend == Backend::Nftables)?;
    let live = read_ip().context("reading routing state")?;
    let plan = Plan::build(config, &present_devices(states, &live));
    let previous = state::load_applied(state_dir);
    let text = backend
        .render(&plan, previous.as_ref())
        .context("reading iptables state")?;
    let routing: Vec<Routing> = previous.iter().map(|a| a.routing.clone()).collect();
    let ops = ip::diff(&plan, &live, &routing);
    let record = state::stage_applied(
        state_dir,
        &Applied {
            backend: backend.name().to_string(),
            routing: plan.routing(),
            chains: backend.chains(&text),
            sets: match backend {
                Backend::Nftables => nft::set_declarations(&plan),
                Backend::Iptables => Vec::new(),
            },
            elements: match backend {
                Backend::Nftables => nft::static_elements(&plan),
                Backend::Iptables => Vec::new(),
            },
        },
    )?;
    if backend == Backend::Iptables {
        backend
            .check(&text)
            .with_context(|| format!("checking the {} rules", backend.name()))?;
    }
    run_ip(&ops).context("changing ip rules and routes")?;
    if let Err(e) = backend.load(&text) {
        return Err(undo_ip(
            &ops,
            e.wrap(format!("loading the {} rules", backend.name())),
        ));
    }
    sysctl::apply(&plan).context("setting sysctls")?;
    if let Some(p) = previous.as_ref().filter(|p| p.backend != backend.name()) {
        backend
            .other()
            .remove(&p.chains)
            .context("removing the previous backend's rules")?;
    }
    record.commit()?;
    Ok(plan)
}

/// Rewrites only the policy chains for `plan` (a link entered or left use), holding the lock
/// like every other change.
pub fn update_policies(backend: Backend, plan: &Plan, state_dir: &Path) -> Result<()> {
    let _lock = Lock::acquire(state_dir, LOCK_WAIT)?;
    backend.load(&backend.policy_update(plan))
}

/// Removes everything of ours: the last apply's record and, when the config can be read,
/// what it renders. Serialised like [`apply`]; keeps going after an error and reports them all.
pub fn stop(config: Option<&Config>, state_dir: &Path) -> Result<()> {
    let _lock = Lock::acquire(state_dir, LOCK_WAIT)?;
    let previous = state::load_applied(state_dir);
    let plan = config.map(|c| {
        let states: Vec<LinkState> = c.interfaces.iter().map(LinkState::from_config).collect();
        Plan::build(c, &states)
    });
    let mut routing: Vec<Routing> = previous.iter().map(|a| a.routing.clone()).collect();
    let mut chains: Vec<String> = previous.iter().flat_map(|a| a.chains.clone()).collect();
    if let Some(plan) = &plan {
        routing.push(plan.routing());
        chains.extend(iptables::chains_in(&iptables::ruleset(
            plan,
            &IptablesState::default(),
        )));
    }
    let mut errors = Vec::new();
    for backend in [Backend::Nftables, Backend::Iptables] {
        if let Err(e) = backend.remove(&chains) {
            errors.push(e.wrap(format!("removing {} rules", backend.name())));
        }
    }
    let routing = read_ip().and_then(|live| run_ip(&ip::removal(&live, &routing, &[], &[])));
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
