//! Standby links (`standby`, `standby_interval`): a backup that costs money per byte carries
//! traffic only when no primary member of its policy is up, and is probed sparingly while it
//! waits, so its probes do not eat the data plan.

use std::time::Duration;

use super::value::SectionReader;
use crate::error::Result;

/// `standby_interval` unless set: one probe round a minute keeps a waiting link's state known
/// within a minute for about 1/60 of the probe bytes of a primary.
pub const DEFAULT_STANDBY_INTERVAL: Duration = Duration::from_secs(60);

/// How a link waits for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standby {
    /// Not a standby link: used whenever it is up, by metric and weight (the default).
    Hot,
    /// A backup: used only when every non-standby member of the policy is down; while unused
    /// it is probed every `standby_interval` instead of every `interval`.
    Warm(Duration),
}

impl Standby {
    /// Whether the link waits for the primaries of its policies to fail.
    pub fn is_standby(self) -> bool {
        !matches!(self, Standby::Hot)
    }

    /// The delay between probe rounds while the link carries nothing (None: the usual one).
    pub fn idle_interval(self) -> Option<Duration> {
        match self {
            Standby::Hot => None,
            Standby::Warm(every) => Some(every),
        }
    }
}

/// Reads `standby` and `standby_interval` of one interface; the interval must not be shorter
/// than the link's `interval` (a waiting link is never probed more often than a used one).
pub fn read_standby(r: &mut SectionReader, interval: Duration) -> Result<Standby> {
    #[derive(Clone, Copy)]
    enum Word {
        Hot,
        Warm,
    }
    let word = r.choice(
        "standby",
        Word::Hot,
        &[("hot", Word::Hot), ("warm", Word::Warm)],
    )?;
    let every = r.seconds("standby_interval", DEFAULT_STANDBY_INTERVAL.max(interval))?;
    if every < interval {
        return Err(r.error(
            "standby_interval",
            format!(
                "expected at least the link's interval ({} s), got {} s",
                interval.as_secs_f64(),
                every.as_secs_f64()
            ),
        ));
    }
    Ok(match word {
        Word::Hot => Standby::Hot,
        Word::Warm => Standby::Warm(every),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::{assert_names_option, read_section};

    fn read(options: &str) -> Result<Standby> {
        read_section("interface", options, |r| {
            read_standby(r, Duration::from_secs(1))
        })
    }

    #[test]
    fn hot_is_the_default_and_warm_waits_a_minute_between_rounds() {
        assert_eq!(read("").unwrap(), Standby::Hot);
        assert_eq!(
            read(r#","standby":"warm""#).unwrap(),
            Standby::Warm(Duration::from_secs(60))
        );
        assert_eq!(
            read(r#","standby":"warm","standby_interval":"30""#).unwrap(),
            Standby::Warm(Duration::from_secs(30))
        );
    }

    #[test]
    fn bad_words_and_intervals_shorter_than_interval_name_the_option() {
        for (options, option) in [
            (r#","standby":"tepid""#, "standby"),
            (
                r#","standby":"warm","standby_interval":"0.5""#,
                "standby_interval",
            ),
        ] {
            assert_names_option(read(options), option);
        }
    }
}
