//! Link health as a pure state machine: probe rounds in, link state and the next round's delay
//! out.
//!
//! Keeping the decisions free of sockets and clocks lets every threshold be tested exactly,
//! round by round, and lets the daemon drive any number of links from one loop.
//!
//! # Options (mwan3's words and meanings)
//!
//! - `track_ip`: targets probed each round. A link without targets is not probed: it is up
//!   while its device is up.
//! - `count`: echo requests sent to each target per round. A target *answers* a round when at
//!   least one of its requests gets a reply.
//! - `reliability`: targets that must answer for the round to be *good*.
//! - `timeout`: how long a round waits for replies. A round ends when every request has been
//!   answered or when `timeout` has passed. A round while `Failing` waits only three times the
//!   link's recent round-trip time (at least [`FAILING_MIN_WAIT`], at most `timeout`): the link
//!   answered that fast until just now, so a longer wait only delays the verdict.
//! - `interval`, `failure_interval`, `recovery_interval`: time from the start of one round to
//!   the start of the next while the link is up or down, failing, and recovering. A round never
//!   overlaps the previous one, so a lost round lasts `timeout` and the period is really
//!   `max(delay, round duration)`.
//! - `down`: consecutive bad rounds that take a link down; `up`: consecutive good rounds that
//!   bring it back. One good round while failing, or one bad round while recovering, resets
//!   the count.
//! - `initial_state`: whether a link starts up (new connections use it at once) or down (it
//!   must first pass `up` good rounds).
//! - `check_quality` with `failure_latency`, `recovery_latency`, `failure_loss`,
//!   `recovery_loss`: a round with enough answering targets is still bad when its mean
//!   round-trip time or its loss reaches the failure threshold (while the link is in use), or
//!   exceeds the recovery threshold (while it is not), so a link that answers but is useless
//!   (90% loss, seconds of latency) leaves the balancing, and one at the edge does not flap.
//! - `passive`: a confirmation burst (see `daemon::passive`) that gets no good answer takes a
//!   usable link down at once, without waiting for `down` rounds.
//!
//! # States
//!
//! `Up` and `Failing` carry new connections; `Down` and `Recovering` do not. Only a move
//! between those two groups changes the ruleset, see [`Transition::usable_changed`].
//!
//! # Defaults and their arithmetic
//!
//! `interval = recovery_interval = 1 s`, `failure_interval = 0.3 s`, `timeout = 1 s`,
//! `count = 3`, `reliability = 1`, `down = 3`, `up = 5`. With `timeout` no longer than
//! `interval` and `recovery_interval`, a round always finishes before the next one is due.
//!
//! - **Detection of a silent total failure: at most 2.6 s** (on a link whose round-trip time
//!   is under 100 ms; `wait` below is three times it, at least 0.3 s). Worst case, the last
//!   good round got its replies just before the failure at `t0`. The next round starts at most
//!   `interval` later and is lost after `timeout`; the two after it follow one
//!   `max(failure_interval, wait)` apart and are lost too:
//!   `interval + timeout + (down - 1) * max(failure_interval, wait) = 1 + 1 + 0.6 = 2.6 s`.
//!   Best case (the failure swallows the replies of a round already in flight): 1.6 s. With
//!   passive health a link the LAN is using goes in under a second (see `daemon::passive`).
//! - **Recovery: at most 5 s plus one round-trip time.** Worst case, the round running when
//!   the link heals is still lost. The next one starts at most `max(interval, timeout)` later
//!   and is good, then `up - 1` more good rounds follow one `recovery_interval` apart, and the
//!   last reports after one round trip:
//!   `max(interval, timeout) + (up - 1) * recovery_interval + rtt = 1 + 4 + rtt`.
//! - **No flapping on lost probes.** A round is bad only when all `count` requests to a target
//!   are lost, so one lost probe never even makes a link `Failing`. With random loss `p` per
//!   round trip, a round is bad with probability `q = p^count` (one target) and a false `Down`
//!   needs `down` bad rounds in a row, about `q^down` per round. For 20% loss each way,
//!   `p = 1 - 0.8^2 = 0.36`, `q = 0.047` and `q^3 = 1.0e-4`: one false down in about 2.7 hours
//!   of such a link, and none in practice with a second target (`q = p^6`, `q^3 = 1e-8`).
//!   With `count = 1` the same link would go down about every 20 s.
//!
//! A `timeout` of 1 s assumes round-trip times well below it; on a link whose latency under
//! load exceeds that (a bloated buffer, a satellite hop), raise `timeout` and the intervals
//! with it, and the bounds above grow by the same arithmetic.

