//! The daemon's loop: one thread, one `poll` over a signal fd, the device monitor, the probe
//! sockets of the links with a round in flight and the ubus connection of our object; the
//! timeout is the nearest link deadline (or ubus reconnect).
//!
//! A change of a link's usability rewrites only the policy chains, in one small transaction.
//! A device that comes or goes, a reload, or a failed policy update re-applies everything
//! (apply never removes what is still wanted, so there is no gap). Routes and ip rules stay
//! when tracking takes a link out: its pinned connections then fail fast on their own link
//! instead of leaking out of another one with the wrong source address.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::bus::{Bus, Request, check_reply};
use super::hook::{Hook, HookEvent};
use super::status::{self, Status};
use crate::apply::{self, Backend};
use crate::config::{Config, FlushEvent};
use crate::daemon::decide::link::{Cause, Link, Outcome};
use crate::daemon::decide::resteer::Sweeps;
use crate::daemon::kernel::counters;
use crate::daemon::watch::devices::{DeviceMonitor, running_devices};
use crate::daemon::watch::passive::{LinkWatch, PassiveWatcher};
use crate::daemon::watch::probe::LinkRoute;
use crate::daemon::watch::selfheal::{SelfHeal, Verdict};
use crate::daemon::{log, log_error};
use crate::error::{Context, Error, Result};
use crate::plan::{LinkState, Plan};
use crate::source::ubus::Call;
use serde_json::{Map, Value};

/// How long to wait before trying again when the rules could not be brought up to date.
const RULES_RETRY: Duration = Duration::from_secs(5);

/// What the daemon needs from its caller: where the config comes from and how links are
/// resolved, so reloads read the same source and resolve the same way as the first start.
pub struct Options<'a> {
    /// Reads and validates the config (again on every SIGHUP).
    pub load_config: &'a dyn Fn() -> Result<Config>,
    /// Device, gateway and source of every interface section, in config order.
    pub link_states: &'a dyn Fn(&Config) -> Vec<LinkState>,
    /// Where applied.json and status.json live.
    pub state_dir: &'a Path,
    /// The user's event script (run only when it exists).
    pub hook: &'a Path,
    /// The ubusd socket our object `connmark-lb` registers on; None: the system's.
    pub ubus_socket: Option<&'a Path>,
    /// What `check` prints for a config and its link states (the ubus `check` answer).
    pub check: &'a dyn Fn(&Config, &[LinkState]) -> String,
    /// What `explain --json` says of the connection a call's arguments describe (the ubus
    /// `explain` answer, for LuCI's Explain page).
    pub explain: &'a dyn Fn(&Table) -> Table,
}

/// A ubus message's table: a call's arguments, a reply.
pub type Table = Map<String, Value>;

/// Why the daemon returned.
#[derive(Debug)]
pub enum Exit {
    /// SIGTERM or SIGINT: our rules stay in place (`stop` removes them).
    Signal(Signal),
    /// The config (at start or on reload) says `enabled 0`: the caller removes our rules.
    Disabled(Box<Config>),
}

/// How much of the ruleset has to be rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RulesUpdate {
    Nothing,
    Policies,
    Everything,
}

struct Daemon<'a> {
    options: &'a Options<'a>,
    config: Config,
    /// What `link_states` resolved, one per interface section.
    resolved: Vec<LinkState>,
    /// One per enabled interface section.
    links: Vec<Link>,
    hook: Hook,
    /// Our ubus object.
    bus: Bus,
    /// Rules still to be brought up to date after a failure, and when to try again.
    pending: RulesUpdate,
    retry_at: Option<Instant>,
    /// Passive health, while some link has it on.
    passive: Option<PassiveWatcher>,
    /// Conntrack entries being deleted.
    sweeps: Sweeps,
    /// Watches our rules, ip rules and routes (None when its sockets could not be opened).
    heal: Option<SelfHeal>,
}

/// What one descriptor in the poll set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    Devices,
    Passive,
    Heal,
    Bus,
    Sweep(usize),
    Link(usize),
}

