//! The daemon's loop: one thread, one `poll` over a signal fd, the device monitor, the probe
//! sockets of the links with a round in flight and the ubus connection of our object; the
//! timeout is the nearest link deadline (or ubus reconnect).
//!
//! The daemon keeps one current [`Plan`], the one the last apply or policy update put in force
//! (rebuilt only when the config or the links' state changes), and the backend its config
//! asks for, resolved once per config load. What a state change rewrites is decided in
//! [`super::rules`].

use std::os::fd::AsFd;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::bus::{Bus, Method, check_reply};
use super::hook::{Hook, HookEvent};
use super::messages;
use super::pollset::{self, FdOwner, PollSet};
use super::rules::{self, Owed, RULES_RETRY, RulesUpdate, device_up, gate_tunnels, plan_states};
use super::signals::{Asked, Signals};
use super::status::{self, DaemonStatus, LinkStatus};
use crate::apply::{self, Backend};
use crate::config::{Config, FlushEvent};
use crate::context::Context;
use crate::daemon::decide::link::{Cause, Outcome, TrackedLink};
use crate::daemon::decide::resteer::Sweeps;
use crate::daemon::decide::standby::Uses;
use crate::daemon::kernel::counters::Counters;
use crate::daemon::watch::devices::{DeviceMonitor, running_devices};
use crate::daemon::watch::passive::{LinkWatch, PassiveWatcher};
use crate::daemon::watch::probe::LinkRoute;
use crate::daemon::watch::selfheal::{SelfHeal, Verdict};
use crate::daemon::{log, log_error};
use crate::error::{Context as _, Result};
use crate::plan::Plan;
use crate::source::LinkState;
use crate::source::ubus::Call;

/// Why the daemon returned.
#[derive(Debug)]
pub enum Exit {
    /// SIGTERM or SIGINT: our rules stay in place (`stop` removes them).
    Signal(Signal),
    /// The config (at start or on reload) says `enabled 0`: the caller removes our rules.
    Disabled(Box<Config>),
}

struct Daemon<'a> {
    /// Where the config, ubus and the state live; the steps shared with the command line.
    context: &'a Context,
    config: Config,
    /// The backend `config` asks for, resolved once per config load.
    backend: Backend,
    /// The plan in force: what the last apply or policy update loaded.
    plan: Plan,
    /// What `link_states` resolved, one per interface section.
    resolved: Vec<LinkState>,
    /// One per enabled interface section.
    links: Vec<TrackedLink>,
    hook: Hook,
    /// Our ubus object.
    bus: Bus,
    /// Rules still to be brought up to date after a failure, and when to try again.
    owed: Owed,
    /// Passive health, while some link has it on.
    passive: Option<PassiveWatcher>,
    /// Conntrack entries being deleted.
    sweeps: Sweeps,
    /// Watches our rules, ip rules and routes (None when its sockets could not be opened).
    heal: Option<SelfHeal>,
    /// Which links are in use, and failback deletions due.
    uses: Uses,
}

/// Applies the config, then tracks the links and fails over until a signal says stop.
pub fn run(context: &Context) -> Result<Exit> {
    let config = context.load_config()?;
    if !config.globals.enabled {
        return Ok(Exit::Disabled(Box::new(config)));
    }
    let signals = Signals::open()?;
    let monitor = DeviceMonitor::open()?;
    let running = running_devices()?;
    let resolved = context.link_states(&config);
    let links = build_links(&config, &resolved, &running);
    let backend = Backend::resolve(config.globals.backend);
    let plan = apply::apply(&config, plan_states(&resolved, &links), &context.state_dir)
        .context("applying the config")?;
    let mut daemon = Daemon {
        context,
        config,
        backend,
        plan,
        resolved,
        links,
        hook: Hook::new(context.hook.clone()),
        bus: Bus::new(context.ubus_socket.clone()),
        owed: Owed::default(),
        passive: None,
        sweeps: Sweeps::default(),
        heal: None,
        uses: Uses::default(),
    };
    daemon.heal = SelfHeal::open(daemon.backend, daemon.plan.routing())
        .map_err(|e| log_error(&format!("cannot watch for changes to our rules: {e}")))
        .ok();
    let now = Instant::now();
    daemon
        .uses
        .update(&mut daemon.links, &daemon.plan, &daemon.config, now);
    daemon.watch_passively();
    log(&format!(
        "started: {}",
        messages::summary(daemon.backend, &daemon.links)
    ));
    daemon.save_status();
    let exit = daemon.event_loop(&signals, &monitor);
    if let Err(e) = status::remove(&context.state_dir) {
        log_error(&e.to_string());
    }
    exit
}

