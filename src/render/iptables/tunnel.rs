//! Tunnels' outer packets, in iptables: `OUTER` (mangle, jumped to from OUTPUT) pins a new
//! connection to a tunnel's endpoint to its first live underlay, as the nft `outer` chain.

use super::steer::last_resort;
use super::table::Table;
use super::{mark_chain, marked};
use crate::config::{Family, LastResort};
use crate::names::IPT_PREFIX;
use crate::plan::Plan;

/// The mangle chain that pins tunnels' outer packets.
const OUTER: &str = "OUTER";

/// The `OUTER` chain of `family`, when some link is a tunnel.
pub(super) fn add_pins(mangle: &mut Table, plan: &Plan, family: Family) {
    if !plan.has_tunnels() {
        return;
    }
    mangle.declare(OUTER);
    for pin in plan.outer_pins().iter().filter(|p| p.family == family) {
        let target = match pin.link {
            Some(link) => format!("-g {IPT_PREFIX}{}", mark_chain(plan, plan.links[link].mark)),
            None => last_resort(LastResort::Unreachable),
        };
        match pin.port {
            Some(port) => {
                for proto in ["udp", "tcp"] {
                    mangle.rule(
                        OUTER,
                        &format!("-d {} -p {proto} --dport {port} {target}", pin.endpoint),
                    );
                }
            }
            None => mangle.rule(OUTER, &format!("-d {} {target}", pin.endpoint)),
        }
    }
}

/// What OUTPUT runs for a new connection before the DNS steering and the rules.
pub(super) fn jump(plan: &Plan) -> Vec<String> {
    if !plan.has_tunnels() {
        return Vec::new();
    }
    vec![format!("-j {IPT_PREFIX}{OUTER}"), marked(plan, "mark")]
}
