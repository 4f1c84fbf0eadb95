//! Which links the plan in force uses, told to the tracked links so a warm standby link is
//! probed sparingly while it waits and at the normal pace while it carries traffic.

use std::time::Instant;

use super::link::TrackedLink;
use crate::plan::Plan;

/// Marks each tracked link in use when some policy of `plan` spreads new connections over it.
pub fn mark_use(links: &mut [TrackedLink], plan: &Plan, now: Instant) {
    let used: Vec<&str> = plan
        .policies
        .iter()
        .flat_map(|p| p.spread_links())
        .map(|i| plan.links[i].name.as_str())
        .collect();
    for link in links {
        let in_use = used.contains(&link.name.as_str());
        link.set_in_use(in_use, now);
    }
}
