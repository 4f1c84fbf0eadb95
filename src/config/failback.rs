//! Failback (`failback`, `drain_timeout` on a policy): what happens to the connections on a
//! link when a better link of the policy returns and takes the new ones.

use std::time::Duration;

use super::value::SectionReader;
use crate::error::Result;

/// `drain_timeout` unless set: long enough for page loads and short calls to end on their own.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What becomes of the connections a link carries when it leaves use while still up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// They stay on it until they end (the default).
    Keep,
    /// They stay until they end or the timeout passes; then their conntrack entries are
    /// deleted and what is left starts over on the better link.
    Drain(Duration),
    /// Their conntrack entries are deleted at once.
    Kill,
}

impl Failback {
    /// How long the link's connections may stay: None for ever.
    pub fn grace(self) -> Option<Duration> {
        match self {
            Failback::Keep => None,
            Failback::Drain(timeout) => Some(timeout),
            Failback::Kill => Some(Duration::ZERO),
        }
    }
}

/// Reads `failback` and `drain_timeout` of one policy.
pub fn read_failback(r: &mut SectionReader) -> Result<Failback> {
    #[derive(Clone, Copy)]
    enum Word {
        Keep,
        Drain,
        Kill,
    }
    let word = r.choice(
        "failback",
        Word::Keep,
        &[
            ("keep", Word::Keep),
            ("drain", Word::Drain),
            ("kill", Word::Kill),
        ],
    )?;
    let timeout = r.seconds("drain_timeout", DEFAULT_DRAIN_TIMEOUT)?;
    Ok(match word {
        Word::Keep => Failback::Keep,
        Word::Drain => Failback::Drain(timeout),
        Word::Kill => Failback::Kill,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::{assert_names_option, read_section};

    fn read(options: &str) -> Result<Failback> {
        read_section("policy", options, read_failback)
    }

    #[test]
    fn keep_is_the_default_and_drain_waits_its_timeout() {
        assert_eq!(read("").unwrap(), Failback::Keep);
        assert_eq!(
            read(r#","failback":"kill""#).unwrap().grace(),
            Some(Duration::ZERO)
        );
        assert_eq!(
            read(r#","failback":"drain""#).unwrap(),
            Failback::Drain(DEFAULT_DRAIN_TIMEOUT)
        );
        assert_eq!(
            read(r#","failback":"drain","drain_timeout":"2.5""#)
                .unwrap()
                .grace(),
            Some(Duration::from_millis(2500))
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        for (options, option) in [
            (r#","failback":"later""#, "failback"),
            (
                r#","failback":"drain","drain_timeout":"0""#,
                "drain_timeout",
            ),
        ] {
            assert_names_option(read(options), option);
        }
    }
}
