//! The chains that steer a new connection to a link and follow link liveness: the prefix
//! pins, one chain per policy (numgen or jhash verdict maps over the live links), and per
//! sticky rule a chain that keeps a source on the link it was given.

use super::chains::{chain, mark_chain};
use super::sets::{sticky_drops, sticky_set};
use super::{dns, tunnel};
use super::{only, set};
use crate::config::{Balance, Family, HashKey, LastResort, Rule, RuleTarget};
use crate::hash;
use crate::names::NFT_TABLE;
use crate::plan::{Choice, Link, Plan, PolicyPlan, Share};
use crate::render::{policy_slots, total_weight};
use std::fmt::Write;

/// The chain that pins new connections from a link's own prefixes to that link.
pub(super) const PINS: &str = "prefixes";

/// The chain of policy `name`.
pub(super) fn policy_chain(name: &str) -> String {
    format!("policy_{name}")
}

/// The chain a sticky rule sends its connections to.
pub(super) fn sticky_chain(rule: &Rule) -> String {
    format!("sticky_{}", rule.name)
}

/// The chain that gives a sticky rule's source link `link` and remembers it.
fn stick_chain(rule: &Rule, link: &str) -> String {
    format!("stick_{}_{link}", rule.name)
}

/// One steering chain with its rules.
struct Steering {
    chain: String,
    rules: Vec<String>,
    /// Whether the rules change with link liveness (what [`policy_update`] rewrites).
    live: bool,
}

/// Every steering chain in table order: the tunnels' outer packets, the DNS steering (when links have servers), the
/// prefix pins (when a link has prefixes), each policy's chain, and per sticky rule its chain
/// and one `stick_` chain per link.
fn steering(plan: &Plan) -> Vec<Steering> {
    let mut out = Vec::new();
    let live = |chain: String, rules: Vec<String>| Steering {
        chain,
        rules,
        live: true,
    };
    if plan.has_tunnels() {
        out.push(live(tunnel::OUTER.to_string(), tunnel::rules(plan)));
    }
    if plan.steers_dns() {
        out.push(live(dns::DNS.to_string(), dns::steering_rules(plan)));
        out.push(live(dns::DNS_NAT.to_string(), dns::nat_rules(plan)));
    }
    if plan.pins_prefixes() {
        out.push(live(PINS.to_string(), pin_rules(plan)));
    }
    for policy in &plan.policies {
        let rules = policy_rules(plan, policy, &mark_chain);
        out.push(live(policy_chain(&policy.name), rules));
    }
    for rule in plan.rules.iter().filter(|r| r.sticky.is_some()) {
        out.push(live(sticky_chain(rule), sticky_rules(plan, rule)));
        out.extend(plan.links.iter().map(|link| Steering {
            chain: stick_chain(rule, &link.name),
            rules: stick_rules(rule, link),
            live: false,
        }));
    }
    out
}

/// Writes every steering chain into the table block.
pub(super) fn chains(out: &mut String, plan: &Plan) {
    for steering in steering(plan) {
        chain(out, &steering.chain, &steering.rules);
    }
}

/// Only the chains that follow liveness (the DNS steering, the policy chains, the prefix pins
/// and the sticky rules' chains) and the sticky sources of links that left their policy: what a link state
/// change needs, as one small transaction.
pub fn policy_update(plan: &Plan) -> String {
    let mut out = String::new();
    for Steering { chain, rules, .. } in steering(plan).into_iter().filter(|s| s.live) {
        let _ = writeln!(out, "flush chain {NFT_TABLE} {chain}");
        for rule in rules {
            let _ = writeln!(out, "add rule {NFT_TABLE} {chain} {rule}");
        }
    }
    out.push_str(&sticky_drops(plan));
    out
}

/// The rules of the prefix-pinning chain: one per usable link with prefixes.
fn pin_rules(plan: &Plan) -> Vec<String> {
    plan.pins()
        .map(|link| {
            let prefixes = set(link.prefixes.iter().map(ToString::to_string));
            format!("ip6 saddr {prefixes} goto {}", mark_chain(&link.name))
        })
        .collect()
}

/// The policy a rule sends its connections to, if any.
pub(super) fn policy_of<'p>(plan: &'p Plan, rule: &Rule) -> Option<&'p PolicyPlan> {
    match rule.target {
        RuleTarget::Policy(i) => plan.policies.get(i),
        _ => None,
    }
}

/// A sticky rule's chain: a source found in a live link's set takes that link again; any
/// other source gets the policy's choice, through the link's `stick_` chain that remembers it.
fn sticky_rules(plan: &Plan, rule: &Rule) -> Vec<String> {
    let Some(policy) = policy_of(plan, rule) else {
        return Vec::new();
    };
    let mut out: Vec<String> = policy
        .spread_links()
        .into_iter()
        .map(|index| {
            let link = &plan.links[index];
            format!(
                "{} saddr @{} goto {}",
                link.family.nft(),
                sticky_set(rule, &link.name),
                stick_chain(rule, &link.name)
            )
        })
        .collect();
    out.extend(policy_rules(plan, policy, &|link| stick_chain(rule, link)));
    out
}

