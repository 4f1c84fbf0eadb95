//! DNS that follows the link, in nft: the `dns` chain pins each link's DNS servers' new
//! connections (port 53, UDP and TCP) to a link, before any rule and whatever
//! `local_traffic` says; `dns_nat`, reached from two nat hooks (forwarded and the router's
//! own), sends a dead link's servers' queries to a live link's server. Both follow liveness:
//! [`super::policy_update`] rewrites them.

use super::chains::{chain, mark_chain, marked};
use super::policy::last_resort;
use super::set;
use crate::config::LastResort;
use crate::plan::{DnsGroup, DnsWay, Plan};

/// The chain that steers new DNS connections to a link.
pub(super) const DNS: &str = "dns";
/// The chain that translates a dead link's servers to a live link's server.
pub(super) const DNS_NAT: &str = "dns_nat";
/// The nat base chains that lead into [`DNS_NAT`].
pub(super) const NAT_HOOKS: [&str; 2] = ["dnat_prerouting", "dnat_output"];

/// `ip daddr { servers } meta l4proto { tcp, udp } th dport 53 `: a new DNS connection to
/// one of the group's servers.
fn to_servers(group: &DnsGroup) -> String {
    let servers = set(group.servers.iter().map(ToString::to_string));
    format!(
        "{} daddr {servers} meta l4proto {{ tcp, udp }} th dport 53 ",
        group.family.nft()
    )
}

/// The rules of the `dns` chain: each group to its link's mark chain (the link that has the
/// servers, or the live one that answers for them), refused ones to the unreachable mark.
pub(super) fn steering_rules(plan: &Plan) -> Vec<String> {
    plan.dns_groups()
        .iter()
        .map(|group| {
            let verdict = match group.way {
                DnsWay::Pin(link) | DnsWay::Follow { link, .. } => {
                    format!("goto {}", mark_chain(&plan.links[link].name))
                }
                DnsWay::Refuse => last_resort(LastResort::Unreachable).to_string(),
            };
            to_servers(group) + &verdict
        })
        .collect()
}

/// The rules of the `dns_nat` chain: a dead link's servers to the live link's server.
pub(super) fn nat_rules(plan: &Plan) -> Vec<String> {
    plan.dns_groups()
        .iter()
        .filter_map(|group| match group.way {
            DnsWay::Follow { server, .. } => Some(format!(
                "{}dnat {} to {server}",
                to_servers(group),
                group.family.nft()
            )),
            _ => None,
        })
        .collect()
}

/// What a hook chain runs for a new connection, before the rules: the DNS steering, and a
/// return for what it marked.
pub(super) fn jump(plan: &Plan) -> Vec<String> {
    if !plan.steers_dns() {
        return Vec::new();
    }
    vec![format!("jump {DNS}"), marked(plan, "meta")]
}

/// The nat base chains, when DNS is steered.
pub(super) fn nat_hooks(out: &mut String, plan: &Plan) {
    if plan.steers_dns() {
        for hook in NAT_HOOKS {
            chain(out, hook, &[format!("goto {DNS_NAT}")]);
        }
    }
}
