//! Rule updates after a state change: how much of the ruleset a batch of link outcomes asks to
//! rewrite, what is still owed after a failed update and when to try again, and the link
//! states the plan is built from. Pure decisions; [`bring_up_to_date`] carries them out.
//!
//! A change of a link's usability rewrites only the policy chains, in one small transaction.
//! A device that comes or goes re-applies everything (apply never removes what is still
//! wanted, so there is no gap), and so does a failed policy update. Routes and ip rules stay
//! when tracking takes a link out: its pinned connections then fail fast on their own link
//! instead of leaking out of another one with the wrong source address.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::apply::{self, Backend};
use crate::config::Config;
use crate::daemon::decide::link::{Cause, Outcome, TrackedLink};
use crate::daemon::log_error;
use crate::error::Result;
use crate::plan::Plan;
use crate::source::LinkState;

/// How long to wait before trying again when the rules could not be brought up to date.
pub const RULES_RETRY: Duration = Duration::from_secs(5);

/// How much of the ruleset has to be rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RulesUpdate {
    Nothing,
    Policies,
    Everything,
}

impl RulesUpdate {
    /// What one outcome asks for: everything when a device came or went, the policy chains
    /// when the link entered or left use, nothing otherwise.
    pub fn after(outcome: &Outcome) -> RulesUpdate {
        if matches!(outcome.cause, Cause::Device(_)) {
            RulesUpdate::Everything
        } else if outcome.transition.usable_changed() {
            RulesUpdate::Policies
        } else {
            RulesUpdate::Nothing
        }
    }

    /// What a batch of outcomes asks for: the most any of them asks.
    pub fn after_all<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> RulesUpdate {
        outcomes
            .into_iter()
            .map(RulesUpdate::after)
            .fold(RulesUpdate::Nothing, RulesUpdate::max)
    }
}

/// The rules still owed after a failed update, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    update: RulesUpdate,
    retry_at: Option<Instant>,
}

impl Default for Owed {
    fn default() -> Owed {
        Owed {
            update: RulesUpdate::Nothing,
            retry_at: None,
        }
    }
}

impl Owed {
    /// What to rewrite now that `needed` is asked for: that and whatever is still owed;
    /// `None` when nothing is.
    pub fn with(&self, needed: RulesUpdate) -> Option<RulesUpdate> {
        (needed > RulesUpdate::Nothing).then(|| needed.max(self.update))
    }

    /// When to try again (the loop wakes up then).
    pub fn deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    /// What to rewrite at `now` because a retry is due.
    pub fn due(&self, now: Instant) -> Option<RulesUpdate> {
        self.retry_at
            .is_some_and(|at| at <= now)
            .then_some(self.update)
    }

    /// An update failed at `now`: everything is owed, [`RULES_RETRY`] from now.
    pub fn failed(&mut self, now: Instant) {
        self.update = RulesUpdate::Everything;
        self.retry_at = Some(now + RULES_RETRY);
    }
}

/// Rewrites the policy chains (falling back to a full apply) or everything; returns the plan
/// now in force (`None` when nothing was to be done).
pub fn bring_up_to_date(
    update: RulesUpdate,
    config: &Config,
    backend: Backend,
    states: Vec<LinkState>,
    state_dir: &Path,
) -> Result<Option<Plan>> {
    match update {
        RulesUpdate::Nothing => Ok(None),
        RulesUpdate::Policies => {
            let plan = Plan::build(config, &states);
            match apply::update_policies(backend, &plan, state_dir) {
                Ok(()) => Ok(Some(plan)),
                Err(e) => {
                    log_error(&format!(
                        "updating the policy chains failed, applying everything: {e}"
                    ));
                    apply::apply(config, states, state_dir).map(Some)
                }
            }
        }
        RulesUpdate::Everything => apply::apply(config, states, state_dir).map(Some),
    }
}

/// A link's device counts as up when it is resolved, up and operational.
pub fn device_up(state: Option<&LinkState>, running: &[String]) -> bool {
    state.is_some_and(|s| s.up && s.device.as_ref().is_some_and(|d| running.contains(d)))
}

/// Feeds each tunnel whether one of its underlay links is usable, and returns what changed.
/// Underlays are never tunnels (config checks), so one pass settles every tunnel.
pub fn gate_tunnels(links: &mut [TrackedLink], now: Instant) -> Vec<(usize, Outcome)> {
    let usable: Vec<(String, bool)> = links.iter().map(|l| (l.name.clone(), l.usable())).collect();
    links
        .iter_mut()
        .enumerate()
        .filter(|(_, link)| !link.underlay.is_empty())
        .filter_map(|(i, link)| {
            let up = link
                .underlay
                .iter()
                .any(|name| usable.iter().any(|(n, u)| n == name && *u));
            link.set_underlay(up, now).map(|o| (i, o))
        })
        .collect()
}