use std::collections::VecDeque;
use std::time::Duration;

pub use crate::config::track::TrackConfig;
pub use crate::daemon::watch::probe::RoundSummary;

/// The shortest a round waits for replies while the link is failing.
pub const FAILING_MIN_WAIT: Duration = Duration::from_millis(300);

/// Rounds the status figures (`window_loss_percent`, `window_rtt_us`) average over.
pub const WINDOW_ROUNDS: usize = 10;

/// Where a link stands; the two intermediate states let the daemon probe faster or slower
/// while a change is being confirmed, and let status show that one is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Healthy: carries new connections.
    Up,
    /// Some consecutive rounds were bad, fewer than `down`: still carries new connections.
    Failing,
    /// Dead (or its device is down): carries no new connections.
    Down,
    /// Some consecutive rounds were good, fewer than `up`: still carries no new connections.
    Recovering,
}

impl Health {
    /// Whether new connections may be sent over the link in this state.
    pub fn is_usable(self) -> bool {
        matches!(self, Health::Up | Health::Failing)
    }

    /// The lowercase name used in logs, hook arguments and status.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Failing => "failing",
            Health::Down => "down",
            Health::Recovering => "recovering",
        }
    }
}

/// The effect of one input on a link, so the caller can log, update rules and schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    /// Delay from the start of the round just evaluated (from now, after a device change) to
    /// the start of the next one; `None` when the link is not probed (no targets, or its
    /// device is down).
    pub next_round: Option<Duration>,
}

impl Transition {
    /// Whether the state moved at all (worth a log line and a status update).
    pub fn changed(&self) -> bool {
        self.from != self.to
    }

    /// Whether the link entered or left the set of links that carry new connections, the
    /// only kind of change that touches the ruleset.
    pub fn usable_changed(&self) -> bool {
        self.from.is_usable() != self.to.is_usable()
    }
}

/// Loss and latency over the last [`WINDOW_ROUNDS`] rounds, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowFigures {
    /// Rounds in the window (fewer than [`WINDOW_ROUNDS`] just after tracking started).
    pub rounds: u32,
    /// Mean of the rounds' loss percentages.
    pub loss_percent: Option<u32>,
    /// Mean round-trip time of the rounds that got replies.
    pub rtt: Option<Duration>,
}

/// The health of one link: its state and the run of consecutive rounds that may change it.
#[derive(Debug, Clone)]
pub struct HealthMachine {
    config: TrackConfig,
    state: Health,
    device_up: bool,
    /// Consecutive bad rounds while `Failing`, consecutive good rounds while `Recovering`.
    streak: u32,
    last_rtt: Option<Duration>,
    /// (loss percent, mean rtt) of the last [`WINDOW_ROUNDS`] rounds, oldest first.
    window: VecDeque<(u32, Option<Duration>)>,
}

