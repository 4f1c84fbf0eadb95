//! Typed readers for single UCI option values.
//!
//! Each reader knows the section label and option name, so every error it returns already
//! says where the bad value is and what was expected.

use crate::config::family::{Cidr, Family};
use crate::config::raw::{RawSection, RawValue};
use crate::error::{Error, Result};
use std::net::IpAddr;
use std::time::Duration;

/// The longest duration option we accept: an hour between probe rounds is already useless.
pub const MAX_SECONDS: u64 = 3600;

/// One section being read: remembers which options were consumed so the rest can be warned
/// about as unknown.
pub struct SectionReader<'a> {
    pub section: &'a RawSection,
    pub label: String,
    used: Vec<&'static str>,
    warnings: Vec<String>,
}

impl<'a> SectionReader<'a> {
    /// Starts reading `section`.
    pub fn new(section: &'a RawSection) -> Self {
        SectionReader {
            section,
            label: section.label(),
            used: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// An error about `option` of this section.
    pub fn error(&self, option: &str, message: impl Into<String>) -> Error {
        Error::config(&self.label, Some(option), message)
    }

    /// The option's single value; a list where one value is expected is an error.
    pub fn single(&mut self, option: &'static str) -> Result<Option<&'a str>> {
        self.used.push(option);
        match self.section.get(option) {
            None => Ok(None),
            Some(RawValue::Single(s)) => Ok(Some(s.as_str())),
            Some(RawValue::List(_)) => {
                Err(self.error(option, "expected a single value, got a list"))
            }
        }
    }

    /// The option's values; a single value counts as a one-item list (UCI allows both).
    pub fn list(&mut self, option: &'static str) -> Vec<&'a str> {
        self.used.push(option);
        match self.section.get(option) {
            None => Vec::new(),
            Some(RawValue::Single(s)) => s.split_whitespace().collect(),
            Some(RawValue::List(items)) => items.iter().map(String::as_str).collect(),
        }
    }

    /// Records a non-fatal finding about `option` of this section.
    pub fn warn(&mut self, option: &str, message: impl std::fmt::Display) {
        self.warnings
            .push(format!("{} option '{option}': {message}", self.label));
    }

    /// A UCI boolean (1/0, yes/no, on/off, true/false, enabled/disabled).
    pub fn bool(&mut self, option: &'static str, default: bool) -> Result<bool> {
        match self.single(option)? {
            None => Ok(default),
            Some(v) => match v {
                "1" | "yes" | "on" | "true" | "enabled" => Ok(true),
                "0" | "no" | "off" | "false" | "disabled" => Ok(false),
                _ => Err(self.error(
                    option,
                    format!("expected a boolean (1/0, yes/no, on/off), got \"{v}\""),
                )),
            },
        }
    }

    /// An unsigned integer within `min..=max` (decimal, or hex with 0x).
    pub fn int(&mut self, option: &'static str, default: u32, min: u32, max: u32) -> Result<u32> {
        match self.single(option)? {
            None => Ok(default),
            Some(v) => match parse_u32(v) {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(self.error(
                    option,
                    format!("expected an integer {min}..{max}, got \"{v}\""),
                )),
            },
        }
    }

    /// A duration in seconds, decimals allowed (`0.5`), greater than 0 and at most
    /// [`MAX_SECONDS`].
    pub fn seconds(&mut self, option: &'static str, default: Duration) -> Result<Duration> {
        match self.single(option)? {
            None => Ok(default),
            Some(v) => parse_seconds(v).ok_or_else(|| {
                self.error(
                    option,
                    format!("expected seconds greater than 0 and at most {MAX_SECONDS} (like 1 or 0.5), got \"{v}\""),
                )
            }),
        }
    }

    /// An address of `family`.
    pub fn address(&mut self, option: &'static str, family: Family) -> Result<Option<IpAddr>> {
        match self.single(option)? {
            None => Ok(None),
            Some(v) => family.parse(v).map(Some).ok_or_else(|| {
                self.error(
                    option,
                    format!("expected an {} address, got \"{v}\"", family.label()),
                )
            }),
        }
    }

    /// A kernel network device name, checked so it is valid for the kernel and safe to quote.
    pub fn device(&mut self, option: &'static str) -> Result<Option<String>> {
        match self.single(option)? {
            None => Ok(None),
            Some(v) => self.checked_device(option, v).map(Some),
        }
    }

    /// Kernel network device names, each checked like [`SectionReader::device`].
    pub fn devices(&mut self, option: &'static str) -> Result<Vec<String>> {
        self.list(option)
            .into_iter()
            .map(|dev| self.checked_device(option, dev))
            .collect()
    }

    /// `name` if [`check_device`] accepts it, else an error about `option`.
    fn checked_device(&self, option: &str, name: &str) -> Result<String> {
        check_device(name)
            .map(|()| name.to_string())
            .map_err(|why| self.error(option, format!("{why}, got \"{name}\"")))
    }

    /// Addresses or prefixes of either family.
    pub fn cidrs(&mut self, option: &'static str) -> Result<Vec<Cidr>> {
        self.list(option)
            .into_iter()
            .map(|v| {
                Cidr::parse(v).ok_or_else(|| {
                    self.error(
                        option,
                        format!("expected an IPv4 or IPv6 address or prefix, got \"{v}\""),
                    )
                })
            })
            .collect()
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(
        &mut self,
        option: &'static str,
        default: T,
        words: &[(&str, T)],
    ) -> Result<T> {
        match self.single(option)? {
            None => Ok(default),
            Some(v) => words
                .iter()
                .find(|(word, _)| *word == v)
                .map(|(_, value)| *value)
                .ok_or_else(|| {
                    let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                    self.error(
                        option,
                        format!("expected one of {}, got \"{v}\"", names.join("|")),
                    )
                }),
        }
    }

    /// Everything to warn about: findings recorded with [`SectionReader::warn`], then the
    /// unknown options.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.warnings.clone();
        out.extend(self.unknown_options());
        out
    }

    /// Warnings for options nobody asked for: probably typos, never fatal.
    pub fn unknown_options(&self) -> Vec<String> {
        self.section
            .options
            .iter()
            .filter(|(name, _)| !self.used.contains(&name.as_str()))
            .map(|(name, _)| format!("{} option '{name}': unknown option, ignored", self.label))
            .collect()
    }
}

/// Decimal or 0x-prefixed hexadecimal.
pub fn parse_u32(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Seconds as `N` or `N.F` (up to nanoseconds), within `(0, MAX_SECONDS]`; parsed without
/// floating point so `0.1` is exactly 100 ms.
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) if digits(fraction) && fraction.len() <= 9 => (whole, fraction),
        Some(_) => return None,
        None => (text, ""),
    };
    if !digits(whole) {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    let duration = Duration::new(secs, nanos);
    (!duration.is_zero() && duration <= Duration::from_secs(MAX_SECONDS)).then_some(duration)
}

/// Linux accepts up to 15 bytes and no '/', ':' or whitespace; we also refuse quotes and other
/// punctuation so a name can never break the rule text it is written into.
pub fn check_device(name: &str) -> std::result::Result<(), &'static str> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    if name.is_empty() || name.len() > 15 || name == "." || name == ".." || !valid_chars {
        Err("expected a device name of 1..15 characters [A-Za-z0-9_.@-]")
    } else {
        Ok(())
    }
}

/// UCI section names are `[A-Za-z0-9_]`; we also bound the length since names become chain
/// names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(options: &[(&str, &str)]) -> RawSection {
        RawSection {
            kind: "interface".into(),
            name: "wanb".into(),
            anonymous: false,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), RawValue::Single(v.to_string())))
                .collect(),
            type_index: 1,
        }
    }

    #[test]
    fn int_out_of_range_names_place_and_range() {
        let s = section(&[("weight", "x")]);
        let mut r = SectionReader::new(&s);
        assert_eq!(
            r.int("weight", 1, 1, 1000).unwrap_err().to_string(),
            "interface 'wanb' option 'weight': expected an integer 1..1000, got \"x\""
        );
    }

    #[test]
    fn hex_and_bool_forms() {
        let s = section(&[("mark_mask", "0x3F00"), ("enabled", "off")]);
        let mut r = SectionReader::new(&s);
        assert_eq!(r.int("mark_mask", 0, 1, u32::MAX).unwrap(), 0x3f00);
        assert!(!r.bool("enabled", true).unwrap());
    }

    #[test]
    fn seconds_accept_decimals_and_reject_the_rest() {
        assert_eq!(parse_seconds("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_seconds("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_seconds("2.25"), Some(Duration::from_millis(2250)));
        assert_eq!(parse_seconds("0.000000001"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_seconds("3600"), Some(Duration::from_secs(3600)));
        for bad in [
            "",
            "0",
            "0.0",
            ".5",
            "5.",
            "-1",
            "1e3",
            "1,5",
            " 1",
            "3600.1",
            "1.0000000001",
        ] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
        let s = section(&[("timeout", "x")]);
        let mut r = SectionReader::new(&s);
        assert_eq!(
            r.seconds("timeout", Duration::from_secs(1))
                .unwrap_err()
                .to_string(),
            "interface 'wanb' option 'timeout': expected seconds greater than 0 and at most 3600 (like 1 or 0.5), got \"x\""
        );
    }

    #[test]
    fn device_names_are_checked() {
        assert!(check_device("pppoe-wan").is_ok());
        assert!(check_device("eth0.2").is_ok());
        assert!(check_device("a-very-long-devname").is_err());
        assert!(check_device("eth\"0").is_err());
        assert!(check_device("").is_err());
    }

    #[test]
    fn unknown_options_become_warnings() {
        let s = section(&[("weight", "2"), ("wieght", "3")]);
        let mut r = SectionReader::new(&s);
        r.int("weight", 1, 1, 1000).unwrap();
        assert_eq!(
            r.unknown_options(),
            ["interface 'wanb' option 'wieght': unknown option, ignored"]
        );
    }
}
