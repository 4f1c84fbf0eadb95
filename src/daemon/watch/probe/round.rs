//! One round of echo requests in flight and what it came to: bookkeeping only, no socket.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// What one probe round saw, reduced to what health decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundSummary {
    /// Targets that answered at least one request.
    pub answered: u32,
    /// Mean round-trip time over the targets that answered, if any did.
    pub rtt: Option<Duration>,
}

/// One round in flight: the requests sent and the replies matched so far.
#[derive(Debug)]
pub struct Round {
    started: Instant,
    deadline: Instant,
    first_seq: u16,
    count: usize,
    /// Index `i` was sent to target `i / count` with sequence `first_seq + i`.
    requests: Vec<SentEcho>,
    outstanding: usize,
}

/// One echo request of a round: where it went, when (or why it could not), and its reply.
#[derive(Debug)]
struct SentEcho {
    target: IpAddr,
    sent: Result<Instant, Errno>,
    rtt: Option<Duration>,
}

/// What one target did in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    pub target: IpAddr,
    /// Requests that left the socket.
    pub sent: u32,
    /// Requests answered (duplicates count once).
    pub received: u32,
    /// Mean round-trip time of the answered requests.
    pub rtt: Option<Duration>,
    /// Why a request could not be sent (no route, device down, ...), if one could not.
    pub send_error: Option<Errno>,
}

/// The outcome of a whole round, per target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub targets: Vec<TargetReport>,
    /// From the first request to the end of the round.
    pub elapsed: Duration,
}

impl RoundReport {
    /// The part of the round that health decides on.
    pub fn summary(&self) -> RoundSummary {
        let answered = self.targets.iter().filter(|t| t.received > 0).count();
        let (replies, total) = self
            .targets
            .iter()
            .filter_map(|t| t.rtt)
            .fold((0u32, Duration::ZERO), |(n, sum), rtt| (n + 1, sum + rtt));
        RoundSummary {
            answered: u32::try_from(answered).unwrap_or(u32::MAX),
            rtt: (replies > 0).then(|| total / replies),
        }
    }
}

impl Round {
    /// A round of `count` requests per target starting at `started` with sequence number
    /// `first_seq`, giving up after `timeout`; its requests are added with [`Round::sent`].
    pub(super) fn begin(
        started: Instant,
        timeout: Duration,
        first_seq: u16,
        count: usize,
    ) -> Round {
        Round {
            started,
            deadline: started + timeout,
            first_seq,
            count,
            requests: Vec::new(),
            outstanding: 0,
        }
    }

    /// Records the next request of the round: sent to `target` at the time given, or not sent.
    pub(super) fn sent(&mut self, target: IpAddr, sent: Result<Instant, Errno>) {
        if sent.is_ok() {
            self.outstanding += 1;
        }
        self.requests.push(SentEcho {
            target,
            sent,
            rtt: None,
        });
    }

    /// Matches a reply from `source` with sequence number `seq`, received at `now`, to the
    /// request it answers; a reply to no request of ours, from the wrong target or repeated
    /// changes nothing.
    pub(super) fn answered(&mut self, source: IpAddr, seq: u16, now: Instant) {
        let index = usize::from(seq.wrapping_sub(self.first_seq));
        let Some(request) = self.requests.get_mut(index) else {
            return;
        };
        if request.target != source || request.rtt.is_some() {
            return;
        }
        if let Ok(sent) = request.sent {
            request.rtt = Some(now.saturating_duration_since(sent));
            self.outstanding = self.outstanding.saturating_sub(1);
        }
    }

    /// When the round gives up on the replies still missing.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether every request that was sent has been answered.
    pub fn is_complete(&self) -> bool {
        self.outstanding == 0
    }

    /// Closes the round: whatever has not been answered by now is lost.
    pub fn finish(self) -> RoundReport {
        let elapsed = self.started.elapsed();
        let targets = self
            .requests
            .chunks(self.count.max(1))
            .filter_map(|requests| {
                let first = requests.first()?;
                let rtts: Vec<Duration> = requests.iter().filter_map(|r| r.rtt).collect();
                let received = u32::try_from(rtts.len()).unwrap_or(u32::MAX);
                Some(TargetReport {
                    target: first.target,
                    sent: u32::try_from(requests.iter().filter(|r| r.sent.is_ok()).count())
                        .unwrap_or(u32::MAX),
                    received,
                    rtt: (received > 0).then(|| rtts.iter().sum::<Duration>() / received),
                    send_error: requests.iter().find_map(|r| r.sent.err()),
                })
            })
            .collect();
        RoundReport { targets, elapsed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 30, 0, 1));

    #[test]
    fn summary_counts_targets_with_any_reply_and_averages_their_rtt() {
        let target = |received, rtt_ms: Option<u64>| TargetReport {
            target: TARGET,
            sent: 3,
            received,
            rtt: rtt_ms.map(Duration::from_millis),
            send_error: None,
        };
        let report = RoundReport {
            targets: vec![target(1, Some(10)), target(0, None), target(3, Some(30))],
            elapsed: Duration::from_millis(40),
        };
        let summary = report.summary();
        assert_eq!(summary.answered, 2);
        assert_eq!(summary.rtt, Some(Duration::from_millis(20)));
    }
}
