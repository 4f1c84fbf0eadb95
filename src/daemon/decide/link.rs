//! One enabled interface at run time: its health, its probe socket, the round in flight and
//! when the next one starts.
//!
//! The daemon's loop only asks each link when it next needs attention
//! ([`TrackedLink::deadline`]) and which socket to watch ([`TrackedLink::poll_fd`]), then lets
//! it move on ([`TrackedLink::advance`]); everything a link learns comes back as an
//! [`Outcome`] for the loop to act on.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant, SystemTime};

use super::budget::ProbeBudget;
use super::health::{Health, HealthMachine, TrackConfig, Transition};
use crate::config::FlushEvent;
use crate::daemon::log_error;
use crate::daemon::watch::probe::{LinkRoute, Prober, Round, RoundReport, RoundSummary};

/// Requests per target in a confirmation burst, and the shortest time it waits for them (three
/// times the link's recent round-trip time when that is longer, never more than `timeout`).
/// Eight requests: with 20% loss each way a burst is lost whole with probability 0.36^8, once
/// in 3,500 suspicions, so random loss cannot pass for a dead link.
const BURST_COUNT: u16 = 8;
const BURST_MIN_WAIT: Duration = Duration::from_millis(200);

/// The round in flight: when it started, and whether it is a confirmation burst.
#[derive(Debug)]
struct InFlight {
    started: Instant,
    round: Round,
    burst: bool,
}

/// What made a link's state move, or at least what it just saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A probe round ended.
    Round {
        answered: u32,
        targets: u32,
        loss_percent: u32,
    },
    /// The device went up (`true`) or down.
    Device(bool),
    /// A tunnel's first underlay link became usable (`true`), or its last one stopped.
    Underlay(bool),
    /// A confirmation burst (passive health suspected the link) ended.
    Burst { answered: u32, targets: u32 },
}

/// One thing that happened to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub transition: Transition,
    pub cause: Cause,
}

impl Outcome {
    /// The `flush_conntrack` events this outcome stands for.
    pub fn events(&self) -> Vec<FlushEvent> {
        let mut events = Vec::new();
        match self.cause {
            Cause::Device(true) => events.push(FlushEvent::IfUp),
            Cause::Device(false) => events.push(FlushEvent::IfDown),
            Cause::Round { .. } | Cause::Burst { .. } | Cause::Underlay(_) => {}
        }
        if self.transition.usable_changed() {
            events.push(if self.transition.to.is_usable() {
                FlushEvent::Connected
            } else {
                FlushEvent::Disconnected
            });
        }
        events
    }
}

/// The run-time side of one `config interface`.
#[derive(Debug)]
pub struct TrackedLink {
    /// The interface section name.
    pub name: String,
    /// Index into `Config::interfaces`.
    pub index: usize,
    /// Mark, device and source the probes go out with.
    pub route: LinkRoute,
    pub flush_conntrack: Vec<FlushEvent>,
    /// A tunnel's underlay interfaces (empty for other links): it is down while none of them
    /// is usable.
    pub underlay: Vec<String>,
    /// The device's own state, as last fed.
    device: bool,
    /// Whether some underlay link is usable (always for other links).
    underlay_up: bool,
    /// The link's state, and its tracking options; its device counts as up only while
    /// `device` and `underlay_up` both are.
    health: HealthMachine,
    prober: Option<Prober>,
    round: Option<InFlight>,
    next_start: Option<Instant>,
    last_loss: Option<u32>,
    last_change: SystemTime,
    /// Why probing last failed to run, so each new reason is logged once, not every round.
    problem: Option<String>,
    /// A warm standby link's delay between rounds while no policy spreads over it.
    idle_interval: Option<Duration>,
    /// Whether some policy spreads new connections over the link (see `decide::standby`).
    in_use: bool,
    /// Today's probe bytes, for status.
    budget: ProbeBudget,
}