/// Applies the config, then tracks the links and fails over until a signal says stop.
pub fn run(options: &Options) -> Result<Exit> {
    let config = (options.load_config)()?;
    if !config.globals.enabled {
        return Ok(Exit::Disabled(Box::new(config)));
    }
    let signals = block_signals()?;
    let monitor = DeviceMonitor::open()?;
    let running = running_devices()?;
    let resolved = (options.link_states)(&config);
    let links = build_links(&config, &resolved, &running);
    let mut daemon = Daemon {
        options,
        config,
        resolved,
        links,
        hook: Hook::new(options.hook.to_path_buf()),
        bus: Bus::new(options.ubus_socket.map(Path::to_path_buf)),
        pending: RulesUpdate::Nothing,
        retry_at: None,
        passive: None,
        sweeps: Sweeps::default(),
        heal: None,
    };
    apply::apply(
        &daemon.config,
        plan_states(&daemon.resolved, &daemon.links),
        options.state_dir,
    )
    .context("applying the config")?;
    let (backend, routing) = daemon.ours();
    daemon.heal = SelfHeal::open(backend, routing)
        .map_err(|e| log_error(&format!("cannot watch for changes to our rules: {e}")))
        .ok();
    daemon.watch_passively();
    log(&format!("started: {}", daemon.summary()));
    daemon.save_status();
    let exit = daemon.event_loop(&signals, &monitor);
    if let Err(e) = status::remove(options.state_dir) {
        log_error(&e.to_string());
    }
    exit
}