/// The link states the plan is built from: liveness from health, and no device for a link
/// whose device is down (the kernel has dropped its routes; they come back with it).
pub fn plan_states(resolved: &[LinkState], links: &[TrackedLink]) -> Vec<LinkState> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Family, FlushEvent};
    use crate::daemon::decide::health::{Health, TrackConfig, Transition};
    use crate::daemon::watch::probe::LinkRoute;

    fn outcome(from: Health, to: Health, cause: Cause) -> Outcome {
        Outcome {
            transition: Transition {
                from,
                to,
                next_round: None,
            },
            cause,
        }
    }

    fn round() -> Cause {
        Cause::Round {
            answered: 0,
            targets: 1,
            loss_percent: 100,
        }
    }

    #[test]
    fn a_change_of_use_rewrites_the_policies_and_a_device_everything() {
        let out = outcome(Health::Failing, Health::Down, round());
        assert_eq!(RulesUpdate::after(&out), RulesUpdate::Policies);
        let burst = Cause::Burst {
            answered: 0,
            targets: 1,
        };
        let out = outcome(Health::Up, Health::Down, burst);
        assert_eq!(RulesUpdate::after(&out), RulesUpdate::Policies);
        let out = outcome(Health::Down, Health::Up, Cause::Device(true));
        assert_eq!(RulesUpdate::after(&out), RulesUpdate::Everything);
        let out = outcome(Health::Down, Health::Down, Cause::Device(false));
        assert_eq!(
            RulesUpdate::after(&out),
            RulesUpdate::Everything,
            "a device change re-applies even when the state stays"
        );
    }

    #[test]
    fn a_change_within_use_or_no_change_rewrites_nothing() {
        for (from, to) in [
            (Health::Up, Health::Failing),
            (Health::Failing, Health::Up),
            (Health::Down, Health::Recovering),
            (Health::Recovering, Health::Down),
            (Health::Up, Health::Up),
        ] {
            let out = outcome(from, to, round());
            assert_eq!(RulesUpdate::after(&out), RulesUpdate::Nothing, "{from:?}");
        }
    }

    #[test]
    fn a_batch_asks_for_the_most_any_outcome_asks() {
        let within = outcome(Health::Up, Health::Failing, round());
        let out = outcome(Health::Failing, Health::Down, round());
        let device = outcome(Health::Up, Health::Down, Cause::Device(false));
        assert_eq!(RulesUpdate::after_all([]), RulesUpdate::Nothing);
        assert_eq!(RulesUpdate::after_all([&within]), RulesUpdate::Nothing);
        assert_eq!(
            RulesUpdate::after_all([&within, &out]),
            RulesUpdate::Policies
        );
        assert_eq!(
            RulesUpdate::after_all([&out, &device, &within]),
            RulesUpdate::Everything
        );
    }

    #[test]
    fn a_failed_update_owes_everything_and_retries_later() {
        let mut owed = Owed::default();
        let now = Instant::now();
        assert_eq!(owed.with(RulesUpdate::Nothing), None);
        assert_eq!(
            owed.with(RulesUpdate::Policies),
            Some(RulesUpdate::Policies)
        );
        assert_eq!((owed.deadline(), owed.due(now)), (None, None));

        owed.failed(now);
        assert_eq!(owed.deadline(), Some(now + RULES_RETRY));
        assert_eq!(owed.due(now), None, "not before the retry");
        assert_eq!(owed.due(now + RULES_RETRY), Some(RulesUpdate::Everything));
        assert_eq!(
            owed.with(RulesUpdate::Policies),
            Some(RulesUpdate::Everything),
            "what is owed is not forgotten"
        );
        assert_eq!(
            owed.with(RulesUpdate::Nothing),
            None,
            "nothing new: the retry brings it"
        );

        owed = Owed::default();
        assert_eq!(owed.due(now + RULES_RETRY), None, "a success clears it");
    }

    fn state(device: &str, up: bool) -> LinkState {
        LinkState {
            device: Some(device.to_string()),
            gateway: None,
            source: None,
            prefixes: Vec::new(),
            dns: Vec::new(),
            up,
        }
    }

    fn link(index: usize, device_up: bool) -> TrackedLink {
        let route = LinkRoute {
            name: format!("wan{index}"),
            family: Family::Ipv4,
            mark: 0x100 * (index as u32 + 1),
            device: Some(format!("eth{index}")),
            source: None,
        };
        let track = TrackConfig {
            track_ip: vec![std::net::Ipv4Addr::new(192, 0, 2, 1).into()],
            initial_up: false,
            ..TrackConfig::default()
        };
        TrackedLink::new(
            index,
            route,
            track,
            vec![FlushEvent::Disconnected],
            device_up,
        )
    }

    #[test]
    fn a_device_counts_as_up_when_resolved_up_and_running() {
        let running = vec!["eth0".to_string()];
        assert!(device_up(Some(&state("eth0", true)), &running));
        assert!(!device_up(Some(&state("eth0", false)), &running));
        assert!(!device_up(Some(&state("eth1", true)), &running));
        assert!(!device_up(None, &running));
        let unresolved = LinkState {
            device: None,
            ..state("eth0", true)
        };
        assert!(!device_up(Some(&unresolved), &running));
    }

    #[test]
    fn plan_states_take_liveness_from_health_and_drop_down_devices() {
        let resolved = vec![
            state("eth0", true),
            state("eth1", true),
            state("eth2", true),
        ];
        // Link 0 starts down (initial_state offline) with its device up; link 1's device is
        // down; interface 2 is not tracked (disabled) and keeps what was resolved.
        let links = vec![link(0, true), link(1, false)];
        let states = plan_states(&resolved, &links);
        assert_eq!(states[0], state("eth0", false));
        assert_eq!(
            states[1],
            LinkState {
                device: None,
                ..state("eth1", false)
            }
        );
        assert_eq!(states[2], resolved[2]);
    }
}
