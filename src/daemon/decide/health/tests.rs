//! Round-by-round tests of the health state machine.

use super::*;
use std::net::Ipv4Addr;

const GOOD: RoundSummary = RoundSummary {
    answered: 1,
    rtt: Some(Duration::from_millis(20)),
};
const BAD: RoundSummary = RoundSummary {
    answered: 0,
    rtt: None,
};

/// The loss of a round whose every target answered all requests, or none.
fn loss(round: &RoundSummary) -> u32 {
    if round.answered == 0 { 100 } else { 0 }
}

fn tracked() -> TrackConfig {
    TrackConfig {
        track_ip: vec![Ipv4Addr::new(172, 31, 255, 1).into()],
        ..TrackConfig::default()
    }
}

/// Feeds `rounds` and returns the state after each one.
fn run(health: &mut HealthMachine, rounds: &[RoundSummary]) -> Vec<Health> {
    rounds
        .iter()
        .map(|r| health.on_round(r, loss(r)).to)
        .collect()
}

#[test]
fn defaults_meet_the_documented_bounds() {
    let c = TrackConfig::default();
    assert!(c.timeout <= c.interval.min(c.recovery_interval));
    let mut h = HealthMachine::new(tracked(), true);
    h.on_round(&GOOD, 0);
    h.on_round(&BAD, 100);
    let wait = h.round_wait();
    assert_eq!(wait, FAILING_MIN_WAIT, "20 ms round trips");
    let detection = c.interval + c.timeout + c.failure_interval.max(wait) * (c.down - 1);
    assert_eq!(detection, Duration::from_millis(2600));
    assert!(detection < Duration::from_secs(3));
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
    let mut h = HealthMachine::new(tracked(), true);
    assert_eq!(h.state(), Health::Up);
    let states = run(&mut h, &[BAD, BAD]);
    assert_eq!(states, [Health::Failing, Health::Failing]);
    let t = h.on_round(&BAD, loss(&BAD));
    assert_eq!((t.from, t.to), (Health::Failing, Health::Down));
    assert!(t.changed() && t.usable_changed());
}

#[test]
fn comes_up_after_exactly_up_good_rounds() {
    let mut h = HealthMachine::new(
        TrackConfig {
            initial_up: false,
            ..tracked()
        },
        true,
    );
    assert_eq!(h.state(), Health::Down);
    let states = run(&mut h, &[GOOD, GOOD, GOOD, GOOD]);
    assert_eq!(states, [Health::Recovering; 4]);
    let t = h.on_round(&GOOD, loss(&GOOD));
    assert_eq!((t.from, t.to), (Health::Recovering, Health::Up));
    assert!(t.usable_changed());
}

#[test]
fn one_lost_round_in_many_never_takes_the_link_down() {
    let mut h = HealthMachine::new(tracked(), true);
    let mut pattern = Vec::new();
    for _ in 0..50 {
        pattern.extend([BAD, GOOD, GOOD]);
    }
    let states = run(&mut h, &pattern);
    assert!(states.iter().all(|s| s.is_usable()), "{states:?}");
    assert!(states.contains(&Health::Failing));
    assert_eq!(h.state(), Health::Up);
}

#[test]
fn bad_runs_shorter_than_down_do_not_add_up() {
    let mut h = HealthMachine::new(tracked(), true);
    let states = run(&mut h, &[BAD, BAD, GOOD, BAD, BAD, GOOD]);
    assert!(!states.contains(&Health::Down), "{states:?}");
}

#[test]
fn a_bad_round_while_recovering_starts_recovery_over() {
    let mut h = HealthMachine::new(
        TrackConfig {
            initial_up: false,
            ..tracked()
        },
        true,
    );
    let states = run(&mut h, &[GOOD, GOOD, GOOD, GOOD, BAD]);
    assert_eq!(states[4], Health::Down);
    let states = run(&mut h, &[GOOD, GOOD, GOOD, GOOD]);
    assert!(states.iter().all(|s| *s == Health::Recovering));
    assert_eq!(h.on_round(&GOOD, loss(&GOOD)).to, Health::Up);
}