impl Daemon<'_> {
    fn event_loop(&mut self, signals: &SignalFd, monitor: &DeviceMonitor) -> Result<Exit> {
        let mut ready: Vec<Source> = Vec::new();
        loop {
            let now = Instant::now();
            let mut outcomes = Vec::new();
            for (i, link) in self.links.iter_mut().enumerate() {
                let readable = ready.contains(&Source::Link(i));
                outcomes.extend(link.advance(now, readable).map(|o| (i, o)));
            }
            if !outcomes.is_empty() {
                self.act(outcomes, false);
            }
            let swept: Vec<bool> = (0..self.sweeps.fds().count())
                .map(|i| ready.contains(&Source::Sweep(i)))
                .collect();
            self.sweeps.advance(&swept);
            self.check_passive(now);
            self.check_heal(now);
            if self.retry_at.is_some_and(|at| at <= now) {
                self.update_rules(self.pending);
            }
            if self.hook.deadline().is_some_and(|at| at <= now) {
                self.hook.reap();
            }

            let timeout = self.poll_timeout();
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(monitor.as_fd(), PollFlags::POLLIN),
            ];
            let mut owners = vec![Source::Signals, Source::Devices];
            if let Some(passive) = &self.passive {
                fds.push(PollFd::new(passive.as_fd(), PollFlags::POLLIN));
                owners.push(Source::Passive);
            }
            if let Some(heal) = &self.heal {
                for fd in heal.fds() {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    owners.push(Source::Heal);
                }
            }
            for (i, fd) in self.sweeps.fds().enumerate() {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                owners.push(Source::Sweep(i));
            }
            for (i, link) in self.links.iter().enumerate() {
                if let Some(fd) = link.poll_fd() {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    owners.push(Source::Link(i));
                }
            }
            if let Some(fd) = self.bus.poll_fd() {
                fds.push(fd);
                owners.push(Source::Bus);
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::io("poll", e.into())),
            }
            ready = fds
                .iter()
                .zip(&owners)
                .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, owner)| *owner)
                .collect();
            drop(fds);
            let now = Instant::now();
            if ready.contains(&Source::Signals) {
                match self.on_signals(signals)? {
                    Signalled::Exit(exit) => return Ok(exit),
                    Signalled::Reloaded => ready.retain(|s| !matches!(s, Source::Link(_))),
                    Signalled::Nothing => {}
                }
            }
            if ready.contains(&Source::Devices) && monitor.drain()? {
                self.on_devices();
            }
            if let (true, Some(passive)) = (ready.contains(&Source::Passive), &mut self.passive) {
                if let Err(e) = passive.drain(now) {
                    log_error(&format!("passive health stopped: {e}"));
                    self.passive = None;
                }
            }
            if let (true, Some(heal)) = (ready.contains(&Source::Heal), &mut self.heal) {
                if let Err(e) = heal.read(now) {
                    log_error(&format!("watching our rules stopped: {e}"));
                    self.heal = None;
                }
            }
            let bus_ready = ready.contains(&Source::Bus);
            for (call, request) in self.bus.service(Instant::now(), bus_ready) {
                if let Some(exit) = self.answer(&call, request) {
                    return Ok(exit);
                }
            }
        }
    }

    /// Until the nearest link deadline, rules retry, hook timeout, passive or self-healing
    /// deadline; forever when there is none.
    fn poll_timeout(&mut self) -> PollTimeout {
        let passive = self.passive.as_mut().and_then(PassiveWatcher::deadline);
        let heal = self.heal.as_ref().and_then(SelfHeal::deadline);
        let next = self
            .links
            .iter()
            .filter_map(Link::deadline)
            .chain(self.retry_at)
            .chain(self.bus.deadline())
            .chain(self.hook.deadline())
            .chain(passive)
            .chain(heal)
            .min();
        match next {
            None => PollTimeout::NONE,
            // Rounded up to whole milliseconds so a wake-up is never early and spins.
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
            }
        }
    }

    /// Probes the links passive health suspects now.
    fn check_passive(&mut self, now: Instant) {
        let Some(passive) = &mut self.passive else {
            return;
        };
        for suspicion in passive.check(now) {
            let Some(link) = self.links.get_mut(suspicion.link) else {
                continue;
            };
            if link.confirm(now) {
                log(&format!(
                    "{} ({}): suspect: {suspicion}; probing it now",
                    link.name,
                    link.route.device.as_deref().unwrap_or("no device")
                ));
            }
        }
    }

    /// Applies everything again when something of ours changed behind our back.
    fn check_heal(&mut self, now: Instant) {
        let Some(heal) = &mut self.heal else {
            return;
        };
        match heal.check(now) {
            Verdict::Nothing => {}
            Verdict::Paused(why) => log_error(&why),
            Verdict::Reapply(what) => {
                log(&format!(
                    "our rules changed behind our back ({what}): applying again"
                ));
                self.update_rules(RulesUpdate::Everything);
                self.save_status();
            }
        }
    }

    /// What is ours in the kernel: the backend, ip rules and tables of the running config.
    fn ours(&self) -> (Backend, crate::plan::Routing) {
        let plan = Plan::build(&self.config, &self.resolved);
        (
            Backend::resolve(self.config.globals.backend),
            plan.routing(),
        )
    }

    /// Opens, resets or closes the passive watcher for the current links: it runs while some
    /// link has passive health on (a listener makes the kernel announce every connection).
    fn watch_passively(&mut self) {
        let watches: Vec<LinkWatch> = self
            .links
            .iter()
            .map(|link| {
                let mut watch = LinkWatch::new(link.route.mark, link.watched_passively());
                watch.set_rtt(link.recent_rtt());
                watch
            })
            .collect();
        let mask = self.config.globals.mark_mask;
        if !watches.iter().any(|w| w.enabled) {
            self.passive = None;
            return;
        }
        match &mut self.passive {
            Some(passive) => passive.reset(mask, watches),
            None => {
                self.passive = PassiveWatcher::open(mask, watches)
                    .map_err(|e| log_error(&format!("passive health is off: {e}")))
                    .ok();
            }
        }
    }

    /// Our own apply just ran: the changes it announced are not someone else's.
    fn after_own_apply(&mut self) {
        if let Some(heal) = &mut self.heal {
            heal.ignore_own_changes();
        }
    }

    fn on_signals(&mut self, signals: &SignalFd) -> Result<Signalled> {
        let mut result = Signalled::Nothing;
        while let Some(info) = signals
            .read_signal()
            .map_err(|e| Error::io("signalfd", e.into()))?
        {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => match self.reload("SIGHUP") {
                    Some(exit) => return Ok(Signalled::Exit(exit)),
                    None => result = Signalled::Reloaded,
                },
                Ok(signal @ (Signal::SIGTERM | Signal::SIGINT)) => {
                    log(&format!("{signal}: exiting; the rules stay in place"));
                    return Ok(Signalled::Exit(Exit::Signal(signal)));
                }
                Ok(Signal::SIGCHLD) => self.hook.reap(),
                _ => {}
            }
        }
        Ok(result)
    }

    /// Reads device states again and feeds every link whose device changed.
    fn on_devices(&mut self) {
        let running = match running_devices() {
            Ok(running) => running,
            Err(e) => return log_error(&format!("reading device states: {e}")),
        };
        let now = Instant::now();
        let resolved = &self.resolved;
        let outcomes: Vec<(usize, Outcome)> = self
            .links
            .iter_mut()
            .enumerate()
            .filter_map(|(i, link)| {
                let up = device_up(resolved.get(link.index), &running);
                link.set_device(up, now).map(|o| (i, o))
            })
            .collect();
        if !outcomes.is_empty() {
            self.act(outcomes, false);
        }
    }

    /// SIGHUP or ubus `reload`: reads the config from the same source and applies it; links
    /// that still exist keep their health. On any failure the running config stays in force.
    fn reload(&mut self, why: &str) -> Option<Exit> {
        log(&format!("{why}: reloading the config"));
        let config = match (self.options.load_config)() {
            Ok(config) => config,
            Err(e) => {
                log_error(&format!("reload failed, keeping the running config: {e}"));
                return None;
            }
        };
        if !config.globals.enabled {
            return Some(Exit::Disabled(Box::new(config)));
        }
        let running = match running_devices() {
            Ok(running) => running,
            Err(e) => {
                log_error(&format!("reload failed, keeping the running config: {e}"));
                return None;
            }
        };
        let resolved = (self.options.link_states)(&config);
        let mut links = build_links(&config, &resolved, &running);
        let now = Instant::now();
        let mut outcomes = Vec::new();
        for (i, link) in links.iter_mut().enumerate() {
            let up = link.device_up();
            if let Some(old) = self.links.iter().find(|old| old.name == link.name) {
                link.inherit(old);
                outcomes.extend(link.set_device(up, now).map(|o| (i, o)));
            }
        }
        let applied = apply::apply(
            &config,
            plan_states(&resolved, &links),
            self.options.state_dir,
        );
        self.after_own_apply();
        if let Err(e) = applied {
            log_error(&format!("reload failed, keeping the running config: {e}"));
            return None;
        }
        self.config = config;
        self.resolved = resolved;
        self.links = links;
        self.pending = RulesUpdate::Nothing;
        self.retry_at = None;
        let (backend, routing) = self.ours();
        if let Some(heal) = &mut self.heal {
            heal.reconfigure(backend, routing);
        }
        self.watch_passively();
        log(&format!("reloaded: {}", self.summary()));
        self.act(outcomes, true);
        None
    }

    /// Logs what changed, brings the rules up to date (unless `rules_done`), then deletes
    /// conntrack entries and runs the hook, in that order: a connection whose entry is
    /// deleted must find the new rules when it comes back.
    fn act(&mut self, outcomes: Vec<(usize, Outcome)>, rules_done: bool) {
        let mut needed = RulesUpdate::Nothing;
        let now = Instant::now();
        for (i, outcome) in &outcomes {
            let link = &self.links[*i];
            if outcome.transition.changed() {
                log(&describe(link, outcome));
            }
            if let Some(passive) = &mut self.passive {
                if let Cause::Burst { answered, targets } = outcome.cause {
                    if outcome.transition.changed() {
                        passive.confirmed(*i);
                    } else {
                        passive.cleared(*i, now);
                        log(&format!(
                            "{}: burst answered ({answered}/{targets} targets); not suspect any more",
                            link.name
                        ));
                    }
                }
                if let Some(watch) = passive.links.get_mut(*i) {
                    watch.set_rtt(link.recent_rtt());
                }
            }
            if matches!(outcome.cause, Cause::Device(_)) {
                needed = needed.max(RulesUpdate::Everything);
            } else if outcome.transition.usable_changed() {
                needed = needed.max(RulesUpdate::Policies);
            }
        }
        if !rules_done && needed > RulesUpdate::Nothing {
            self.update_rules(needed.max(self.pending));
        }
        let mask = self.config.globals.mark_mask;
        for (i, outcome) in &outcomes {
            self.sweeps.after_change(mask, &self.links[*i], outcome);
            run_hook(&mut self.hook, &self.links[*i], outcome);
        }
        self.save_status();
    }

    /// Rewrites the policy chains (falling back to a full apply) or everything; on failure
    /// keeps trying every [`RULES_RETRY`].
    fn update_rules(&mut self, update: RulesUpdate) {
        let states = plan_states(&self.resolved, &self.links);
        let result = match update {
            RulesUpdate::Nothing => Ok(()),
            RulesUpdate::Policies => {
                let backend = Backend::resolve(self.config.globals.backend);
                let plan = Plan::build(&self.config, &states);
                apply::update_policies(backend, &plan, self.options.state_dir).or_else(|e| {
                    log_error(&format!(
                        "updating the policy chains failed, applying everything: {e}"
                    ));
                    apply::apply(&self.config, states, self.options.state_dir).map(drop)
                })
            }
            RulesUpdate::Everything => {
                apply::apply(&self.config, states, self.options.state_dir).map(drop)
            }
        };
        self.after_own_apply();
        match result {
            Ok(()) => {
                self.pending = RulesUpdate::Nothing;
                self.retry_at = None;
            }
            Err(e) => {
                log_error(&format!(
                    "updating the rules failed, trying again in {} s: {e}",
                    RULES_RETRY.as_secs()
                ));
                self.pending = RulesUpdate::Everything;
                self.retry_at = Some(Instant::now() + RULES_RETRY);
            }
        }
    }

    /// Answers one call of our ubus object; a reload that finds the config disabled ends the
    /// daemon, after the answer.
    fn answer(&mut self, call: &Call, request: Option<Request>) -> Option<Exit> {
        match request {
            Some(Request::Status) => {
                let backend = Backend::resolve(self.config.globals.backend);
                let plan = Plan::build(&self.config, &plan_states(&self.resolved, &self.links));
                let reply = counters::live_status(&self.status(), backend, &plan);
                self.bus.answer(call, Some(&reply));
                None
            }
            Some(Request::Reload) => {
                let exit = self.reload("ubus reload");
                self.bus.answer(call, Some(&Default::default()));
                exit
            }
            Some(Request::Check) => {
                // The config read and links resolved as a reload would; nothing changes.
                let outcome = (self.options.load_config)().map(|config| {
                    let states = (self.options.link_states)(&config);
                    let output = (self.options.check)(&config, &states);
                    (config.warnings, output)
                });
                self.bus.answer(call, Some(&check_reply(outcome)));
                None
            }
            Some(Request::Explain) => {
                self.bus
                    .answer(call, Some(&(self.options.explain)(&call.args)));
                None
            }
            None => {
                self.bus.answer(call, None);
                None
            }
        }
    }

    fn status(&self) -> Status {
        Status {
            pid: std::process::id(),
            reapplies: self.heal.as_ref().map_or(0, |h| h.reapplies),
            backend: Backend::resolve(self.config.globals.backend)
                .name()
                .to_string(),
            links: self.links.iter().map(Link::status).collect(),
        }
    }

    fn save_status(&self) {
        if let Err(e) = status::save(self.options.state_dir, &self.status()) {
            log_error(&format!("writing the status: {e}"));
        }
    }

    /// One line about what is being tracked, for the start and reload messages.
    fn summary(&self) -> String {
        let links: Vec<String> = self
            .links
            .iter()
            .map(|link| {
                format!(
                    "{} ({}, {})",
                    link.name,
                    link.route.device.as_deref().unwrap_or("no device"),
                    link.status().state
                )
            })
            .collect();
        format!(
            "{} backend, links {}",
            Backend::resolve(self.config.globals.backend).name(),
            links.join(", ")
        )
    }
}

