//! The rule matches beyond addresses and ports: when (`start_time`, `stop_time`, `weekdays`,
//! `monthdays`, `utc_time`, spelled as firewall4 spells them) and where from (`src_mac`,
//! `src_dev`). Reading and the small facts the renderers and `explain` share live here.

use super::value::SectionReader;
use crate::error::Result;

/// Seconds in a day: times of day are seconds since midnight, `0..DAY`.
pub const DAY: u32 = 86_400;

/// Day names in firewall4's order (Monday first), which nft also understands.
pub const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A set of days (weekdays 0..7 from Monday, or month days 1..=31), possibly inverted (`!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    /// Bit `n` set: day `n` is listed.
    pub bits: u32,
    /// Written with a leading `!`: every day but those listed.
    pub invert: bool,
}

impl Days {
    /// Whether day `n` matches.
    pub fn contains(&self, n: u32) -> bool {
        (self.bits >> n & 1 == 1) != self.invert
    }

    /// The listed days, in order.
    pub fn listed(&self) -> impl Iterator<Item = u32> + '_ {
        (0..32).filter(|n| self.bits >> n & 1 == 1)
    }
}

/// When a rule matches: a time of day range, weekdays and month days, in local time or UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Inclusive seconds since midnight (`start_time` alone runs to 23:59:59, `stop_time`
    /// alone from 00:00:00); `from > to` crosses midnight. None: all day.
    pub hours: Option<(u32, u32)>,
    pub weekdays: Option<Days>,
    pub monthdays: Option<Days>,
    /// `utc_time 1`: the times and days are UTC, not the router's local time.
    pub utc: bool,
}

impl Schedule {
    /// Whether `seconds` since midnight lie in the time range (either side of midnight when
    /// it crosses).
    pub fn in_hours(&self, seconds: u32) -> bool {
        match self.hours {
            None => true,
            Some((from, to)) if from <= to => (from..=to).contains(&seconds),
            Some((from, to)) => seconds >= from || seconds <= to,
        }
    }

    /// Whether the moment matches: seconds since midnight, weekday (0 Monday) and month day,
    /// all in the schedule's clock. The day is the day of the moment, also in the part of a
    /// range after midnight.
    pub fn matches(&self, seconds: u32, weekday: u32, monthday: u32) -> bool {
        self.in_hours(seconds)
            && self.weekdays.is_none_or(|d| d.contains(weekday))
            && self.monthdays.is_none_or(|d| d.contains(monthday))
    }
}

/// `HH:MM:SS` of seconds since midnight.
pub fn clock(seconds: u32) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// A hardware address, as `src_mac` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Mac {
    /// Six groups of one or two hex digits separated by `:` or `-` (firewall4's forms).
    pub fn parse(text: &str) -> Option<Mac> {
        let groups: Vec<&str> = text.split([':', '-']).collect();
        let mut mac = [0u8; 6];
        if groups.len() != 6 {
            return None;
        }
        for (byte, group) in mac.iter_mut().zip(groups) {
            if group.is_empty() || group.len() > 2 || !group.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return None;
            }
            *byte = u8::from_str_radix(group, 16).ok()?;
        }
        Some(Mac(mac))
    }
}

/// A rule's time options; None when it names no time, weekday or month day.
pub(super) fn read_schedule(r: &mut SectionReader) -> Result<Option<Schedule>> {
    let start = read_time(r, "start_time")?;
    let stop = read_time(r, "stop_time")?;
    let weekdays = read_days(r, "weekdays", 0, 6, |word| {
        let lower = word.to_ascii_lowercase();
        WEEKDAYS
            .iter()
            .position(|day| day.to_ascii_lowercase().starts_with(&lower))
            .map(|n| n as u32)
    })?;
    let monthdays = read_days(r, "monthdays", 1, 31, |word| word.parse().ok())?;
    let utc = r.bool("utc_time", false)?;
    let hours = match (start, stop) {
        (None, None) => None,
        (from, to) => Some((from.unwrap_or(0), to.unwrap_or(DAY - 1))),
    };
    if hours.is_none() && weekdays.is_none() && monthdays.is_none() {
        return Ok(None);
    }
    Ok(Some(Schedule {
        hours,
        weekdays,
        monthdays,
        utc,
    }))
}

/// `H`, `H:M` or `H:M:S` (one or two digits each) as seconds since midnight.
fn read_time(r: &mut SectionReader, option: &'static str) -> Result<Option<u32>> {
    let Some(text) = r.single(option)? else {
        return Ok(None);
    };
    let parts: Vec<&str> = text.split(':').collect();
    let limits = [23, 59, 59];
    let mut seconds = 0;
    let mut valid = (1..=3).contains(&parts.len());
    for (i, limit) in limits.iter().enumerate() {
        let value = match parts.get(i) {
            None => 0,
            Some(p) if (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u32>().unwrap_or(u32::MAX)
            }
            Some(_) => u32::MAX,
        };
        valid &= value <= *limit;
        seconds = seconds * 60 + value.min(59);
    }
    if valid {
        Ok(Some(seconds))
    } else {
        Err(r.error(
            option,
            format!("expected a time of day HH:MM[:SS] (00:00:00..23:59:59), got \"{text}\""),
        ))
    }
}

/// A list of days with an optional leading `!`; `day` reads one word as a day number within
/// `first..=last`.
fn read_days(
    r: &mut SectionReader,
    option: &'static str,
    first: u32,
    last: u32,
    day: impl Fn(&str) -> Option<u32>,
) -> Result<Option<Days>> {
    let words = r.list(option);
    let mut days = Days {
        bits: 0,
        invert: false,
    };
    for (i, word) in words.iter().enumerate() {
        let word = match word.strip_prefix('!') {
            Some(rest) if i == 0 => {
                days.invert = true;
                rest
            }
            _ => word,
        };
        if word.is_empty() {
            continue;
        }
        match day(word).filter(|n| (first..=last).contains(n)) {
            Some(n) => days.bits |= 1 << n,
            None => {
                let expected = if option == "weekdays" {
                    "day names (Monday .. Sunday, or their first letters: Mon, tue)".to_string()
                } else {
                    format!("day numbers {first}..{last}")
                };
                return Err(r.error(
                    option,
                    format!("expected {expected}, an optional ! first, got \"{word}\""),
                ));
            }
        }
    }
    match (days.bits, words.is_empty()) {
        (_, true) => Ok(None),
        (0, false) => Err(r.error(option, "expected at least one day after the !")),
        _ => Ok(Some(days)),
    }
}

/// A rule's `src_mac`: one or a list of hardware addresses.
pub(super) fn read_macs(r: &mut SectionReader) -> Result<Vec<Mac>> {
    let mut macs: Vec<Mac> = Vec::new();
    for word in r.list("src_mac") {
        let mac = Mac::parse(word).ok_or_else(|| {
            r.error(
                "src_mac",
                format!("expected a hardware address like 02:00:5e:10:00:01, got \"{word}\""),
            )
        })?;
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    Ok(macs)
}

/// A rule's `src_dev`: the kernel devices new connections must come in on (`br-guest`,
/// `eth0.3`).
pub(super) fn read_src_dev(r: &mut SectionReader) -> Result<Vec<String>> {
    let mut devices: Vec<String> = Vec::new();
    for device in r.devices("src_dev")? {
        if !devices.contains(&device) {
            devices.push(device);
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::config;

    fn rule(options: &str) -> Result<Option<Schedule>> {
        config(&format!(
            r#"{{"values":{{
            "wan":{{".type":"interface",".name":"wan",".index":1,"device":"eth1"}},
            "r":{{".type":"rule",".name":"r",".index":2,"use_policy":"default"{options}}}}}}}"#
        ))
        .map(|c| c.rules[0].schedule)
    }

    #[test]
    fn times_are_read_as_firewall4_spells_them() {
        assert_eq!(rule("").unwrap(), None);
        let s = rule(r#","start_time":"21:51:23","stop_time":"23:51""#)
            .unwrap()
            .unwrap();
        assert_eq!(s.hours, Some((78_683, 85_860)));
        assert!(!s.utc);
        let s = rule(r#","start_time":"22","utc_time":"1""#)
            .unwrap()
            .unwrap();
        assert_eq!((s.hours, s.utc), (Some((79_200, DAY - 1)), true));
        let s = rule(r#","stop_time":"6:5""#).unwrap().unwrap();
        assert_eq!(s.hours, Some((0, 6 * 3600 + 5 * 60)));
        for bad in ["24:00", "12:60", "1:2:3:4", "", "ab", "12:5:", "-1", "123"] {
            let e = rule(&format!(r#","start_time":"{bad}""#)).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "rule 'r' option 'start_time': expected a time of day HH:MM[:SS] (00:00:00..23:59:59), got \"{bad}\""
                )
            );
        }
    }

    #[test]
    fn days_take_names_prefixes_numbers_and_a_leading_bang() {
        let s = rule(r#","weekdays":"Monday tuEsday wed SUN Th""#)
            .unwrap()
            .unwrap();
        let days = s.weekdays.unwrap();
        assert_eq!(days.listed().collect::<Vec<_>>(), [0, 1, 2, 3, 6]);
        assert!(!days.invert && s.hours.is_none());
        let s = rule(r#","weekdays":["!Sat","Sun"],"monthdays":"1 15 31""#)
            .unwrap()
            .unwrap();
        assert_eq!(s.weekdays.unwrap().listed().collect::<Vec<_>>(), [5, 6]);
        assert!(s.weekdays.unwrap().invert);
        assert!(!s.weekdays.unwrap().contains(5) && s.weekdays.unwrap().contains(0));
        assert_eq!(
            s.monthdays.unwrap().listed().collect::<Vec<_>>(),
            [1, 15, 31]
        );
        let s = rule(r#","weekdays":"! Fri""#).unwrap().unwrap();
        assert!(s.weekdays.unwrap().invert);
        assert_eq!(
            rule(r#","weekdays":"Funday""#).unwrap_err().to_string(),
            "rule 'r' option 'weekdays': expected day names (Monday .. Sunday, or their first letters: Mon, tue), an optional ! first, got \"Funday\""
        );
        assert_eq!(
            rule(r#","monthdays":"32""#).unwrap_err().to_string(),
            "rule 'r' option 'monthdays': expected day numbers 1..31, an optional ! first, got \"32\""
        );
        assert!(rule(r#","monthdays":"!""#).is_err());
    }

    #[test]
    fn a_range_crossing_midnight_matches_both_sides() {
        let night = Schedule {
            hours: Some((22 * 3600, 6 * 3600)),
            weekdays: None,
            monthdays: None,
            utc: false,
        };
        assert!(night.in_hours(23 * 3600) && night.in_hours(0) && night.in_hours(6 * 3600));
        assert!(!night.in_hours(6 * 3600 + 1) && !night.in_hours(12 * 3600));
        let fridays = Schedule {
            weekdays: Some(Days {
                bits: 1 << 4,
                invert: false,
            }),
            ..night
        };
        assert!(fridays.matches(23 * 3600, 4, 1));
        assert!(
            !fridays.matches(3600, 5, 2),
            "the part after midnight is Saturday"
        );
        assert_eq!(clock(78_683), "21:51:23");
    }

    #[test]
    fn macs_and_devices() {
        assert_eq!(
            Mac::parse("2:0:5E:10:0").map(|m| m.to_string()),
            None,
            "five groups"
        );
        assert_eq!(
            Mac::parse("2-0-5E-10-0-1").unwrap().to_string(),
            "02:00:5e:10:00:01"
        );
        assert!(Mac::parse("02:00:5e:10:00:100").is_none());
        assert!(Mac::parse("02:00:5e:10:00:g1").is_none());
        let c = config(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
            "r":{".type":"rule",".name":"r",".index":2,"use_policy":"default",
                 "src_mac":["02:00:5e:10:00:01","02-00-5E-10-00-01","2:0:5e:10:0:2"],
                 "src_dev":"br-guest eth0.3"}}}"#,
        )
        .unwrap();
        let macs: Vec<String> = c.rules[0].src_mac.iter().map(Mac::to_string).collect();
        assert_eq!(macs, ["02:00:5e:10:00:01", "02:00:5e:10:00:02"]);
        assert_eq!(c.rules[0].src_dev, ["br-guest", "eth0.3"]);
        let e = config(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1"},
            "r":{".type":"rule",".name":"r",".index":2,"use_policy":"default","src_mac":"x"}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rule 'r' option 'src_mac': expected a hardware address like 02:00:5e:10:00:01, got \"x\""
        );
    }
}