#[test]
fn reliability_counts_answering_targets() {
    let mut h = HealthMachine::new(
        TrackConfig {
            track_ip: vec![
                Ipv4Addr::new(172, 31, 255, 1).into(),
                Ipv4Addr::new(172, 31, 255, 2).into(),
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
    assert_eq!(h.on_round(&two, 0).to, Health::Up);
    assert_eq!(h.on_round(&one, 0).to, Health::Down);
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
    let mut h = HealthMachine::new(config, true);
    let secs = |t: Transition| t.next_round.map(|d| d.as_secs());
    assert_eq!(h.next_round(), Some(Duration::from_secs(10)));
    assert_eq!(secs(h.on_round(&BAD, loss(&BAD))), Some(2)); // failing
    assert_eq!(secs(h.on_round(&BAD, loss(&BAD))), Some(10)); // down
    assert_eq!(secs(h.on_round(&BAD, loss(&BAD))), Some(10)); // still down
    assert_eq!(secs(h.on_round(&GOOD, loss(&GOOD))), Some(3)); // recovering
    assert_eq!(secs(h.on_round(&GOOD, loss(&GOOD))), Some(10)); // up
}

#[test]
fn unchanged_state_reports_no_change() {
    let mut h = HealthMachine::new(tracked(), true);
    let t = h.on_round(&GOOD, loss(&GOOD));
    assert!(!t.changed() && !t.usable_changed());
    h.on_round(&BAD, loss(&BAD));
    let t = h.on_round(&GOOD, loss(&GOOD));
    assert!(
        t.changed() && !t.usable_changed(),
        "failing -> up keeps the link in use"
    );
}

#[test]
fn untracked_link_follows_its_device() {
    let mut h = HealthMachine::new(TrackConfig::default(), false);
    assert_eq!(h.state(), Health::Down);
    assert_eq!(h.next_round(), None);
    let t = h.on_device(true);
    assert_eq!(
        (t.from, t.to, t.next_round),
        (Health::Down, Health::Up, None)
    );
    let t = h.on_device(false);
    assert_eq!(t.to, Health::Down);
    assert!(t.usable_changed());
}

#[test]
fn device_down_takes_a_tracked_link_down_and_stops_probing() {
    let mut h = HealthMachine::new(tracked(), true);
    h.on_round(&BAD, loss(&BAD));
    let t = h.on_device(false);
    assert_eq!(
        (t.from, t.to, t.next_round),
        (Health::Failing, Health::Down, None)
    );
    assert_eq!(
        h.on_round(&GOOD, loss(&GOOD)).to,
        Health::Down,
        "no rounds count while the device is down"
    );
    let t = h.on_device(true);
    assert_eq!(t.to, Health::Up, "initial_state applies again");
    assert_eq!(t.next_round, Some(Duration::from_secs(1)));
    assert_eq!(
        h.on_round(&BAD, loss(&BAD)).to,
        Health::Failing,
        "the old bad round was forgotten"
    );
}

#[test]
fn initial_down_device_up_starts_down() {
    let config = TrackConfig {
        initial_up: false,
        ..tracked()
    };
    let mut h = HealthMachine::new(config, false);
    assert_eq!(h.on_device(true).to, Health::Down);
}

#[test]
fn thresholds_of_one_switch_on_a_single_round() {
    let mut h = HealthMachine::new(
        TrackConfig {
            down: 1,
            up: 1,
            ..tracked()
        },
        true,
    );
    assert_eq!(
        run(&mut h, &[BAD, GOOD, BAD]),
        [Health::Down, Health::Up, Health::Down]
    );
}

#[test]
fn reconfigure_keeps_the_state_and_the_run_under_way() {
    let mut h = HealthMachine::new(tracked(), true);
    run(&mut h, &[BAD, BAD]);
    h.reconfigure(TrackConfig {
        interval: Duration::from_millis(500),
        ..tracked()
    });
    assert_eq!(h.state(), Health::Failing);
    assert_eq!(h.next_round(), Some(Duration::from_millis(300)));
    assert_eq!(
        h.on_round(&BAD, loss(&BAD)).to,
        Health::Down,
        "the third bad round in a row"
    );
    assert_eq!(h.next_round(), Some(Duration::from_millis(500)));

    h.reconfigure(TrackConfig::default());
    assert_eq!(h.state(), Health::Up, "untracked: follows the device");
    assert!(!h.is_tracked());
    assert_eq!(h.next_round(), None);
    h.on_device(false);
    h.reconfigure(tracked());
    assert_eq!(h.state(), Health::Down);
    assert!(!h.device_up());
}

#[test]
fn last_rtt_survives_lost_rounds() {
    let mut h = HealthMachine::new(tracked(), true);
    assert_eq!(h.last_rtt(), None);
    h.on_round(&GOOD, loss(&GOOD));
    h.on_round(&BAD, loss(&BAD));
    assert_eq!(h.last_rtt(), Some(Duration::from_millis(20)));
}

#[test]
fn quality_takes_a_slow_or_lossy_link_out_and_back_with_hysteresis() {
    let mut h = HealthMachine::new(
        TrackConfig {
            quality: Some(crate::config::track::Quality::default()),
            down: 2,
            up: 2,
            ..tracked()
        },
        true,
    );
    let slow = RoundSummary {
        answered: 1,
        rtt: Some(Duration::from_millis(1200)),
    };
    let fair = RoundSummary {
        answered: 1,
        rtt: Some(Duration::from_millis(700)),
    };
    assert_eq!(h.on_round(&fair, 0).to, Health::Up, "700 ms < 1000 ms");
    assert_eq!(h.on_round(&GOOD, 67).to, Health::Failing, "67% >= 40%");
    assert_eq!(h.on_round(&slow, 0).to, Health::Down);
    assert_eq!(
        h.on_round(&fair, 0).to,
        Health::Down,
        "700 ms is above recovery_latency"
    );
    assert_eq!(h.on_round(&GOOD, 33).to, Health::Down, "33% > 10%");
    assert_eq!(h.on_round(&GOOD, 0).to, Health::Recovering);
    assert_eq!(h.on_round(&GOOD, 0).to, Health::Up);
}

#[test]
fn window_averages_the_last_rounds() {
    let mut h = HealthMachine::new(tracked(), true);
    assert_eq!(h.window(), WindowFigures::default());
    h.on_round(&BAD, 100);
    let slow = RoundSummary {
        answered: 1,
        rtt: Some(Duration::from_millis(40)),
    };
    h.on_round(&slow, 50);
    h.on_round(&GOOD, 0);
    assert_eq!(
        h.window(),
        WindowFigures {
            rounds: 3,
            loss_percent: Some(50),
            rtt: Some(Duration::from_millis(30)),
        }
    );
    for _ in 0..WINDOW_ROUNDS {
        h.on_round(&GOOD, 0);
    }
    let w = h.window();
    assert_eq!(
        (w.rounds as usize, w.loss_percent),
        (WINDOW_ROUNDS, Some(0))
    );
}

#[test]
fn a_bad_confirmation_takes_a_usable_link_down_at_once() {
    let mut h = HealthMachine::new(tracked(), true);
    let t = h.on_confirmation(&GOOD);
    assert!(!t.changed(), "a good burst clears the suspicion");
    let t = h.on_confirmation(&BAD);
    assert_eq!((t.from, t.to), (Health::Up, Health::Down));
    assert!(t.usable_changed());
    assert_eq!(h.on_confirmation(&BAD).to, Health::Down);
    let states = run(&mut h, &[GOOD; 5]);
    assert_eq!(states[4], Health::Up, "recovers by rounds as usual");
}