/// What the signals read in one go asked for.
enum Signalled {
    Nothing,
    Reloaded,
    Exit(Exit),
}

/// Blocks the signals we handle and returns a descriptor to read them from, so they arrive
/// in the loop like any other event (children started later get a clean mask from std).
fn block_signals() -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
    ] {
        mask.add(signal);
    }
    mask.thread_block()
        .map_err(|e| Error::io("blocking signals", e.into()))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::io("signalfd", e.into()))
}

/// One [`Link`] per enabled interface, with the mark, device and source the plan gives it.
fn build_links(config: &Config, resolved: &[LinkState], running: &[String]) -> Vec<Link> {
    let plan = Plan::build(config, resolved);
    config
        .interfaces
        .iter()
        .enumerate()
        .filter_map(|(index, iface)| {
            let planned = plan.links.iter().find(|l| l.name == iface.name)?;
            let route = LinkRoute {
                name: iface.name.clone(),
                family: iface.family,
                mark: planned.mark,
                device: planned.device.clone(),
                source: planned.source,
            };
            Some(Link::new(
                index,
                route,
                iface.track.clone(),
                iface.flush_conntrack.clone(),
                device_up(resolved.get(index), running),
            ))
        })
        .collect()
}

/// A link's device counts as up when it is resolved, up and operational.
fn device_up(state: Option<&LinkState>, running: &[String]) -> bool {
    state.is_some_and(|s| s.up && s.device.as_ref().is_some_and(|d| running.contains(d)))
}