impl TrackedLink {
    /// A link starting to be tracked now, per `initial_state` when its device is up.
    pub fn new(
        index: usize,
        route: LinkRoute,
        track: TrackConfig,
        flush_conntrack: Vec<FlushEvent>,
        device_up: bool,
    ) -> TrackedLink {
        let health = HealthMachine::new(track, device_up);
        let budget = ProbeBudget::new(route.family, SystemTime::now());
        TrackedLink {
            name: route.name.clone(),
            index,
            route,
            flush_conntrack,
            underlay: Vec::new(),
            device: device_up,
            underlay_up: true,
            next_start: health.next_round().map(|_| Instant::now()),
            health,
            prober: None,
            round: None,
            last_loss: None,
            last_change: SystemTime::now(),
            problem: None,
            idle_interval: None,
            in_use: true,
            budget,
        }
    }

    /// Takes over what `old` (the same interface before a reload) learned: state, counts,
    /// last measurements. Probing starts afresh with the new options.
    pub fn inherit(&mut self, old: &TrackedLink) {
        let fresh = std::mem::replace(&mut self.health, old.health.clone());
        self.health.reconfigure(fresh.track().clone());
        self.last_loss = old.last_loss;
        self.last_change = old.last_change;
        self.budget = old.budget.clone();
        self.in_use = old.in_use;
        self.device = old.device;
        self.underlay_up = old.underlay_up;
        self.next_start = self.health.next_round().map(|_| Instant::now());
    }

    /// Makes the link a warm standby: probed every `every` while no policy uses it.
    pub fn with_idle_interval(mut self, every: Option<Duration>) -> TrackedLink {
        self.idle_interval = every;
        self
    }

    /// Tells the link whether some policy now spreads over it. A warm link taken into use is
    /// probed at once and then at its normal pace; one left idle slows down after its round.
    pub fn set_in_use(&mut self, in_use: bool, now: Instant) {
        if in_use && !self.in_use && self.idle_interval.is_some() && self.round.is_none() {
            self.next_start = self.next_start.map(|due| due.min(now));
        }
        self.in_use = in_use;
    }

    /// Today's probe bytes of the link.
    pub fn budget(&self) -> &ProbeBudget {
        &self.budget
    }

    /// Whether some policy spreads new connections over the link.
    pub fn in_use(&self) -> bool {
        self.in_use
    }

    /// The delay before the next round: a warm link out of use that is steadily up or down
    /// waits its idle interval; a failing or recovering one keeps the quick pace of its state.
    fn pace(&self, delay: Duration) -> Duration {
        match self.idle_interval {
            Some(every)
                if !self.in_use && matches!(self.health.state(), Health::Up | Health::Down) =>
            {
                every
            }
            _ => delay,
        }
    }

    /// Whether new connections may use the link.
    pub fn usable(&self) -> bool {
        self.health.state().is_usable()
    }

    /// Whether the link's device is up, as last fed.
    pub fn device_up(&self) -> bool {
        self.device
    }

    /// Feeds the device's state; a device that comes back gets a new probe socket (it may be
    /// a new device with the same name) and is probed at once.
    pub fn set_device(&mut self, up: bool, now: Instant) -> Option<Outcome> {
        if up == self.device {
            return None;
        }
        self.device = up;
        Some(self.feed(Cause::Device(up), now))
    }

    /// Feeds whether some underlay link is usable (tunnels only): while none is, the tunnel is
    /// down and not probed, since its probes could only get lost in a dead underlay.
    pub fn set_underlay(&mut self, up: bool, now: Instant) -> Option<Outcome> {
        if up == self.underlay_up {
            return None;
        }
        self.underlay_up = up;
        Some(self.feed(Cause::Underlay(up), now))
    }

    /// Gives health the device state that counts (device and underlay both up); when that
    /// changed, probing restarts with a new socket.
    fn feed(&mut self, cause: Cause, now: Instant) -> Outcome {
        let up = self.device && self.underlay_up;
        let changed = up != self.health.device_up();
        let transition = self.health.on_device(up);
        if changed {
            self.prober = None;
            self.round = None;
            self.next_start = transition.next_round.map(|_| now);
        }
        self.record(transition, cause)
    }

