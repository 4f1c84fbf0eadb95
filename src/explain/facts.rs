//! What the kernel and the clock say right now, which the decision takes as given: the
//! elements of our sets, and the time the rules' schedules are matched against.

use crate::config::Cidr;
use crate::error::{Error, Result};
use serde_json::Value;
use std::net::IpAddr;

/// What the kernel holds right now: the elements of every set in our table; and the time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// (kernel set name, its elements).
    pub sets: Vec<(String, Vec<Cidr>)>,
    /// When the question is asked.
    pub now: Moment,
}

/// A moment as one clock shows it: seconds since midnight, weekday (0 Monday), month day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    pub seconds: u32,
    pub weekday: u32,
    pub monthday: u32,
}

/// A moment on the router's local clock and in UTC, as schedules are matched against it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moment {
    pub local: Clock,
    pub utc: Clock,
}

impl Facts {
    /// Reads the sets of an `nft -j list table` listing.
    pub fn parse(text: &str) -> Result<Facts> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::ToolOutput(format!("unexpected output of nft -j: {e}")))?;
        let mut sets = Vec::new();
        for item in value["nftables"].as_array().into_iter().flatten() {
            let Some(set) = item.get("set") else { continue };
            let Some(name) = set["name"].as_str() else {
                continue;
            };
            let elements = set["elem"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(element)
                .collect();
            sets.push((name.to_string(), elements));
        }
        Ok(Facts {
            sets,
            now: Moment::default(),
        })
    }

    /// Whether kernel set `name` holds `addr`.
    pub fn contains(&self, name: &str, addr: IpAddr) -> bool {
        self.sets
            .iter()
            .any(|(n, elements)| n == name && elements.iter().any(|p| p.contains(&addr)))
    }
}

/// One set element of nft's JSON: an address or a prefix, possibly wrapped with its timeout.
fn element(value: &Value) -> Option<Cidr> {
    match value {
        Value::String(text) => Cidr::parse(text),
        Value::Object(map) => {
            if let Some(inner) = map.get("elem") {
                return element(&inner["val"]);
            }
            let prefix = map.get("prefix")?;
            let addr = prefix["addr"].as_str()?;
            let len = prefix["len"].as_u64()?;
            Cidr::parse(&format!("{addr}/{len}"))
        }
        _ => None,
    }
}
