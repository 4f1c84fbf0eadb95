//! DNS that follows the link, in iptables: `DNS` (mangle) pins each link's DNS servers' new
//! connections to a link, `DNAT` (nat, jumped to from PREROUTING and OUTPUT) sends a dead
//! link's servers' queries to a live link's server; as in the nft `dns` and `dns_nat` chains.

use super::steer::last_resort;
use super::table::Table;
use super::{mark_chain, marked};
use crate::config::{Family, LastResort};
use crate::names::IPT_PREFIX;
use crate::plan::{DnsGroup, DnsWay, Plan};

/// The mangle chain that steers new DNS connections.
const DNS: &str = "DNS";
/// The nat chain that translates a dead link's servers (`names::JUMPS` leads into it).
const DNAT: &str = "DNAT";

/// `-d SERVERS -p PROTO --dport 53` for UDP and TCP.
fn to_servers(group: &DnsGroup) -> [String; 2] {
    let servers: Vec<String> = group.servers.iter().map(ToString::to_string).collect();
    ["udp", "tcp"].map(|proto| format!("-d {} -p {proto} --dport 53", servers.join(",")))
}

/// The groups of `family`.
fn groups(plan: &Plan, family: Family) -> Vec<DnsGroup> {
    plan.dns_groups()
        .into_iter()
        .filter(|g| g.family == family)
        .collect()
}

/// The `DNS` chain of `family`, when DNS is steered.
pub(super) fn add_steering(mangle: &mut Table, plan: &Plan, family: Family) {
    if !plan.steers_dns() {
        return;
    }
    mangle.declare(DNS);
    for group in groups(plan, family) {
        let target = match group.way {
            DnsWay::Pin(link) | DnsWay::Follow { link, .. } => {
                format!("-g {IPT_PREFIX}{}", mark_chain(plan, plan.links[link].mark))
            }
            DnsWay::Refuse => last_resort(LastResort::Unreachable),
        };
        for matches in to_servers(&group) {
            mangle.rule(DNS, &format!("{matches} {target}"));
        }
    }
}

/// The `DNAT` chain of `family`, when DNS is steered.
pub(super) fn add_nat(nat: &mut Table, plan: &Plan, family: Family) {
    if !plan.steers_dns() {
        return;
    }
    nat.declare(DNAT);
    for group in groups(plan, family) {
        if let DnsWay::Follow { server, .. } = group.way {
            for matches in to_servers(&group) {
                nat.rule(
                    DNAT,
                    &format!("{matches} -j DNAT --to-destination {server}"),
                );
            }
        }
    }
}

/// What a hook chain runs for a new connection before the rules: the DNS steering, and a
/// return for what it marked.
pub(super) fn jump(plan: &Plan) -> Vec<String> {
    if !plan.steers_dns() {
        return Vec::new();
    }
    vec![format!("-j {IPT_PREFIX}{DNS}"), marked(plan, "mark")]
}
