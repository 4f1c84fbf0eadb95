//! Tunnels' outer packets, in nft: the `outer` chain, jumped to from `output` before any
//! rule (whatever `local_traffic` says), sends a new connection to a tunnel's endpoint to the
//! mark chain of its first live underlay, or to the unreachable mark. It follows liveness:
//! [`super::policy_update`] rewrites it.

use super::chains::{mark_chain, marked};
use super::policy::last_resort;
use crate::config::LastResort;
use crate::plan::{OuterPin, Plan};

/// The chain that pins tunnels' outer packets.
pub(super) const OUTER: &str = "outer";

/// `ip daddr ENDPOINT [meta l4proto { tcp, udp } th dport PORT] `.
fn to_endpoint(pin: &OuterPin) -> String {
    let port = pin
        .port
        .map(|p| format!("meta l4proto {{ tcp, udp }} th dport {p} "))
        .unwrap_or_default();
    format!("{} daddr {} {port}", pin.family.nft(), pin.endpoint)
}

/// The rules of the `outer` chain.
pub(super) fn rules(plan: &Plan) -> Vec<String> {
    plan.outer_pins()
        .iter()
        .map(|pin| {
            let verdict = match pin.link {
                Some(link) => format!("goto {}", mark_chain(&plan.links[link].name)),
                None => last_resort(LastResort::Unreachable).to_string(),
            };
            to_endpoint(pin) + &verdict
        })
        .collect()
}

/// What `output` runs for a new connection before the DNS steering and the rules.
pub(super) fn jump(plan: &Plan) -> Vec<String> {
    if !plan.has_tunnels() {
        return Vec::new();
    }
    vec![format!("jump {OUTER}"), marked(plan, "meta")]
}
