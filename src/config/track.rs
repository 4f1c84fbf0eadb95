//! The health tracking options of one interface, in mwan3's words: the vocabulary the daemon's
//! state machine (`daemon::health`) and passive watcher are built from.

use std::net::IpAddr;
use std::time::Duration;

use super::family::Family;
use super::value::SectionReader;
use crate::error::Result;

/// `failure_interval` unless set (or `interval` is shorter): once a round was lost, the next
/// ones follow quickly, each waiting only as long as the link's own replies take (see
/// `daemon::health`), so a dead link is out within 3 s with the other defaults.
pub const DEFAULT_FAILURE_INTERVAL: Duration = Duration::from_millis(300);

/// The typed tracking options of one link; the defaults are the ones whose detection and
/// recovery bounds `daemon::health` works out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    pub track_ip: Vec<IpAddr>,
    pub reliability: u32,
    pub count: u32,
    pub timeout: Duration,
    pub interval: Duration,
    pub failure_interval: Duration,
    pub recovery_interval: Duration,
    pub down: u32,
    pub up: u32,
    pub initial_up: bool,
    /// `check_quality 1`: a round that gets answers but too slowly or with too much loss
    /// counts as bad.
    pub quality: Option<Quality>,
    /// `passive` (default on): the LAN's own unanswered connections make the link suspect,
    /// and a burst of probes confirms or clears it at once.
    pub passive: bool,
}

/// mwan3's quality thresholds. A round is judged on its own replies: while the link is in use
/// it is bad at `failure_latency` or `failure_loss` and above; while it is out of use it is
/// good only at `recovery_latency` and `recovery_loss` or below (hysteresis, so a link at the
/// edge does not flap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quality {
    pub failure_latency: Duration,
    pub recovery_latency: Duration,
    /// Percent of the round's requests lost.
    pub failure_loss: u32,
    pub recovery_loss: u32,
}

impl Default for Quality {
    /// mwan3's defaults.
    fn default() -> Self {
        Quality {
            failure_latency: Duration::from_millis(1000),
            recovery_latency: Duration::from_millis(500),
            failure_loss: 40,
            recovery_loss: 10,
        }
    }
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            track_ip: Vec::new(),
            reliability: 1,
            count: 3,
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            failure_interval: DEFAULT_FAILURE_INTERVAL,
            recovery_interval: Duration::from_secs(1),
            down: 3,
            up: 5,
            initial_up: true,
            quality: None,
            passive: true,
        }
    }
}

/// The tracking options. `recovery_interval` defaults to `interval` (as in mwan3),
/// `failure_interval` to [`DEFAULT_FAILURE_INTERVAL`] or `interval` if that is shorter, and
/// `timeout` to 1 s or the shorter of `interval` and `recovery_interval`, so a lost round never
/// delays the next one unless the user asks for it (a round while failing waits less, see
/// `daemon::health`).
pub(super) fn read_track(r: &mut SectionReader, family: Family) -> Result<TrackConfig> {
    let d = TrackConfig::default();
    let mut track_ip: Vec<IpAddr> = Vec::new();
    for v in r.list("track_ip") {
        let addr = family.parse(v).ok_or_else(|| {
            r.error(
                "track_ip",
                format!("expected an {} address, got \"{v}\"", family.label()),
            )
        })?;
        if track_ip.contains(&addr) {
            return Err(r.error("track_ip", format!("{addr} is listed twice")));
        }
        track_ip.push(addr);
    }
    let reliability = r.int("reliability", d.reliability, 1, 1000)?;
    if !track_ip.is_empty() && reliability as usize > track_ip.len() {
        return Err(r.error(
            "reliability",
            format!(
                "expected at most the number of track_ip targets ({}), got {reliability}",
                track_ip.len()
            ),
        ));
    }
    let count = r.int("count", d.count, 1, 100)?;
    let interval = r.seconds("interval", d.interval)?;
    let failure_interval = r.seconds("failure_interval", interval.min(d.failure_interval))?;
    let recovery_interval = r.seconds("recovery_interval", interval)?;
    let timeout = r.seconds("timeout", d.timeout.min(interval).min(recovery_interval))?;
    for (option, value) in [
        ("interval", interval),
        ("recovery_interval", recovery_interval),
    ] {
        if timeout > value {
            r.warn(
                "timeout",
                format!(
                    "{} s is longer than {option} ({} s): a lost round lasts {0} s and delays the next one",
                    seconds(timeout),
                    seconds(value),
                ),
            );
        }
    }
    let down = r.int("down", d.down, 1, 1000)?;
    let up = r.int("up", d.up, 1, 1000)?;
    let initial_up = r.choice(
        "initial_state",
        d.initial_up,
        &[("online", true), ("offline", false)],
    )?;
    let quality = read_quality(r, timeout)?;
    let passive = r.bool("passive", d.passive)?;
    Ok(TrackConfig {
        track_ip,
        reliability,
        count,
        timeout,
        interval,
        failure_interval,
        recovery_interval,
        down,
        up,
        initial_up,
        quality,
        passive,
    })
}

