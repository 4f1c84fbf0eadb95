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
//!   answered or when `timeout` has passed.
//! - `interval`, `failure_interval`, `recovery_interval`: time from the start of one round to
//!   the start of the next while the link is up or down, failing, and recovering. A round never
//!   overlaps the previous one, so a lost round lasts `timeout` and the period is really
//!   `max(delay, round duration)`.
//! - `down`: consecutive bad rounds that take a link down; `up`: consecutive good rounds that
//!   bring it back. One good round while failing, or one bad round while recovering, resets
//!   the count.
//! - `initial_state`: whether a link starts up (new connections use it at once) or down (it
//!   must first pass `up` good rounds).
//!
//! # States
//!
//! `Up` and `Failing` carry new connections; `Down` and `Recovering` do not. Only a move
//! between those two groups changes the ruleset, see [`Transition::usable_changed`].
//!
//! # Defaults and their arithmetic
//!
//! `interval = failure_interval = recovery_interval = 1 s`, `timeout = 1 s`, `count = 3`,
//! `reliability = 1`, `down = 3`, `up = 5`. With `timeout` no longer than any interval, a round
//! always finishes before the next one is due, so rounds start exactly one interval apart.
//!
//! - **Detection of a silent total failure: at most 4 s.** Worst case, the last good round got
//!   its replies just before the failure at `t0`. The next round starts at most `interval`
//!   later and is lost, as are the two after it (one `failure_interval` apart); the third lost
//!   round reports at its `timeout`:
//!   `interval + (down - 1) * max(failure_interval, timeout) + timeout = 1 + 2 + 1 = 4 s`.
//!   Best case (the failure swallows the replies of a round already in flight): 3 s.
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

use std::net::IpAddr;
use std::time::Duration;

/// The typed tracking options of one link, built by the config layer; the defaults are the
/// ones whose detection and recovery bounds the module documentation works out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    pub track_ip: Vec<IpAddr>,
    pub reliability: u32,
    pub count: u32,
    pub timeout: Duration,
    pub interval: Duration,
    pub failure_interval: Duration,
    pub recovery_interval: Duration,
    pub down: u32,
    pub up: u32,
    pub initial_up: bool,
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            track_ip: Vec::new(),
            reliability: 1,
            count: 3,
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            failure_interval: Duration::from_secs(1),
            recovery_interval: Duration::from_secs(1),
            down: 3,
            up: 5,
            initial_up: true,
        }
    }
}

/// Where a link stands; the two intermediate states let the daemon probe faster or slower
/// while a change is being confirmed, and let status show that one is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Healthy: carries new connections.
    Up,
    /// Some consecutive rounds were bad, fewer than `down`: still carries new connections.
    Failing,
    /// Dead (or its device is down): carries no new connections.
    Down,
    /// Some consecutive rounds were good, fewer than `up`: still carries no new connections.
    Recovering,
}

impl LinkState {
    /// Whether new connections may be sent over the link in this state.
    pub fn is_usable(self) -> bool {
        matches!(self, LinkState::Up | LinkState::Failing)
    }

    /// The lowercase name used in logs, hook arguments and status.json.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Failing => "failing",
            LinkState::Down => "down",
            LinkState::Recovering => "recovering",
        }
    }
}

/// What one probe round saw, reduced to what health decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundSummary {
    /// Targets that answered at least one request.
    pub answered: u32,
    /// Mean round-trip time over the targets that answered, if any did.
    pub rtt: Option<Duration>,
}

/// The effect of one input on a link, so the caller can log, update rules and schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: LinkState,
    pub to: LinkState,
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

/// The health of one link: its state and the run of consecutive rounds that may change it.
#[derive(Debug, Clone)]
pub struct LinkHealth {
    config: TrackConfig,
    state: LinkState,
    device_up: bool,
    /// Consecutive bad rounds while `Failing`, consecutive good rounds while `Recovering`.
    streak: u32,
    last_rtt: Option<Duration>,
}