/// A link's `stick_` chain: (re)start the source's timeout in the link's set, then mark.
fn stick_rules(rule: &Rule, link: &Link) -> Vec<String> {
    let timeout = rule.sticky.map_or(0, |s| s.timeout);
    let family = link.family;
    vec![
        format!(
            "meta nfproto {family} update @{} {{ {} saddr timeout {timeout}s }}",
            sticky_set(rule, &link.name),
            family.nft()
        ),
        format!("goto {}", mark_chain(&link.name)),
    ]
}

/// The rules of a policy chain, each link's verdict given by `target` (its mark chain, or a
/// sticky rule's `stick_` chain): per family it has members of, a numgen verdict map over the
/// live links' slots, or for hash balancing a jhash verdict map over the bucket table (or the
/// last resort).
fn policy_rules(plan: &Plan, policy: &PolicyPlan, target: &dyn Fn(&str) -> String) -> Vec<String> {
    policy
        .choices
        .iter()
        .map(|(family, choice)| {
            let goto = |link: usize| format!("goto {}", target(&plan.links[link].name));
            let rule = match choice {
                Choice::Spread(shares) if shares.len() == 1 => goto(shares[0].link),
                Choice::Spread(shares) => match policy.balance {
                    Balance::Hash(key) => hash_rule(policy, *family, key, &goto),
                    balance => numgen_rule(balance, shares, &goto),
                },
                Choice::Fallback(resort) => last_resort(*resort).to_string(),
            };
            format!("{}{rule}", only(plan, *family))
        })
        .collect()
}

/// Hash balancing: a jhash of the key over the policy's bucket table of `family`, each bucket
/// range going to its link.
fn hash_rule(
    policy: &PolicyPlan,
    family: Family,
    key: HashKey,
    goto: &dyn Fn(usize) -> String,
) -> String {
    let proto = family.nft();
    let fields = match key {
        HashKey::Src => format!("{proto} saddr"),
        HashKey::SrcDst => format!("{proto} saddr . {proto} daddr"),
    };
    let entries: Vec<String> = hash::ranges(policy.buckets_of(family))
        .into_iter()
        .map(|(from, to, link)| format!("{} : {}", range(from, to), goto(link)))
        .collect();
    format!(
        "jhash {fields} mod {} seed {:#x} vmap {{ {} }}",
        hash::BUCKETS,
        hash::SEED,
        entries.join(", ")
    )
}

/// Round-robin or random balancing: a counter (or random number) over the shares' slots.
fn numgen_rule(balance: Balance, shares: &[Share], goto: &dyn Fn(usize) -> String) -> String {
    let kind = if balance == Balance::Random {
        "random"
    } else {
        "inc"
    };
    let slots: Vec<String> = policy_slots(shares)
        .map(|(from, to, share)| format!("{} : {}", range(from, to), goto(share.link)))
        .collect();
    format!(
        "numgen {kind} mod {} vmap {{ {} }}",
        total_weight(shares),
        slots.join(", ")
    )
}

/// `n` or `from-to`.
fn range(from: u32, to: u32) -> String {
    if from == to {
        from.to_string()
    } else {
        format!("{from}-{to}")
    }
}

/// The verdict of a last resort: the chain that marks for its routing rule, or the main table.
pub(super) fn last_resort(resort: LastResort) -> &'static str {
    match resort {
        LastResort::Unreachable => "goto last_unreachable",
        LastResort::Blackhole => "goto last_blackhole",
        LastResort::Default => "accept",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{dual_plan, tiers_plan};

    #[test]
    fn policy_update_flushes_and_refills_each_policy_chain() {
        assert_eq!(
            policy_update(&tiers_plan([true, true, true])),
            "flush chain inet connmark_lb policy_main\n\
             add rule inet connmark_lb policy_main numgen inc mod 3 vmap { 0-1 : goto mark_wan, 2 : goto mark_wanb }\n"
        );
        assert_eq!(
            policy_update(&tiers_plan([false, true, true])),
            "flush chain inet connmark_lb policy_main\nadd rule inet connmark_lb policy_main goto mark_wanb\n"
        );
        assert_eq!(
            policy_update(&tiers_plan([false, false, false])),
            "flush chain inet connmark_lb policy_main\nadd rule inet connmark_lb policy_main goto last_blackhole\n"
        );
    }

    #[test]
    fn policy_update_refills_the_prefix_pins_with_the_live_links() {
        assert_eq!(
            policy_update(&dual_plan([true, false, true])),
            "flush chain inet connmark_lb prefixes\n\
             add rule inet connmark_lb prefixes ip6 saddr { 2001:db8:2::/56 } goto mark_wanb6\n\
             flush chain inet connmark_lb policy_balanced\n\
             add rule inet connmark_lb policy_balanced meta nfproto ipv4 goto mark_wan\n\
             add rule inet connmark_lb policy_balanced meta nfproto ipv6 goto mark_wanb6\n"
        );
    }
}
