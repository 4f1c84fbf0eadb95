//! The log text of the daemon's loop: link transitions, suspicions, and the one-line summary
//! of the start and reload messages. Kept apart so the wording is in one place.

use crate::apply::Backend;
use crate::daemon::decide::link::{Cause, Outcome, TrackedLink};
use crate::daemon::watch::passive::Suspicion;

/// The link's name and device, as every line about it starts: `wanb (eth1)`.
fn named(link: &TrackedLink) -> String {
    format!(
        "{} ({})",
        link.name,
        link.route.device.as_deref().unwrap_or("no device")
    )
}

/// The transition's log line.
pub fn transition(link: &TrackedLink, outcome: &Outcome) -> String {
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
        Cause::Underlay(true) => "an underlay link is usable".to_string(),
        Cause::Underlay(false) => "no underlay link is usable".to_string(),
    };
    let what = match (outcome.transition.usable_changed(), link.usable()) {
        (true, true) => "; new connections use it again",
        (true, false) => "; new connections avoid it",
        (false, _) => "",
    };
    format!(
        "{}: {} -> {} ({why}){what}",
        named(link),
        outcome.transition.from.as_str(),
        outcome.transition.to.as_str(),
    )
}

/// Passive health suspects `link`, which is being probed at once.
pub fn suspect(link: &TrackedLink, suspicion: &Suspicion) -> String {
    format!("{}: suspect: {suspicion}; probing it now", named(link))
}

/// A confirmation burst was answered: the link stays.
pub fn burst_answered(link: &TrackedLink, answered: u32, targets: u32) -> String {
    format!(
        "{}: burst answered ({answered}/{targets} targets); not suspect any more",
        link.name
    )
}

/// One line about what is being tracked, for the start and reload messages.
pub fn summary(backend: Backend, links: &[TrackedLink]) -> String {
    let links: Vec<String> = links
        .iter()
        .map(|link| {
            format!(
                "{} ({}, {})",
                link.name,
                link.route.device.as_deref().unwrap_or("no device"),
                link.health().state().as_str()
            )
        })
        .collect();
    format!("{} backend, links {}", backend.name(), links.join(", "))
}