/// `check_quality` and its thresholds (milliseconds and percent, as in mwan3). The thresholds
/// are read (and checked) even when quality checks are off, so a typo is caught at once.
fn read_quality(r: &mut SectionReader, timeout: Duration) -> Result<Option<Quality>> {
    let d = Quality::default();
    let on = r.bool("check_quality", false)?;
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let max_ms = 60_000;
    let failure_ms = r.int("failure_latency", millis(d.failure_latency), 1, max_ms)?;
    let recovery_ms = r.int("recovery_latency", millis(d.recovery_latency), 1, max_ms)?;
    let failure_loss = r.int("failure_loss", d.failure_loss, 0, 100)?;
    let recovery_loss = r.int("recovery_loss", d.recovery_loss, 0, 100)?;
    if recovery_ms > failure_ms {
        return Err(r.error(
            "recovery_latency",
            format!("expected at most failure_latency ({failure_ms} ms), got {recovery_ms}"),
        ));
    }
    if recovery_loss > failure_loss {
        return Err(r.error(
            "recovery_loss",
            format!("expected at most failure_loss ({failure_loss}%), got {recovery_loss}"),
        ));
    }
    let quality = Quality {
        failure_latency: Duration::from_millis(u64::from(failure_ms)),
        recovery_latency: Duration::from_millis(u64::from(recovery_ms)),
        failure_loss,
        recovery_loss,
    };
    if on && quality.failure_latency >= timeout {
        r.warn(
            "failure_latency",
            format!(
                "{failure_ms} ms is not below timeout ({} s): slower replies count as lost anyway",
                seconds(timeout)
            ),
        );
    }
    Ok(on.then_some(quality))
}