/// The link states the plan is built from: liveness from health, and no device for a link
/// whose device is down (the kernel has dropped its routes; they come back with it).
fn plan_states(resolved: &[LinkState], links: &[Link]) -> Vec<LinkState> {
    resolved
        .iter()
        .enumerate()
        .map(
            |(index, state)| match links.iter().find(|l| l.index == index) {
                None => state.clone(),
                Some(link) => LinkState {
                    device: state.device.clone().filter(|_| link.device_up()),
                    up: link.usable(),
                    ..state.clone()
                },
            },
        )
        .collect()
}

/// The transition's log line.
fn describe(link: &Link, outcome: &Outcome) -> String {
    let why = match outcome.cause {
        Cause::Round {
            answered,
            targets,
            loss_percent,
        } => format!("{answered}/{targets} targets answered, {loss_percent}% lost"),
        Cause::Burst { answered, targets } => {
            format!(
                "burst of probes after passive suspicion: {answered}/{targets} targets answered"
            )
        }
        Cause::Device(true) => "device up".to_string(),
        Cause::Device(false) => "device down".to_string(),
    };
    let what = match (outcome.transition.usable_changed(), link.usable()) {
        (true, true) => "; new connections use it again",
        (true, false) => "; new connections avoid it",
        (false, _) => "",
    };
    format!(
        "{} ({}): {} -> {} ({why}){what}",
        link.name,
        link.route.device.as_deref().unwrap_or("no device"),
        outcome.transition.from.as_str(),
        outcome.transition.to.as_str(),
    )
}

/// Runs the hook when the link's usability changed.
fn run_hook(hook: &mut Hook, link: &Link, outcome: &Outcome) {
    if !outcome.transition.usable_changed() {
        return;
    }
    let action = if outcome.transition.to.is_usable() {
        FlushEvent::Connected
    } else {
        FlushEvent::Disconnected
    };
    let event = HookEvent {
        action: action.as_str(),
        interface: link.name.clone(),
        device: link.route.device.clone().unwrap_or_default(),
        state: outcome.transition.to.as_str(),
    };
    if let Err(e) = hook.run(&event) {
        log_error(&format!("{}: hook: {e}", link.name));
    }
}