impl HealthMachine {
    /// A link as it stands when tracking starts: per `initial_state` if its device is up.
    pub fn new(config: TrackConfig, device_up: bool) -> Self {
        let mut health = HealthMachine {
            config,
            state: Health::Down,
            device_up: false,
            streak: 0,
            last_rtt: None,
            window: VecDeque::with_capacity(WINDOW_ROUNDS),
        };
        health.on_device(device_up);
        health
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Whether the link's device is up, as last fed by [`HealthMachine::on_device`].
    pub fn device_up(&self) -> bool {
        self.device_up
    }

    /// The link's tracking options (targets, counts, timings), kept here only.
    pub fn track(&self) -> &TrackConfig {
        &self.config
    }

    /// Whether the link is probed at all (it has targets).
    pub fn is_tracked(&self) -> bool {
        !self.config.track_ip.is_empty()
    }

    /// Takes new options (a config reload) but keeps what was learned: the state and the run
    /// under way. A link that no longer has targets follows its device from now on.
    pub fn reconfigure(&mut self, config: TrackConfig) {
        self.config = config;
        if !self.is_tracked() {
            self.streak = 0;
            self.state = if self.device_up {
                Health::Up
            } else {
                Health::Down
            };
        }
    }

    /// The round-trip time of the last round that got replies, for status.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// Loss and latency over the last [`WINDOW_ROUNDS`] rounds.
    pub fn window(&self) -> WindowFigures {
        let rounds = self.window.len() as u32;
        let rtts: Vec<Duration> = self.window.iter().filter_map(|(_, rtt)| *rtt).collect();
        WindowFigures {
            rounds,
            loss_percent: (rounds > 0)
                .then(|| self.window.iter().map(|(loss, _)| loss).sum::<u32>() / rounds),
            rtt: (!rtts.is_empty()).then(|| rtts.iter().sum::<Duration>() / rtts.len() as u32),
        }
    }

    /// How long the next round waits for replies: `timeout`, or while failing three times the
    /// recent round-trip time within [`FAILING_MIN_WAIT`]..`timeout`.
    pub fn round_wait(&self) -> Duration {
        match (self.state, self.window().rtt) {
            (Health::Failing, Some(rtt)) => {
                (rtt * 3).max(FAILING_MIN_WAIT).min(self.config.timeout)
            }
            _ => self.config.timeout,
        }
    }

    /// The delay between round starts in the current state; `None` when the link is not
    /// probed.
    pub fn next_round(&self) -> Option<Duration> {
        if !self.device_up || !self.is_tracked() {
            return None;
        }
        Some(match self.state {
            Health::Up | Health::Down => self.config.interval,
            Health::Failing => self.config.failure_interval,
            Health::Recovering => self.config.recovery_interval,
        })
    }

    /// Feeds the result of one probe round, with the percentage of its requests lost.
    pub fn on_round(&mut self, round: &RoundSummary, loss_percent: u32) -> Transition {
        let from = self.state;
        if self.device_up {
            if round.rtt.is_some() {
                self.last_rtt = round.rtt;
            }
            if self.window.len() == WINDOW_ROUNDS {
                self.window.pop_front();
            }
            self.window.push_back((loss_percent, round.rtt));
            let good = self.is_good(round, loss_percent);
            self.state = match (self.state, good) {
                (Health::Up | Health::Failing, true) => Health::Up,
                (Health::Up | Health::Failing, false) => {
                    self.bump(self.config.down, Health::Down, Health::Failing)
                }
                (Health::Down | Health::Recovering, true) => {
                    self.bump(self.config.up, Health::Up, Health::Recovering)
                }
                (Health::Down | Health::Recovering, false) => Health::Down,
            };
            if !matches!(self.state, Health::Failing | Health::Recovering) {
                self.streak = 0;
            }
        }
        self.transition(from)
    }

    /// Feeds the result of a confirmation burst (passive health suspects the link): a usable
    /// link whose burst is bad goes down at once; a good burst changes nothing.
    pub fn on_confirmation(&mut self, burst: &RoundSummary) -> Transition {
        let from = self.state;
        if self.device_up && self.state.is_usable() && burst.answered < self.config.reliability {
            self.state = Health::Down;
            self.streak = 0;
        }
        self.transition(from)
    }

    /// Whether a round counts as good: enough targets answered and, with `check_quality`, its
    /// latency and loss within the thresholds of the link's side (in use or not).
    fn is_good(&self, round: &RoundSummary, loss_percent: u32) -> bool {
        if round.answered < self.config.reliability {
            return false;
        }
        let Some(q) = self.config.quality else {
            return true;
        };
        let rtt = round.rtt.unwrap_or_default();
        if self.state.is_usable() {
            rtt < q.failure_latency && loss_percent < q.failure_loss
        } else {
            rtt <= q.recovery_latency && loss_percent <= q.recovery_loss
        }
    }

    /// Feeds the device's carrier state: a device going down takes the link down at once, a
    /// device coming up starts tracking afresh (an untracked link is simply up).
    pub fn on_device(&mut self, up: bool) -> Transition {
        let from = self.state;
        if up != self.device_up {
            self.device_up = up;
            self.streak = 0;
            self.state = if up && (self.config.initial_up || !self.is_tracked()) {
                Health::Up
            } else {
                Health::Down
            };
        }
        self.transition(from)
    }

    /// Counts one more round in the current run: `done` once `threshold` is reached (a
    /// threshold of 0 behaves as 1), `pending` before that.
    fn bump(&mut self, threshold: u32, done: Health, pending: Health) -> Health {
        let in_run = matches!(self.state, Health::Failing | Health::Recovering);
        self.streak = if in_run { self.streak + 1 } else { 1 };
        if self.streak >= threshold {
            done
        } else {
            pending
        }
    }

    fn transition(&self, from: Health) -> Transition {
        Transition {
            from,
            to: self.state,
            next_round: self.next_round(),
        }
    }
}

#[cfg(test)]
mod tests;