    /// When the link next needs [`TrackedLink::advance`]: its round's deadline, or the start
    /// of the next round; `None` while it is not probed.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.round {
            Some(flight) => Some(flight.round.deadline()),
            None => self.next_start,
        }
    }

    /// The socket to watch while a round is in flight.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.round.as_ref()?;
        self.prober.as_ref().map(|p| p.as_fd())
    }

    /// Takes replies (when the socket is `readable`, and always before giving up on a round,
    /// since the loop may have been busy while they arrived), ends a round that is answered
    /// or overdue, starts one that is due.
    pub fn advance(&mut self, now: Instant, readable: bool) -> Option<Outcome> {
        if let Some(mut flight) = self.round.take() {
            let mut failed = false;
            let overdue = now >= flight.round.deadline();
            if let (true, Some(prober)) = (readable || overdue, self.prober.as_mut()) {
                if let Err(e) = prober.receive(&mut flight.round) {
                    self.note_problem(Some(e.to_string()));
                    self.prober = None;
                    failed = true;
                }
            }
            if failed || flight.round.is_complete() || overdue {
                let report = flight.round.finish();
                return Some(if flight.burst {
                    self.conclude_burst(flight.started, &report, now)
                } else {
                    self.conclude(flight.started, &report, now)
                });
            }
            self.round = Some(flight);
            return None;
        }
        if self.next_start.is_none_or(|due| due > now) {
            return None;
        }
        self.start(now)
    }

    /// The link's health and what it has learned, for status.
    pub fn health(&self) -> &HealthMachine {
        &self.health
    }

    /// Requests lost in the last round, in percent.
    pub fn last_loss(&self) -> Option<u32> {
        self.last_loss
    }

    /// When the state last changed (or tracking started).
    pub fn last_change(&self) -> SystemTime {
        self.last_change
    }

    /// Sends a round; a socket that cannot be opened (the source address is not on the
    /// device yet, say) or requests that cannot be sent make a lost round at once, so a link
    /// that cannot be probed goes down like one that does not answer.
    fn start(&mut self, now: Instant) -> Option<Outcome> {
        if self.prober.is_none() {
            match Prober::open(&self.route, self.health.track()) {
                Ok(prober) => self.prober = Some(prober),
                Err(e) => {
                    self.note_problem(Some(e.to_string()));
                    let lost = RoundReport {
                        targets: Vec::new(),
                        elapsed: std::time::Duration::ZERO,
                    };
                    return Some(self.conclude(now, &lost, now));
                }
            }
        }
        let track = self.health.track();
        let count = u16::try_from(track.count).unwrap_or(u16::MAX);
        let wait = self.health.round_wait();
        let round = self
            .prober
            .as_mut()?
            .start_with(&track.track_ip, count, wait);
        if round.is_complete() {
            return Some(self.conclude(now, &round.finish(), now));
        }
        self.round = Some(InFlight {
            started: now,
            round,
            burst: false,
        });
        None
    }

    /// Passive health suspects the link: probes it at once with a short burst (replacing the
    /// round in flight, whose replies are then ignored). Returns whether a burst started; a
    /// link without passive health or targets, not in use, or already confirming is left as
    /// it is.
    pub fn confirm(&mut self, now: Instant) -> bool {
        let confirming = self.round.as_ref().is_some_and(|f| f.burst);
        if !self.health.track().passive
            || !self.health.is_tracked()
            || !self.usable()
            || !self.health.device_up()
            || confirming
        {
            return false;
        }
        if self.prober.is_none() {
            match Prober::open(&self.route, self.health.track()) {
                Ok(prober) => self.prober = Some(prober),
                Err(e) => {
                    self.note_problem(Some(e.to_string()));
                    return false;
                }
            }
        }
        let wait = self
            .health
            .window()
            .rtt
            .map_or(BURST_MIN_WAIT, |rtt| (rtt * 3).max(BURST_MIN_WAIT))
            .min(self.health.track().timeout);
        let Some(prober) = self.prober.as_mut() else {
            return false;
        };
        self.round = Some(InFlight {
            started: now,
            round: prober.start_with(&self.health.track().track_ip, BURST_COUNT, wait),
            burst: true,
        });
        true
    }

    /// Whether passive health watches this link: it is on, and probes can confirm.
    pub fn watched_passively(&self) -> bool {
        self.health.track().passive && self.health.is_tracked()
    }

    /// The recent round-trip time of the link's probes, for passive health's patience.
    pub fn recent_rtt(&self) -> Option<Duration> {
        self.health.window().rtt
    }

    /// Feeds a finished burst to health: down at once when it was bad, else nothing changes;
    /// regular rounds go on from its start.
    fn conclude_burst(&mut self, started: Instant, report: &RoundReport, now: Instant) -> Outcome {
        self.budget.record(report, SystemTime::now());
        let summary = report.summary();
        let transition = self.health.on_confirmation(&summary);
        self.schedule(&transition, started, now);
        self.record(
            transition,
            Cause::Burst {
                answered: summary.answered,
                targets: self.targets(),
            },
        )
    }

    /// The next round starts its state's delay after `started`, or now if that has passed.
    fn schedule(&mut self, transition: &Transition, started: Instant, now: Instant) {
        self.next_start = transition
            .next_round
            .map(|delay| (started + self.pace(delay)).max(now));
    }

    fn targets(&self) -> u32 {
        u32::try_from(self.health.track().track_ip.len()).unwrap_or(u32::MAX)
    }

    /// Feeds a finished round to health and schedules the next one.
    fn conclude(&mut self, started: Instant, report: &RoundReport, now: Instant) -> Outcome {
        self.budget.record(report, SystemTime::now());
        if self.prober.is_some() {
            let send_error = report.targets.iter().find_map(|t| {
                t.send_error
                    .map(|e| format!("sending to {}: {e}", t.target))
            });
            self.note_problem(send_error);
        }
        let summary: RoundSummary = report.summary();
        let track = self.health.track();
        let requests = u64::from(track.count) * track.track_ip.len() as u64;
        let received: u64 = report.targets.iter().map(|t| u64::from(t.received)).sum();
        let lost = requests.saturating_sub(received);
        let loss_percent = match requests {
            0 => 100,
            n => u32::try_from((lost * 100 + n / 2) / n).unwrap_or(100),
        };
        let transition = self.health.on_round(&summary, loss_percent);
        self.last_loss = Some(loss_percent);
        self.schedule(&transition, started, now);
        self.record(
            transition,
            Cause::Round {
                answered: summary.answered,
                targets: self.targets(),
                loss_percent,
            },
        )
    }

    fn record(&mut self, transition: Transition, cause: Cause) -> Outcome {
        if transition.changed() {
            self.last_change = SystemTime::now();
        }
        Outcome { transition, cause }
    }

    /// Logs a new reason why probing cannot run; `None` clears it silently.
    fn note_problem(&mut self, problem: Option<String>) {
        if let Some(text) = &problem {
            if self.problem.as_ref() != Some(text) {
                log_error(&format!("{}: cannot probe: {text}", self.name));
            }
        }
        self.problem = problem;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::service::status::LinkStatus;
    use crate::daemon::testns::{Netns, veth};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 202, 0, 1));
    const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 202, 0, 2));

    fn fast_track() -> TrackConfig {
        let tick = Duration::from_millis(50);
        TrackConfig {
            track_ip: vec![TARGET],
            timeout: tick,
            interval: tick,
            failure_interval: tick,
            recovery_interval: tick,
            ..TrackConfig::default()
        }
    }

    fn link(device: Option<&str>, source: IpAddr) -> TrackedLink {
        let route = LinkRoute {
            name: "wanb".into(),
            family: crate::config::Family::Ipv4,
            mark: 0,
            device: device.map(str::to_string),
            source: Some(source),
        };
        TrackedLink::new(1, route, fast_track(), vec![FlushEvent::Disconnected], true)
    }

    /// Drives `link` as the daemon's loop would until it produced `rounds` outcomes (bounded
    /// to 10 s); returns them with the time each round started after the previous one.
    fn drive(link: &mut TrackedLink, rounds: usize) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while outcomes.len() < rounds && Instant::now() < deadline {
            let now = Instant::now();
            if let Some(outcome) = link.advance(now, true) {
                outcomes.push(outcome);
                continue;
            }
            let next = link
                .deadline()
                .expect("a tracked link always has a deadline");
            std::thread::sleep(
                next.saturating_duration_since(now)
                    .min(Duration::from_millis(5)),
            );
        }
        outcomes
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn a_source_address_not_on_the_router_makes_lost_rounds_until_down() {
        let ns = Netns::new("lnk");
        let mut link = link(None, SOURCE);
        let started = Instant::now();
        let outcomes = ns.enter(|| drive(&mut link, 4));
        let states: Vec<Health> = outcomes.iter().map(|o| o.transition.to).collect();
        assert_eq!(
            states,
            [Health::Failing, Health::Failing, Health::Down, Health::Down]
        );
        assert_eq!(
            outcomes[2].cause,
            Cause::Round {
                answered: 0,
                targets: 1,
                loss_percent: 100
            }
        );
        assert_eq!(outcomes[2].events(), [FlushEvent::Disconnected]);
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "rounds kept their interval: {:?}",
            started.elapsed()
        );
        assert!(
            link.problem.as_ref().is_some_and(|p| p.contains("bind")),
            "{:?}",
            link.problem
        );
        let status = LinkStatus::of(&link);
        assert_eq!(
            (status.state.as_str(), status.usable, status.loss_percent),
            ("down", false, Some(100))
        );
    }

    #[test]
    #[cfg_attr(qemu_user, ignore = "qemu-user cannot set SO_MARK (ENOPROTOOPT)")]
    fn answered_rounds_report_rtt_and_a_device_change_restarts_probing() {
        let ns = Netns::new("lnk");
        let peer = Netns::new("lnk");
        veth(&ns, "w2", &peer, "w2");
        ns.ip(&["addr", "add", "10.202.0.2/24", "dev", "w2"]);
        peer.ip(&["addr", "add", "10.202.0.1/24", "dev", "w2"]);
        let mut link = link(Some("w2"), SOURCE);
        let outcomes = ns.enter(|| drive(&mut link, 3));
        assert!(
            outcomes.iter().all(|o| o.cause
                == Cause::Round {
                    answered: 1,
                    targets: 1,
                    loss_percent: 0
                }
                && !o.transition.changed()),
            "{outcomes:?}"
        );
        let status = LinkStatus::of(&link);
        assert!(status.rtt_us.is_some_and(|rtt| rtt > 0), "{status:?}");
        assert_eq!(link.problem, None);

        let now = Instant::now();
        let down = link.set_device(false, now).expect("a change");
        assert_eq!(
            down.events(),
            [FlushEvent::IfDown, FlushEvent::Disconnected]
        );
        assert_eq!((link.deadline(), link.poll_fd().is_none()), (None, true));
        assert_eq!(link.set_device(false, now), None, "no change, no outcome");
        let up = link.set_device(true, now).expect("a change");
        assert_eq!(up.events(), [FlushEvent::IfUp, FlushEvent::Connected]);
        assert_eq!(link.deadline(), Some(now), "probed again at once");
        let outcomes = ns.enter(|| drive(&mut link, 1));
        assert_eq!(outcomes.len(), 1, "the reopened socket probes");
    }
}