/// A duration as the user would write it (`1`, `0.5`), exactly and without float formatting.
fn seconds(d: Duration) -> String {
    let text = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::interface;
    use crate::config::raw::{RawSection, RawValue};

    fn read(options: &[(&str, &str)]) -> Result<(TrackConfig, Vec<String>)> {
        let section = RawSection {
            kind: "interface".into(),
            name: "wanb".into(),
            anonymous: false,
            type_index: 0,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), RawValue::Single(v.to_string())))
                .collect(),
        };
        let mut r = SectionReader::new(&section);
        let track = read_track(&mut r, Family::Ipv4)?;
        Ok((track, r.warnings()))
    }

    #[test]
    fn quality_is_off_by_default_and_takes_mwan3_thresholds() {
        let (track, _) = read(&[]).unwrap();
        assert_eq!((track.quality, track.passive), (None, true));
        let (track, warnings) = read(&[
            ("check_quality", "1"),
            ("failure_latency", "800"),
            ("recovery_latency", "300"),
            ("failure_loss", "50"),
            ("recovery_loss", "5"),
            ("passive", "0"),
        ])
        .unwrap();
        assert_eq!(
            track.quality,
            Some(Quality {
                failure_latency: Duration::from_millis(800),
                recovery_latency: Duration::from_millis(300),
                failure_loss: 50,
                recovery_loss: 5,
            })
        );
        assert!(!track.passive);
        assert!(warnings.is_empty(), "{warnings:?}");
        let (track, _) = read(&[("check_quality", "1")]).unwrap();
        assert_eq!(track.quality, Some(Quality::default()));
    }

    #[test]
    fn quality_errors_name_the_option() {
        for (options, expected) in [
            (
                &[("failure_loss", "101")][..],
                "interface 'wanb' option 'failure_loss': expected an integer 0..100, got \"101\"",
            ),
            (
                &[("failure_latency", "200"), ("recovery_latency", "300")][..],
                "interface 'wanb' option 'recovery_latency': expected at most failure_latency (200 ms), got 300",
            ),
            (
                &[("failure_loss", "20"), ("recovery_loss", "30")][..],
                "interface 'wanb' option 'recovery_loss': expected at most failure_loss (20%), got 30",
            ),
            (
                &[("passive", "maybe")][..],
                "interface 'wanb' option 'passive': expected a boolean (1/0, yes/no, on/off), got \"maybe\"",
            ),
        ] {
            assert_eq!(read(options).unwrap_err().to_string(), expected);
        }
        let (_, warnings) = read(&[("check_quality", "1"), ("failure_latency", "1500")]).unwrap();
        assert_eq!(
            warnings,
            [
                "interface 'wanb' option 'failure_latency': 1500 ms is not below timeout (1 s): slower replies count as lost anyway"
            ]
        );
    }

    #[test]
    fn tracking_defaults_follow_the_intervals() {
        let c = interface("").unwrap();
        let iface = &c.interfaces[0];
        assert_eq!(iface.track, TrackConfig::default());

        let c = interface(
            r#","track_ip":["172.31.255.1","172.31.255.2"],"interval":"0.5","reliability":"2""#,
        )
        .unwrap();
        let track = &c.interfaces[0].track;
        assert_eq!(track.track_ip.len(), 2);
        assert_eq!(track.reliability, 2);
        assert_eq!(track.interval, Duration::from_millis(500));
        assert_eq!(track.failure_interval, Duration::from_millis(300));
        assert_eq!(track.recovery_interval, Duration::from_millis(500));
        assert_eq!(track.timeout, Duration::from_millis(500));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn tracking_options_in_mwan3_words() {
        let c = interface(
            r#","track_ip":"172.31.255.1","count":"2","timeout":"0.25","failure_interval":"0.5","recovery_interval":"3","down":"2","up":"4","initial_state":"offline""#,
        )
        .unwrap();
        assert_eq!(
            c.interfaces[0].track,
            TrackConfig {
                track_ip: vec![std::net::Ipv4Addr::new(172, 31, 255, 1).into()],
                reliability: 1,
                count: 2,
                timeout: Duration::from_millis(250),
                interval: Duration::from_secs(1),
                failure_interval: Duration::from_millis(500),
                recovery_interval: Duration::from_secs(3),
                down: 2,
                up: 4,
                initial_up: false,
                ..TrackConfig::default()
            }
        );
    }

    #[test]
    fn tracking_errors_name_section_and_option() {
        let cases = [
            (
                r#","track_ip":["172.31.255.1"],"reliability":"2""#,
                "interface 'wanb' option 'reliability': expected at most the number of track_ip targets (1), got 2",
            ),
            (
                r#","reliability":"0""#,
                "interface 'wanb' option 'reliability': expected an integer 1..1000, got \"0\"",
            ),
            (
                r#","count":"0""#,
                "interface 'wanb' option 'count': expected an integer 1..100, got \"0\"",
            ),
            (
                r#","interval":"0""#,
                "interface 'wanb' option 'interval': expected seconds greater than 0 and at most 3600 (like 1 or 0.5), got \"0\"",
            ),
            (
                r#","failure_interval":"-1""#,
                "interface 'wanb' option 'failure_interval': expected seconds greater than 0 and at most 3600 (like 1 or 0.5), got \"-1\"",
            ),
            (
                r#","timeout":"0.0""#,
                "interface 'wanb' option 'timeout': expected seconds greater than 0 and at most 3600 (like 1 or 0.5), got \"0.0\"",
            ),
            (
                r#","track_ip":["example.com"]"#,
                "interface 'wanb' option 'track_ip': expected an IPv4 address, got \"example.com\"",
            ),
            (
                r#","track_ip":["172.31.255.1","172.31.255.1"]"#,
                "interface 'wanb' option 'track_ip': 172.31.255.1 is listed twice",
            ),
            (
                r#","initial_state":"up""#,
                "interface 'wanb' option 'initial_state': expected one of online|offline, got \"up\"",
            ),
        ];
        for (options, expected) in cases {
            let e = interface(options).unwrap_err();
            assert_eq!(e.to_string(), expected);
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn timeout_longer_than_an_interval_warns() {
        let c = interface(r#","track_ip":"172.31.255.1","timeout":"2","recovery_interval":"5""#)
            .unwrap();
        assert_eq!(c.interfaces[0].track.timeout, Duration::from_secs(2));
        assert_eq!(
            c.warnings,
            [
                "interface 'wanb' option 'timeout': 2 s is longer than interval (1 s): a lost round lasts 2 s and delays the next one",
            ]
        );
    }
}
