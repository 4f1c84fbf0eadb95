//! Which links the plan in force uses, told to the tracked links so a warm standby link is
//! probed sparingly while it waits and at the normal pace while it carries traffic; and
//! failback: when a link leaves use while still up (a better link returned), its connections
//! are kept, drained or killed as its policies' `failback` says.

use std::time::{Duration, Instant};

use super::link::TrackedLink;
use crate::config::Config;
use crate::plan::Plan;

/// Links whose conntrack entries are due for deletion after failback, by interface name.
#[derive(Debug, Default)]
pub struct Uses {
    drains: Vec<(String, Instant)>,
}

impl Uses {
    /// Marks each tracked link in use when some policy of `plan` spreads new connections over
    /// it; a link that left use while usable gets its failback deadline, one taken back into
    /// use loses it.
    pub fn update(
        &mut self,
        links: &mut [TrackedLink],
        plan: &Plan,
        config: &Config,
        now: Instant,
    ) {
        let used: Vec<&str> = plan
            .policies
            .iter()
            .flat_map(|p| p.spread_links())
            .map(|i| plan.links[i].name.as_str())
            .collect();
        for link in links {
            let in_use = used.contains(&link.name.as_str());
            let left = link.in_use() && !in_use && link.usable();
            link.set_in_use(in_use, now);
            if in_use {
                self.drains.retain(|(name, _)| *name != link.name);
            }
            if let (true, Some(grace)) = (left, grace(config, link.index)) {
                self.drains.retain(|(name, _)| *name != link.name);
                self.drains.push((link.name.clone(), now + grace));
            }
        }
    }

    /// When the next failback deletion is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.drains.iter().map(|(_, at)| *at).min()
    }

    /// The links whose connections must go now (each once).
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let (due, later): (Vec<_>, Vec<_>) = self.drains.drain(..).partition(|(_, at)| *at <= now);
        self.drains = later;
        due.into_iter().map(|(name, _)| name).collect()
    }
}

/// How long connections may stay on interface `index` once it left use: the shortest of its
/// policies' failback graces, None when every one keeps them.
fn grace(config: &Config, index: usize) -> Option<Duration> {
    config
        .policies
        .iter()
        .filter(|p| p.members.iter().any(|m| m.interface == index))
        .filter_map(|p| p.failback.grace())
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::config;

    const TWO: &str = r#"{"values":{
        "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
        "lte":{".type":"interface",".name":"lte",".index":2,"device":"wwan0"},
        "m_wan":{".type":"member",".name":"m_wan",".index":3,"interface":"wan"},
        "m_lte":{".type":"member",".name":"m_lte",".index":4,"interface":"lte","metric":"2"},
        "keep":{".type":"policy",".name":"keep",".index":5,"use_member":["m_wan","m_lte"]},
        "drain":{".type":"policy",".name":"drain",".index":6,"use_member":["m_lte"],"failback":"drain","drain_timeout":"30"},
        "kill":{".type":"policy",".name":"kill",".index":7,"use_member":["m_wan"],"failback":"kill"}
    }}"#;

    #[test]
    fn a_link_gets_the_shortest_grace_of_its_policies() {
        let c = config(TWO);
        assert_eq!(grace(&c, 0), Some(Duration::ZERO));
        assert_eq!(grace(&c, 1), Some(Duration::from_secs(30)));
        let keep_only = config(&TWO.replace(
            r#""failback":"drain","drain_timeout":"30""#,
            r#""failback":"keep""#,
        ));
        assert_eq!(grace(&keep_only, 1), None);
    }

    #[test]
    fn due_drains_come_out_once_and_later_ones_stay() {
        let now = Instant::now();
        let mut uses = Uses {
            drains: vec![
                ("wan".into(), now),
                ("lte".into(), now + Duration::from_secs(30)),
            ],
        };
        assert_eq!(uses.deadline(), Some(now));
        assert_eq!(uses.due(now), ["wan"]);
        assert!(uses.due(now).is_empty());
        assert_eq!(uses.deadline(), Some(now + Duration::from_secs(30)));
    }
}