impl LinkHealth {
    /// A link as it stands when tracking starts: per `initial_state` if its device is up.
    pub fn new(config: TrackConfig, device_up: bool) -> Self {
        let mut health = LinkHealth {
            config,
            state: LinkState::Down,
            device_up: false,
            streak: 0,
            last_rtt: None,
        };
        health.on_device(device_up);
        health
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Whether the link's device is up, as last fed by [`LinkHealth::on_device`].
    pub fn device_up(&self) -> bool {
        self.device_up
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
                LinkState::Up
            } else {
                LinkState::Down
            };
        }
    }

    /// The round-trip time of the last round that got replies, for status.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// The delay between round starts in the current state; `None` when the link is not
    /// probed.
    pub fn next_round(&self) -> Option<Duration> {
        if !self.device_up || !self.is_tracked() {
            return None;
        }
        Some(match self.state {
            LinkState::Up | LinkState::Down => self.config.interval,
            LinkState::Failing => self.config.failure_interval,
            LinkState::Recovering => self.config.recovery_interval,
        })
    }

    /// Feeds the result of one probe round.
    pub fn on_round(&mut self, round: &RoundSummary) -> Transition {
        let from = self.state;
        if self.device_up {
            if round.rtt.is_some() {
                self.last_rtt = round.rtt;
            }
            let good = round.answered >= self.config.reliability;
            self.state = match (self.state, good) {
                (LinkState::Up | LinkState::Failing, true) => LinkState::Up,
                (LinkState::Up | LinkState::Failing, false) => {
                    self.bump(self.config.down, LinkState::Down, LinkState::Failing)
                }
                (LinkState::Down | LinkState::Recovering, true) => {
                    self.bump(self.config.up, LinkState::Up, LinkState::Recovering)
                }
                (LinkState::Down | LinkState::Recovering, false) => LinkState::Down,
            };
            if !matches!(self.state, LinkState::Failing | LinkState::Recovering) {
                self.streak = 0;
            }
        }
        self.transition(from)
    }

    /// Feeds the device's carrier state: a device going down takes the link down at once, a
    /// device coming up starts tracking afresh (an untracked link is simply up).
    pub fn on_device(&mut self, up: bool) -> Transition {
        let from = self.state;
        if up != self.device_up {
            self.device_up = up;
            self.streak = 0;
            self.state = if up && (self.config.initial_up || !self.is_tracked()) {
                LinkState::Up
            } else {
                LinkState::Down
            };
        }
        self.transition(from)
    }

    /// Counts one more round in the current run: `done` once `threshold` is reached (a
    /// threshold of 0 behaves as 1), `pending` before that.
    fn bump(&mut self, threshold: u32, done: LinkState, pending: LinkState) -> LinkState {
        let in_run = matches!(self.state, LinkState::Failing | LinkState::Recovering);
        self.streak = if in_run { self.streak + 1 } else { 1 };
        if self.streak >= threshold {
            done
        } else {
            pending
        }
    }

    fn transition(&self, from: LinkState) -> Transition {
        Transition {
            from,
            to: self.state,
            next_round: self.next_round(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: RoundSummary = RoundSummary {
        answered: 1,
        rtt: Some(Duration::from_millis(20)),
    };
    const BAD: RoundSummary = RoundSummary {
        answered: 0,
        rtt: None,
    };

    fn tracked() -> TrackConfig {
        TrackConfig {
            track_ip: vec![std::net::Ipv4Addr::new(172, 31, 255, 1).into()],
            ..TrackConfig::default()
        }
    }

    /// Feeds `rounds` and returns the state after each one.
    fn run(health: &mut LinkHealth, rounds: &[RoundSummary]) -> Vec<LinkState> {
        rounds.iter().map(|r| health.on_round(r).to).collect()
    }

    #[test]
    fn defaults_meet_the_documented_bounds() {
        let c = TrackConfig::default();
        assert!(c.timeout <= c.interval.min(c.failure_interval).min(c.recovery_interval));
        let detection = c.interval + c.failure_interval.max(c.timeout) * (c.down - 1) + c.timeout;
        assert_eq!(detection, Duration::from_secs(4));
        assert!(detection <= Duration::from_secs(5));
        let recovery = c.interval.max(c.timeout) + c.recovery_interval * (c.up - 1);
        assert_eq!(recovery, Duration::from_secs(5));
        assert!(recovery < Duration::from_secs(10));
        assert!(
            c.count >= 2,
            "a single lost probe must not make a round bad"
        );
    }

    #[test]
    fn goes_down_after_exactly_down_bad_rounds() {
        let mut h = LinkHealth::new(tracked(), true);
        assert_eq!(h.state(), LinkState::Up);
        let states = run(&mut h, &[BAD, BAD]);
        assert_eq!(states, [LinkState::Failing, LinkState::Failing]);
        let t = h.on_round(&BAD);
        assert_eq!((t.from, t.to), (LinkState::Failing, LinkState::Down));
        assert!(t.changed() && t.usable_changed());
    }

    #[test]
    fn comes_up_after_exactly_up_good_rounds() {
        let mut h = LinkHealth::new(
            TrackConfig {
                initial_up: false,
                ..tracked()
            },
            true,
        );
        assert_eq!(h.state(), LinkState::Down);
        let states = run(&mut h, &[GOOD, GOOD, GOOD, GOOD]);
        assert_eq!(states, [LinkState::Recovering; 4]);
        let t = h.on_round(&GOOD);
        assert_eq!((t.from, t.to), (LinkState::Recovering, LinkState::Up));
        assert!(t.usable_changed());
    }

    #[test]
    fn one_lost_round_in_many_never_takes_the_link_down() {
        let mut h = LinkHealth::new(tracked(), true);
        let mut pattern = Vec::new();
        for _ in 0..50 {
            pattern.extend([BAD, GOOD, GOOD]);
        }
        let states = run(&mut h, &pattern);
        assert!(states.iter().all(|s| s.is_usable()), "{states:?}");
        assert!(states.contains(&LinkState::Failing));
        assert_eq!(h.state(), LinkState::Up);
    }

    #[test]
    fn bad_runs_shorter_than_down_do_not_add_up() {
        let mut h = LinkHealth::new(tracked(), true);
        let states = run(&mut h, &[BAD, BAD, GOOD, BAD, BAD, GOOD]);
        assert!(!states.contains(&LinkState::Down), "{states:?}");
    }

    #[test]
    fn a_bad_round_while_recovering_starts_recovery_over() {
        let mut h = LinkHealth::new(
            TrackConfig {
                initial_up: false,
                ..tracked()
            },
            true,
        );
        let states = run(&mut h, &[GOOD, GOOD, GOOD, GOOD, BAD]);
        assert_eq!(states[4], LinkState::Down);
        let states = run(&mut h, &[GOOD, GOOD, GOOD, GOOD]);
        assert!(states.iter().all(|s| *s == LinkState::Recovering));
        assert_eq!(h.on_round(&GOOD).to, LinkState::Up);
    }

    #[test]
    fn reliability_counts_answering_targets() {
        let mut h = LinkHealth::new(
            TrackConfig {
                track_ip: vec![
                    std::net::Ipv4Addr::new(172, 31, 255, 1).into(),
                    std::net::Ipv4Addr::new(172, 31, 255, 2).into(),
                ],
                reliability: 2,
                down: 1,
                ..TrackConfig::default()
            },
            true,
        );
        let one = RoundSummary {
            answered: 1,
            ..GOOD
        };
        let two = RoundSummary {
            answered: 2,
            ..GOOD
        };
        assert_eq!(h.on_round(&two).to, LinkState::Up);
        assert_eq!(h.on_round(&one).to, LinkState::Down);
    }

    #[test]
    fn intervals_follow_the_state() {
        let config = TrackConfig {
            interval: Duration::from_secs(10),
            failure_interval: Duration::from_secs(2),
            recovery_interval: Duration::from_secs(3),
            down: 2,
            up: 2,
            ..tracked()
        };
        let mut h = LinkHealth::new(config, true);
        let secs = |t: Transition| t.next_round.map(|d| d.as_secs());
        assert_eq!(h.next_round(), Some(Duration::from_secs(10)));
        assert_eq!(secs(h.on_round(&BAD)), Some(2)); // failing
        assert_eq!(secs(h.on_round(&BAD)), Some(10)); // down
        assert_eq!(secs(h.on_round(&BAD)), Some(10)); // still down
        assert_eq!(secs(h.on_round(&GOOD)), Some(3)); // recovering
        assert_eq!(secs(h.on_round(&GOOD)), Some(10)); // up
    }

    #[test]
    fn unchanged_state_reports_no_change() {
        let mut h = LinkHealth::new(tracked(), true);
        let t = h.on_round(&GOOD);
        assert!(!t.changed() && !t.usable_changed());
        h.on_round(&BAD);
        let t = h.on_round(&GOOD);
        assert!(
            t.changed() && !t.usable_changed(),
            "failing -> up keeps the link in use"
        );
    }

    #[test]
    fn untracked_link_follows_its_device() {
        let mut h = LinkHealth::new(TrackConfig::default(), false);
        assert_eq!(h.state(), LinkState::Down);
        assert_eq!(h.next_round(), None);
        let t = h.on_device(true);
        assert_eq!(
            (t.from, t.to, t.next_round),
            (LinkState::Down, LinkState::Up, None)
        );
        let t = h.on_device(false);
        assert_eq!(t.to, LinkState::Down);
        assert!(t.usable_changed());
    }

    #[test]
    fn device_down_takes_a_tracked_link_down_and_stops_probing() {
        let mut h = LinkHealth::new(tracked(), true);
        h.on_round(&BAD);
        let t = h.on_device(false);
        assert_eq!(
            (t.from, t.to, t.next_round),
            (LinkState::Failing, LinkState::Down, None)
        );
        assert_eq!(
            h.on_round(&GOOD).to,
            LinkState::Down,
            "no rounds count while the device is down"
        );
        let t = h.on_device(true);
        assert_eq!(t.to, LinkState::Up, "initial_state applies again");
        assert_eq!(t.next_round, Some(Duration::from_secs(1)));
        assert_eq!(
            h.on_round(&BAD).to,
            LinkState::Failing,
            "the old bad round was forgotten"
        );
    }

    #[test]
    fn initial_down_device_up_starts_down() {
        let config = TrackConfig {
            initial_up: false,
            ..tracked()
        };
        let mut h = LinkHealth::new(config, false);
        assert_eq!(h.on_device(true).to, LinkState::Down);
    }

    #[test]
    fn thresholds_of_one_switch_on_a_single_round() {
        let mut h = LinkHealth::new(
            TrackConfig {
                down: 1,
                up: 1,
                ..tracked()
            },
            true,
        );
        assert_eq!(
            run(&mut h, &[BAD, GOOD, BAD]),
            [LinkState::Down, LinkState::Up, LinkState::Down]
        );
    }

    #[test]
    fn reconfigure_keeps_the_state_and_the_run_under_way() {
        let mut h = LinkHealth::new(tracked(), true);
        run(&mut h, &[BAD, BAD]);
        h.reconfigure(TrackConfig {
            interval: Duration::from_millis(500),
            ..tracked()
        });
        assert_eq!(h.state(), LinkState::Failing);
        assert_eq!(h.next_round(), Some(Duration::from_secs(1)));
        assert_eq!(
            h.on_round(&BAD).to,
            LinkState::Down,
            "the third bad round in a row"
        );
        assert_eq!(h.next_round(), Some(Duration::from_millis(500)));

        h.reconfigure(TrackConfig::default());
        assert_eq!(h.state(), LinkState::Up, "untracked: follows the device");
        assert!(!h.is_tracked());
        assert_eq!(h.next_round(), None);
        h.on_device(false);
        h.reconfigure(tracked());
        assert_eq!(h.state(), LinkState::Down);
        assert!(!h.device_up());
    }

    #[test]
    fn last_rtt_survives_lost_rounds() {
        let mut h = LinkHealth::new(tracked(), true);
        assert_eq!(h.last_rtt(), None);
        h.on_round(&GOOD);
        h.on_round(&BAD);
        assert_eq!(h.last_rtt(), Some(Duration::from_millis(20)));
    }
}
