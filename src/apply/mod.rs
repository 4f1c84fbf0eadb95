//! Appliers: the only code that changes the system.
//!
//! An apply reads the live routing state (one `ip`, a second for IPv6 when IPv6 links are or
//! were configured), renders, changes ip rules and routes (one `ip -batch` per family, only when
//! something differs) and loads the firewall text (one atomic `nft -f` for both families, or a
//! checked `iptables-restore`, and `ip6tables-restore` for IPv6). A failure at any step rolls back what this run's
//! earlier steps changed, so the previous working state stays; see [`apply`] for the order.

//!
//! What differs between nftables and iptables sits behind [`FirewallTool`], one module each
//! (`nft`, `iptables`); [`Backend::tool`] is the one place that chooses between them.

pub mod exec;
mod ip;
pub mod iptables;
pub mod nft;
pub mod sysctl;

pub use ip::{IpChanges, present_devices, read_ip, run_ip, run_ip_changes};

use crate::config::{BackendChoice, Config, Family};
use crate::error::{Context, Error, Result};
use crate::plan::{Plan, Routing};
use crate::render::ip as ip_text;
use crate::render::nft::{SetDeclaration, StaticElement};
use crate::source::LinkState;
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

impl Firewall {
    /// The texts with the family each is for, leaving out empty ones.
    fn texts(&self) -> impl Iterator<Item = (Family, &str)> {
        [(Family::Ipv4, &self.main), (Family::Ipv6, &self.ipv6)]
            .into_iter()
            .filter(|(_, text)| !text.is_empty())
            .map(|(family, text)| (family, text.as_str()))
    }
}

/// What one firewall backend does; everything else about an apply is the same for both.
trait FirewallTool {
    /// The firewall text for `plan`, replacing what `previous` (an apply of this backend)
    /// installed; `ipv6`: IPv6 rules are wanted or were installed before.
    fn render(&self, plan: &Plan, previous: Option<&Applied>, ipv6: bool) -> Result<Firewall>;
    /// The chains a text of this backend defines.
    fn chains_in(&self, text: &str) -> Vec<String>;
    /// The set declarations and static set entries `plan` installs, for the record.
    fn sets(&self, plan: &Plan) -> (Vec<SetDeclaration>, Vec<StaticElement>);
    /// Only the policy chains: what a change of link liveness needs.
    fn policy_update(&self, plan: &Plan) -> Firewall;
    /// Validates `firewall` with the tool itself, changing nothing, where a load is not
    /// atomic by itself.
    fn check(&self, firewall: &Firewall) -> Result<()>;
    /// Loads `firewall`: one atomic operation per tool.
    fn load(&self, firewall: &Firewall) -> Result<()>;
    /// Removes all our objects of this backend, and nothing else (`recorded`: chains an
    /// earlier apply defined).
    fn remove(&self, recorded: &[String]) -> Result<()>;
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

    /// The module that implements this backend.
    fn tool(self) -> &'static dyn FirewallTool {
        match self {
            Backend::Nftables => &nft::Nftables,
            Backend::Iptables => &iptables::Iptables,
        }
    }

    fn other(self) -> Backend {
        match self {
            Backend::Nftables => Backend::Iptables,
            Backend::Iptables => Backend::Nftables,
        }
    }

    /// The chains a firewall text of this backend defines, for the record of the apply.
    fn chains(self, firewall: &Firewall) -> Vec<String> {
        let mut chains = Vec::new();
        for (_, text) in firewall.texts() {
            for chain in self.tool().chains_in(text) {
                if !chains.contains(&chain) {
                    chains.push(chain);
                }
            }
        }
        chains
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
    let live = read_ip(Family::Ipv4).context("reading routing state")?;
    let plan = Plan::build(config, &present_devices(states, &live));
    let previous = state::load_applied(state_dir);
    let routing: Vec<Routing> = previous.iter().map(|a| a.routing.clone()).collect();
    // IPv6 state is read (and rewritten) when IPv6 links are wanted or the last apply had
    // some: an IPv4-only router pays no process for IPv6.
    let ipv6 = plan.has(Family::Ipv6) || routing.iter().any(|r| !r.links6.is_empty());
    let tool = backend.tool();
    let ours = previous.as_ref().filter(|p| p.backend == backend.name());
    let firewall = tool
        .render(&plan, ours, ipv6)
        .context("reading iptables state")?;
    let mut changes = vec![(
        Family::Ipv4,
        ip_text::diff(&plan, Family::Ipv4, &live, &routing),
    )];
    if ipv6 {
        let live6 = read_ip(Family::Ipv6).context("reading IPv6 routing state")?;
        changes.push((
            Family::Ipv6,
            ip_text::diff(&plan, Family::Ipv6, &live6, &routing),
        ));
    }
    let (sets, elements) = tool.sets(&plan);
    let record = state::stage_applied(
        state_dir,
        &Applied {
            backend: backend.name().to_string(),
            routing: plan.routing(),
            chains: backend.chains(&firewall),
            sets,
            elements,
        },
    )?;
    tool.check(&firewall)
        .with_context(|| format!("checking the {} rules", backend.name()))?;
    run_ip_changes(&changes).context("changing ip rules and routes")?;
    if let Err(e) = tool.load(&firewall) {
        return Err(ip::undo_ip(
            &changes,
            e.wrap(format!("loading the {} rules", backend.name())),
        ));
    }
    sysctl::apply(&plan).context("setting sysctls")?;
    if let Some(p) = previous.as_ref().filter(|p| p.backend != backend.name()) {
        backend
            .other()
            .tool()
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
    let tool = backend.tool();
    tool.load(&tool.policy_update(plan))
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
        chains.extend(iptables::chains_of(plan));
    }
    let mut errors = Vec::new();
    for backend in [Backend::Nftables, Backend::Iptables] {
        if let Err(e) = backend.tool().remove(&chains) {
            errors.push(e.wrap(format!("removing {} rules", backend.name())));
        }
    }
    for family in Family::ALL {
        let removed = read_ip(family)
            .and_then(|live| run_ip(family, &ip_text::removal(&live, family, &routing, &[], &[])));
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
