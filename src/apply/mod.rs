//! Appliers: the only code that changes the system.
//!
//! An apply reads the live routing state (one `ip`, a second for IPv6 when IPv6 links are or
//! were configured), renders, changes ip rules and routes (one `ip -batch` per family, only when
//! something differs) and loads the firewall text (one atomic `nft -f` for both families, or a
//! checked `iptables-restore`, and `ip6tables-restore` for IPv6). A failure at any step rolls back what this run's
//! earlier steps changed, so the previous working state stays; see [`apply`] for the order.

pub mod exec;
pub mod sysctl;

use crate::config::{BackendChoice, Config, Family};
use crate::error::{Context, Error, Result};
use crate::live::{IP_READ_BATCH, IP_READ_RULES_ROUTES, IpState, IptablesState};
use crate::names::NFT_TABLE;
use crate::plan::{LinkState, Plan, Routing};
use crate::render::ip::{self, IpOp};
use crate::render::{iptables, nft};
use crate::state::{self, Applied, LOCK_WAIT, Lock};
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

    /// Renders the firewall text for `plan`. nftables drops the chains, sets and static set entries
    /// of the `previous` apply that are gone; iptables first reads what is live, to add its jumps once and drop
    /// our stale chains, in ip6tables too when `ipv6` (IPv6 links wanted, or installed before).
    pub fn render(self, plan: &Plan, previous: Option<&Applied>, ipv6: bool) -> Result<Firewall> {
        let recorded = previous
            .filter(|p| p.backend == self.name())
            .map(|p| p.chains.as_slice())
            .unwrap_or_default();
        match self {
            Backend::Nftables => {
                let previous = previous.filter(|p| p.backend == self.name());
                let main = nft::ruleset(
                    plan,
                    nft::Previous {
                        chains: recorded,
                        sets: previous.map(|p| p.sets.as_slice()).unwrap_or_default(),
                        elements: previous.map(|p| p.elements.as_slice()).unwrap_or_default(),
                    },
                );
                Ok(Firewall {
                    main,
                    ipv6: String::new(),
                })
            }
            Backend::Iptables => {
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
        }
    }

    /// The chains a firewall text of this backend defines, for the record of the apply.
    pub fn chains(self, firewall: &Firewall) -> Vec<String> {
        let mut chains = Vec::new();
        for (_, text) in Self::texts(firewall) {
            let defined = match self {
                Backend::Nftables => nft::chains_in(text),
                Backend::Iptables => iptables::chains_in(text),
            };
            for chain in defined {
                if !chains.contains(&chain) {
                    chains.push(chain);
                }
            }
        }
        chains
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

    /// Removes all our firewall objects of this backend (nothing else): our nft table, or the
    /// iptables and ip6tables chains we always define or `recorded`, with their jumps. With
    /// iptables-nft, a table we took chains from and that now holds nothing is deleted too.
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
                    exec::run(&self.tool(family), &["--noflush"], &text)?;
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
    }

    fn other(self) -> Backend {
        match self {
            Backend::Nftables => Backend::Iptables,
            Backend::Iptables => Backend::Nftables,
        }
    }
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

/// Runs each family's operations as one `ip -batch`; if one fails, what ran before it (in its
/// batch and the batches before) is undone and the failure reported.
pub fn run_ip_changes(changes: &IpChanges) -> Result<()> {
    for (i, (family, ops)) in changes.iter().enumerate() {
        if let Err(e) = run_ip(*family, ops) {
            return Err(undo_ip(&changes[..i], e));
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

/// Undoes `changes` (batches that fully succeeded), last first, after a later step failed.
fn undo_ip(changes: &[(Family, Vec<IpOp>)], error: Error) -> Error {
    for (family, ops) in changes.iter().rev() {
        let undo: Vec<IpOp> = ops.iter().rev().filter_map(IpOp::inverse).collect();
        if undo.is_empty() {
            continue;
        }
        let flag = family.ip_flag();
        if let Err(r) = exec::run("ip", &[flag, "-batch", "-", "-force"], &ip::batch(&undo)) {
            return Error::Many(vec![error, r.wrap("rolling back ip changes")]);
        }
    }
    error
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
    let live = read_ip(Family::Ipv4).context("reading routing state")?;
    let plan = Plan::build(config, &present_devices(states, &live));
    let previous = state::load_applied(state_dir);
    let routing: Vec<Routing> = previous.iter().map(|a| a.routing.clone()).collect();
    // IPv6 state is read (and rewritten) when IPv6 links are wanted or the last apply had
    // some: an IPv4-only router pays no process for IPv6.
    let ipv6 = plan.has(Family::Ipv6) || routing.iter().any(|r| !r.links6.is_empty());
    let firewall = backend
        .render(&plan, previous.as_ref(), ipv6)
        .context("reading iptables state")?;
    let mut changes = vec![(Family::Ipv4, ip::diff(&plan, Family::Ipv4, &live, &routing))];
    if ipv6 {
        let live6 = read_ip(Family::Ipv6).context("reading IPv6 routing state")?;
        changes.push((
            Family::Ipv6,
            ip::diff(&plan, Family::Ipv6, &live6, &routing),
        ));
    }
    let record = state::stage_applied(
        state_dir,
        &Applied {
            backend: backend.name().to_string(),
            routing: plan.routing(),
            chains: backend.chains(&firewall),
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
            .check(&firewall)
            .with_context(|| format!("checking the {} rules", backend.name()))?;
    }
    run_ip_changes(&changes).context("changing ip rules and routes")?;
    if let Err(e) = backend.load(&firewall) {
        return Err(undo_ip(
            &changes,
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
        for family in Family::ALL {
            chains.extend(iptables::chains_in(&iptables::ruleset(
                plan,
                family,
                &IptablesState::default(),
            )));
        }
    }
    let mut errors = Vec::new();
    for backend in [Backend::Nftables, Backend::Iptables] {
        if let Err(e) = backend.remove(&chains) {
            errors.push(e.wrap(format!("removing {} rules", backend.name())));
        }
    }
    for family in Family::ALL {
        let removed = read_ip(family)
            .and_then(|live| run_ip(family, &ip::removal(&live, family, &routing, &[], &[])));
        if let Err(e) = removed {
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
