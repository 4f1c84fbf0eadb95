//! The probe data budget of one link: the bytes its probes sent and got back today (UTC day),
//! and the 30-day figure today's pace comes to, so the owner of a metered link sees what
//! tracking costs. Bytes are counted at the IP layer, the way a data plan counts them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Family;
use crate::daemon::watch::probe::{RoundReport, echo_ip_bytes};

const DAY: u64 = 86_400;
/// Seconds of counting before a 30-day figure is projected: a few rounds at the default pace.
const MIN_COUNTED: u64 = 10;

/// Today's probe bytes of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeBudget {
    family: Family,
    /// Days since the epoch of the figures below.
    day: u64,
    /// Unix second counting started today (midnight, or when tracking began).
    since: u64,
    sent: u64,
    received: u64,
}

impl ProbeBudget {
    /// A budget counting from `now`.
    pub fn new(family: Family, now: SystemTime) -> ProbeBudget {
        let secs = unix(now);
        ProbeBudget {
            family,
            day: secs / DAY,
            since: secs,
            sent: 0,
            received: 0,
        }
    }

    /// Counts one finished round (or burst); a new day starts from zero.
    pub fn record(&mut self, report: &RoundReport, now: SystemTime) {
        self.roll(now);
        let size = echo_ip_bytes(self.family);
        for t in &report.targets {
            self.sent += u64::from(t.sent) * size;
            self.received += u64::from(t.received) * size;
        }
    }

    /// Bytes sent and received today, as of `now`.
    pub fn today(&self, now: SystemTime) -> (u64, u64) {
        if unix(now) / DAY == self.day {
            (self.sent, self.received)
        } else {
            (0, 0)
        }
    }

    /// Sent plus received over 30 days at today's pace: today's bytes / seconds counted
    /// today * 30 days (None until [`MIN_COUNTED`] has been counted: too little to project
    /// from).
    pub fn projected_30_days(&self, now: SystemTime) -> Option<u64> {
        let (sent, received) = self.today(now);
        let counted = unix(now).saturating_sub(self.since);
        (unix(now) / DAY == self.day && counted >= MIN_COUNTED)
            .then(|| (sent + received).saturating_mul(30 * DAY) / counted)
    }

    fn roll(&mut self, now: SystemTime) {
        let secs = unix(now);
        if secs / DAY != self.day {
            self.day = secs / DAY;
            self.since = self.day * DAY;
            self.sent = 0;
            self.received = 0;
        }
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::watch::probe::TargetReport;
    use std::net::{IpAddr, Ipv4Addr};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn round(sent: u32, received: u32) -> RoundReport {
        RoundReport {
            targets: vec![TargetReport {
                target: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                sent,
                received,
                rtt: None,
                send_error: None,
            }],
            elapsed: Duration::from_millis(10),
        }
    }

    #[test]
    fn a_round_a_second_of_three_echoes_comes_to_the_documented_figure() {
        let start = 100 * DAY;
        let mut budget = ProbeBudget::new(Family::Ipv4, at(start));
        for s in 1..=3600 {
            budget.record(&round(3, 3), at(start + s));
        }
        let now = at(start + 3600);
        assert_eq!(budget.today(now), (3600 * 3 * 44, 3600 * 3 * 44));
        // 3 requests and 3 replies of 44 B a second: 684,288,000 B in 30 days.
        assert_eq!(budget.projected_30_days(now), Some(684_288_000));
    }

    #[test]
    fn a_new_day_starts_from_zero_and_ipv6_echoes_are_bigger() {
        let mut budget = ProbeBudget::new(Family::Ipv6, at(DAY - 10));
        budget.record(&round(3, 2), at(DAY - 5));
        assert_eq!(budget.today(at(DAY - 1)), (192, 128));
        assert_eq!(budget.today(at(DAY + 1)), (0, 0));
        assert_eq!(budget.projected_30_days(at(DAY + 1)), None);
        budget.record(&round(1, 1), at(DAY + 120));
        assert_eq!(budget.today(at(DAY + 120)), (64, 64));
        assert_eq!(
            budget.projected_30_days(at(DAY + 120)),
            Some(128 * 30 * DAY / 120)
        );
    }
}
