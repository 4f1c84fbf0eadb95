//! One enabled interface at run time: its health, its probe socket, the round in flight and
//! when the next one starts.
//!
//! The daemon's loop only asks each link when it next needs attention ([`Link::deadline`])
//! and which socket to watch ([`Link::poll_fd`]), then lets it move on ([`Link::advance`]);
//! everything a link learns comes back as an [`Outcome`] for the loop to act on.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::health::{LinkHealth, RoundSummary, TrackConfig, Transition};
use super::log;
use super::probe::{LinkRoute, Prober, Round, RoundReport};
use super::status::LinkStatus;
use crate::config::FlushEvent;

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
            Cause::Round { .. } => {}
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
pub struct Link {
    /// The interface section name.
    pub name: String,
    /// Index into `Config::interfaces`.
    pub index: usize,
    /// Mark, device and source the probes go out with.
    pub route: LinkRoute,
    pub flush_conntrack: Vec<FlushEvent>,
    track: TrackConfig,
    health: LinkHealth,
    prober: Option<Prober>,
    /// The round in flight and when it started.
    round: Option<(Instant, Round)>,
    next_start: Option<Instant>,
    last_loss: Option<u32>,
    last_change: SystemTime,
    /// Why probing last failed to run, so each new reason is logged once, not every round.
    problem: Option<String>,
}

impl Link {
    /// A link starting to be tracked now, per `initial_state` when its device is up.
    pub fn new(
        index: usize,
        route: LinkRoute,
        track: TrackConfig,
        flush_conntrack: Vec<FlushEvent>,
        device_up: bool,
    ) -> Link {
        let health = LinkHealth::new(track.clone(), device_up);
        Link {
            name: route.name.clone(),
            index,
            route,
            flush_conntrack,
            next_start: health.next_round().map(|_| Instant::now()),
            track,
            health,
            prober: None,
            round: None,
            last_loss: None,
            last_change: SystemTime::now(),
            problem: None,
        }
    }

    /// Takes over what `old` (the same interface before a reload) learned: state, counts,
    /// last measurements. Probing starts afresh with the new options.
    pub fn inherit(&mut self, old: &Link) {
        self.health = old.health.clone();
        self.health.reconfigure(self.track.clone());
        self.last_loss = old.last_loss;
        self.last_change = old.last_change;
        self.next_start = self.health.next_round().map(|_| Instant::now());
    }

    /// Whether new connections may use the link.
    pub fn usable(&self) -> bool {
        self.health.state().is_usable()
    }

    /// Whether the link's device is up, as last fed.
    pub fn device_up(&self) -> bool {
        self.health.device_up()
    }

    /// Feeds the device's state; a device that comes back gets a new probe socket (it may be
    /// a new device with the same name) and is probed at once.
    pub fn set_device(&mut self, up: bool, now: Instant) -> Option<Outcome> {
        if up == self.health.device_up() {
            return None;
        }
        let transition = self.health.on_device(up);
        self.prober = None;
        self.round = None;
        self.next_start = transition.next_round.map(|_| now);
        Some(self.record(transition, Cause::Device(up)))
    }

    /// When the link next needs [`Link::advance`]: its round's deadline, or the start of the
    /// next round; `None` while it is not probed.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.round {
            Some((_, round)) => Some(round.deadline()),
            None => self.next_start,
        }
    }

    /// The socket to watch while a round is in flight.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.round.as_ref()?;
        self.prober.as_ref().map(|p| p.as_fd())
    }

    /// Takes replies (when the socket is `readable`), ends a round that is answered or
    /// overdue, starts one that is due.
    pub fn advance(&mut self, now: Instant, readable: bool) -> Option<Outcome> {
        if let Some((started, mut round)) = self.round.take() {
            let mut failed = false;
            if let (true, Some(prober)) = (readable, self.prober.as_mut()) {
                if let Err(e) = prober.receive(&mut round) {
                    self.note_problem(Some(e.to_string()));
                    self.prober = None;
                    failed = true;
                }
            }
            if failed || round.is_complete() || now >= round.deadline() {
                return Some(self.conclude(started, &round.finish(), now));
            }
            self.round = Some((started, round));
            return None;
        }
        if self.next_start.is_none_or(|due| due > now) {
            return None;
        }
        self.start(now)
    }

    /// What status.json says about the link.
    pub fn status(&self) -> LinkStatus {
        LinkStatus {
            interface: self.name.clone(),
            device: self.route.device.clone(),
            state: self.health.state().as_str().to_string(),
            usable: self.usable(),
            tracked: self.health.is_tracked(),
            rtt_ms: self
                .health
                .last_rtt()
                .map(|rtt| (rtt.as_secs_f64() * 1e6).round() / 1e3),
            loss_percent: self.last_loss,
            last_change: self
                .last_change
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Sends a round; a socket that cannot be opened (the source address is not on the
    /// device yet, say) or requests that cannot be sent make a lost round at once, so a link
    /// that cannot be probed goes down like one that does not answer.
    fn start(&mut self, now: Instant) -> Option<Outcome> {
        if self.prober.is_none() {
            match Prober::open(&self.route, &self.track) {
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
        let round = self.prober.as_mut()?.start();
        if round.is_complete() {
            return Some(self.conclude(now, &round.finish(), now));
        }
        self.round = Some((now, round));
        None
    }

    /// Feeds a finished round to health and schedules the next one.
    fn conclude(&mut self, started: Instant, report: &RoundReport, now: Instant) -> Outcome {
        if self.prober.is_some() {
            let send_error = report.targets.iter().find_map(|t| {
                t.send_error
                    .map(|e| format!("sending to {}: {e}", t.target))
            });
            self.note_problem(send_error);
        }
        let summary: RoundSummary = report.summary();
        let requests = u64::from(self.track.count) * self.track.track_ip.len() as u64;
        let received: u64 = report.targets.iter().map(|t| u64::from(t.received)).sum();
        let lost = requests.saturating_sub(received);
        let loss_percent = match requests {
            0 => 100,
            n => u32::try_from((lost * 100 + n / 2) / n).unwrap_or(100),
        };
        let transition = self.health.on_round(&summary);
        self.last_loss = Some(loss_percent);
        self.next_start = transition
            .next_round
            .map(|delay| (started + delay).max(now));
        self.record(
            transition,
            Cause::Round {
                answered: summary.answered,
                targets: u32::try_from(self.track.track_ip.len()).unwrap_or(u32::MAX),
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
                log(&format!("{}: cannot probe: {text}", self.name));
            }
        }
        self.problem = problem;
    }
}