/// What the signals read in one go asked for.
enum Signalled {
    Nothing,
    Reloaded,
    Exit(Exit),
}

impl Daemon<'_> {
    fn event_loop(&mut self, signals: &Signals, monitor: &DeviceMonitor) -> Result<Exit> {
        let mut ready: Vec<FdOwner> = Vec::new();
        loop {
            let now = Instant::now();
            let outcomes: Vec<(usize, Outcome)> = self
                .links
                .iter_mut()
                .enumerate()
                .filter_map(|(i, link)| {
                    let readable = ready.contains(&FdOwner::Link(i));
                    link.advance(now, readable).map(|o| (i, o))
                })
                .collect();
            if !outcomes.is_empty() {
                self.act(outcomes, false);
            }
            let swept: Vec<bool> = (0..self.sweeps.fds().count())
                .map(|i| ready.contains(&FdOwner::Sweep(i)))
                .collect();
            self.sweeps.advance(&swept);
            self.fail_back(now);
            self.check_passive(now);
            self.check_heal(now);
            if let Some(update) = self.owed.due(now) {
                self.update_rules(update);
            }
            if self.hook.deadline().is_some_and(|at| at <= now) {
                self.hook.reap();
            }

            let timeout = pollset::timeout_until(self.next_deadline());
            ready = self.poll_set(signals, monitor).wait(timeout)?;
            let now = Instant::now();
            if ready.contains(&FdOwner::Signals) {
                match self.on_signals(signals)? {
                    Signalled::Exit(exit) => return Ok(exit),
                    Signalled::Reloaded => ready.retain(|s| !matches!(s, FdOwner::Link(_))),
                    Signalled::Nothing => {}
                }
            }
            if ready.contains(&FdOwner::Devices) && monitor.drain()? {
                self.on_devices();
            }
            if let (true, Some(passive)) = (ready.contains(&FdOwner::Passive), &mut self.passive) {
                if let Err(e) = passive.drain(now) {
                    log_error(&format!("passive health stopped: {e}"));
                    self.passive = None;
                }
            }
            if let (true, Some(heal)) = (ready.contains(&FdOwner::Heal), &mut self.heal) {
                if let Err(e) = heal.read(now) {
                    log_error(&format!("watching our rules stopped: {e}"));
                    self.heal = None;
                }
            }
            let bus_ready = ready.contains(&FdOwner::Bus);
            for (call, method) in self.bus.service(Instant::now(), bus_ready) {
                if let Some(exit) = self.answer(&call, method) {
                    return Ok(exit);
                }
            }
        }
    }

    /// The nearest link deadline, rules retry, ubus reconnect, hook timeout, passive or
    /// self-healing deadline; `None` when there is none.
    fn next_deadline(&mut self) -> Option<Instant> {
        let passive = self.passive.as_mut().and_then(PassiveWatcher::deadline);
        let heal = self.heal.as_ref().and_then(SelfHeal::deadline);
        self.links
            .iter()
            .filter_map(TrackedLink::deadline)
            .chain(self.owed.deadline())
            .chain(self.bus.deadline())
            .chain(self.hook.deadline())
            .chain(passive)
            .chain(heal)
            .chain(self.uses.deadline())
            .min()
    }

    /// Tells the links whether the plan in force uses them (after every plan change).
    fn note_use(&mut self) {
        let now = Instant::now();
        self.uses
            .update(&mut self.links, &self.plan, &self.config, now);
    }

    /// Deletes the conntrack entries of links whose failback grace has passed.
    fn fail_back(&mut self, now: Instant) {
        let mask = self.config.globals.mark_mask;
        for name in self.uses.due(now) {
            if let Some(link) = self.links.iter().find(|l| l.name == name && !l.in_use()) {
                self.sweeps
                    .delete_all(mask, link, "its connections (failback)");
            }
        }
    }

    /// Everything the loop waits on this turn.
    fn poll_set<'fd>(
        &'fd self,
        signals: &'fd Signals,
        monitor: &'fd DeviceMonitor,
    ) -> PollSet<'fd> {
        let mut set = PollSet::default();
        set.read(signals.as_fd(), FdOwner::Signals);
        set.read(monitor.as_fd(), FdOwner::Devices);
        if let Some(passive) = &self.passive {
            set.read(passive.as_fd(), FdOwner::Passive);
        }
        if let Some(heal) = &self.heal {
            for fd in heal.fds() {
                set.read(fd, FdOwner::Heal);
            }
        }
        for (i, fd) in self.sweeps.fds().enumerate() {
            set.read(fd, FdOwner::Sweep(i));
        }
        for (i, link) in self.links.iter().enumerate() {
            if let Some(fd) = link.poll_fd() {
                set.read(fd, FdOwner::Link(i));
            }
        }
        if let Some(fd) = self.bus.poll_fd() {
            set.watch(fd, FdOwner::Bus);
        }
        set
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
                log(&messages::suspect(link, &suspicion));
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

    fn on_signals(&mut self, signals: &Signals) -> Result<Signalled> {
        let mut result = Signalled::Nothing;
        while let Some(asked) = signals.next()? {
            match asked {
                Asked::Reload => match self.reload("SIGHUP") {
                    Some(exit) => return Ok(Signalled::Exit(exit)),
                    None => result = Signalled::Reloaded,
                },
                Asked::Stop(signal) => {
                    log(&format!("{signal}: exiting; the rules stay in place"));
                    return Ok(Signalled::Exit(Exit::Signal(signal)));
                }
                Asked::Reap => self.hook.reap(),
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
        let config = match self.context.load_config() {
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
        let resolved = self.context.link_states(&config);
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
        outcomes.extend(gate_tunnels(&mut links, now));
        let backend = Backend::resolve(config.globals.backend);
        let applied = apply::apply(
            &config,
            plan_states(&resolved, &links),
            &self.context.state_dir,
        );
        self.after_own_apply();
        let plan = match applied {
            Ok(plan) => plan,
            Err(e) => {
                log_error(&format!("reload failed, keeping the running config: {e}"));
                return None;
            }
        };
        self.config = config;
        self.backend = backend;
        self.plan = plan;
        self.resolved = resolved;
        self.links = links;
        self.note_use();
        self.owed = Owed::default();
        if let Some(heal) = &mut self.heal {
            heal.reconfigure(self.backend, self.plan.routing());
        }
        self.watch_passively();
        log(&format!(
            "reloaded: {}",
            messages::summary(self.backend, &self.links)
        ));
        self.act(outcomes, true);
        None
    }

    /// Logs what changed, brings the rules up to date (unless `rules_done`), then deletes
    /// conntrack entries and runs the hook, in that order: a connection whose entry is
    /// deleted must find the new rules when it comes back.
    fn act(&mut self, mut outcomes: Vec<(usize, Outcome)>, rules_done: bool) {
        let now = Instant::now();
        outcomes.extend(gate_tunnels(&mut self.links, now));
        for (i, outcome) in &outcomes {
            let link = &self.links[*i];
            if outcome.transition.changed() {
                log(&messages::transition(link, outcome));
            }
            if let Some(passive) = &mut self.passive {
                if let Cause::Burst { answered, targets } = outcome.cause {
                    if outcome.transition.changed() {
                        passive.confirmed(*i);
                    } else {
                        passive.cleared(*i, now);
                        log(&messages::burst_answered(link, answered, targets));
                    }
                }
                if let Some(watch) = passive.links.get_mut(*i) {
                    watch.set_rtt(link.recent_rtt());
                }
            }
        }
        let needed = RulesUpdate::after_all(outcomes.iter().map(|(_, outcome)| outcome));
        if let (false, Some(update)) = (rules_done, self.owed.with(needed)) {
            self.update_rules(update);
        }
        let mask = self.config.globals.mark_mask;
        for (i, outcome) in &outcomes {
            self.sweeps.after_change(mask, &self.links[*i], outcome);
            run_hook(&mut self.hook, &self.links[*i], outcome);
        }
        self.save_status();
    }

    /// Brings the rules up to date as `update` says; the plan it loads is the one in force
    /// from then on. On failure keeps trying every [`RULES_RETRY`].
    fn update_rules(&mut self, update: RulesUpdate) {
        let result = rules::bring_up_to_date(
            update,
            &self.config,
            self.backend,
            plan_states(&self.resolved, &self.links),
            &self.context.state_dir,
        );
        self.after_own_apply();
        match result {
            Ok(plan) => {
                if let Some(plan) = plan {
                    self.plan = plan;
                    self.note_use();
                }
                self.owed = Owed::default();
            }
            Err(e) => {
                log_error(&format!(
                    "updating the rules failed, trying again in {} s: {e}",
                    RULES_RETRY.as_secs()
                ));
                self.owed.failed(Instant::now());
            }
        }
    }

    /// Answers one call of our ubus object; a reload that finds the config disabled ends the
    /// daemon, after the answer.
    fn answer(&mut self, call: &Call, method: Option<Method>) -> Option<Exit> {
        match method {
            Some(Method::Status) => {
                let counters = Counters::read(self.backend);
                let reply = status::live(&self.status(), &counters, &self.plan);
                self.bus.answer(call, Some(&reply));
                None
            }
            Some(Method::Reload) => {
                let exit = self.reload("ubus reload");
                self.bus.answer(call, Some(&Default::default()));
                exit
            }
            Some(Method::Check) => {
                // The config read and links resolved as a reload would; nothing changes.
                let outcome = self.context.load_config().map(|config| {
                    let output = self.context.check_text(&config);
                    (config.warnings, output)
                });
                self.bus.answer(call, Some(&check_reply(outcome)));
                None
            }
            Some(Method::Explain) => {
                self.bus
                    .answer(call, Some(&self.context.explain_call(&call.args)));
                None
            }
            None => {
                self.bus.answer(call, None);
                None
            }
        }
    }

    fn status(&self) -> DaemonStatus {
        DaemonStatus {
            pid: std::process::id(),
            reapplies: self.heal.as_ref().map_or(0, |h| h.reapplies),
            backend: self.backend.name().to_string(),
            links: self.links.iter().map(LinkStatus::of).collect(),
        }
    }

    fn save_status(&self) {
        if let Err(e) = status::save(&self.context.state_dir, &self.status()) {
            log_error(&format!("writing the status: {e}"));
        }
    }
}

/// One [`TrackedLink`] per enabled interface, with the mark, device and source the plan gives
/// it (a plan of the resolved facts, built once per config load: the running plan is built
/// from these links).
fn build_links(config: &Config, resolved: &[LinkState], running: &[String]) -> Vec<TrackedLink> {
    let plan = Plan::build(config, resolved);
    let mut links: Vec<TrackedLink> = config
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
            let mut link = TrackedLink::new(
                index,
                route,
                iface.track.clone(),
                iface.flush_conntrack.clone(),
                device_up(resolved.get(index), running),
            )
            .with_idle_interval(iface.standby.idle_interval());
            link.underlay = iface
                .tunnel
                .as_ref()
                .map(|t| t.underlay.clone())
                .unwrap_or_default();
            Some(link)
        })
        .collect();
    // Nothing has happened yet: a tunnel over a dead underlay simply starts down.
    gate_tunnels(&mut links, Instant::now());
    links
}

/// Runs the hook when the link's usability changed.
fn run_hook(hook: &mut Hook, link: &TrackedLink, outcome: &Outcome) {
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
