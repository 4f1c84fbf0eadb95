//! `status.json`: the daemon's view of every link, for `connmark-lb status`, LuCI and scripts.
//!
//! Written atomically (temp file + rename) whenever something in it changed, removed when the
//! daemon exits, so its presence means a daemon is tracking.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::daemon::decide::health::WindowFigures;
use crate::daemon::decide::link::TrackedLink;
use crate::daemon::kernel::counters::Counters;
use crate::error::{Error, Result};
use crate::names::STATUS_FILE;
use crate::plan::Plan;
use crate::state;

/// The whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonStatus {
    /// The daemon's process id (for signals).
    pub pid: u32,
    /// Times the daemon applied again because its rules, ip rules or routes were changed
    /// behind its back.
    pub reapplies: u64,
    /// `nftables` or `iptables`: the backend the rules are loaded with.
    pub backend: String,
    pub links: Vec<LinkStatus>,
}

/// One enabled interface.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStatus {
    pub interface: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The kernel device, when known.
    pub device: Option<String>,
    /// `up`, `failing`, `down` or `recovering`.
    pub state: String,
    /// Whether new connections may use the link.
    pub usable: bool,
    /// Whether the link is probed (it has `track_ip` targets).
    pub tracked: bool,
    /// Mean round-trip time of the last round that got replies, in microseconds (integers:
    /// no float formatting in the binary).
    pub rtt_us: Option<u64>,
    /// Requests lost in the last round, in percent.
    pub loss_percent: Option<u32>,
    /// Loss and latency over the last rounds (`window_rounds`, `window_loss_percent`,
    /// `window_rtt_us`).
    pub window: WindowFigures,
    /// When the state last changed (or tracking started), in unix seconds.
    pub last_change: u64,
    /// Probe bytes (IP layer) sent and received today, and the 30-day figure at today's pace.
    pub probe_bytes: (u64, u64, Option<u64>),
    /// Whether some policy spreads new connections over the link now.
    pub in_use: bool,
}

impl LinkStatus {
    /// What status.json says about `link`.
    pub fn of(link: &TrackedLink) -> LinkStatus {
        let health = link.health();
        LinkStatus {
            interface: link.name.clone(),
            family: link.route.family.name().to_string(),
            device: link.route.device.clone(),
            state: health.state().as_str().to_string(),
            usable: link.usable(),
            tracked: health.is_tracked(),
            rtt_us: health.last_rtt().map(micros),
            loss_percent: link.last_loss(),
            window: health.window(),
            last_change: link
                .last_change()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            probe_bytes: {
                let now = SystemTime::now();
                let (sent, received) = link.budget().today(now);
                (sent, received, link.budget().projected_30_days(now))
            },
            in_use: link.in_use(),
        }
    }
}

impl DaemonStatus {
    /// The JSON document; written by hand rather than derived, which keeps the binary small.
    pub fn to_json(&self) -> Value {
        let links: Vec<Value> = self
            .links
            .iter()
            .map(|l| {
                json!({
                    "interface": l.interface,
                    "family": l.family,
                    "device": l.device,
                    "state": l.state,
                    "usable": l.usable,
                    "tracked": l.tracked,
                    "rtt_us": l.rtt_us,
                    "loss_percent": l.loss_percent,
                    "window_rounds": l.window.rounds,
                    "window_loss_percent": l.window.loss_percent,
                    "window_rtt_us": l.window.rtt.map(micros),
                    "last_change": l.last_change,
                    "in_use": l.in_use,
                    "probe_bytes_sent_today": l.probe_bytes.0,
                    "probe_bytes_received_today": l.probe_bytes.1,
                    "probe_bytes_30d_projected": l.probe_bytes.2,
                })
            })
            .collect();
        json!({ "pid": self.pid, "backend": self.backend, "reapplies": self.reapplies, "links": links })
    }
}

/// What the ubus `status` call answers: `status` (status.json's content) with each link's
/// `rx_bytes` and `tx_bytes` (its device's counters) and `new_connections` (since the last
/// full apply); null where a figure cannot be had (no device, no rules loaded).
pub fn live(status: &DaemonStatus, counters: &Counters, plan: &Plan) -> Map<String, Value> {
    let mut reply = match status.to_json() {
        Value::Object(reply) => reply,
        _ => Map::new(),
    };
    if let Some(Value::Array(links)) = reply.get_mut("links") {
        for (json, link) in links.iter_mut().zip(&status.links) {
            let bytes = link.device.as_ref().and_then(|d| counters.device_bytes(d));
            json["rx_bytes"] = json!(bytes.map(|(rx, _)| rx));
            json["tx_bytes"] = json!(bytes.map(|(_, tx)| tx));
            json["new_connections"] = json!(counters.new_connections(plan, &link.interface));
        }
    }
    reply
}

/// A duration in whole microseconds (integers: no float formatting in the binary).
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Replaces the status file in `dir`.
pub fn save(dir: &Path, status: &DaemonStatus) -> Result<()> {
    let text = serde_json::to_string_pretty(&status.to_json())
        .map_err(|e| Error::State(format!("encoding {STATUS_FILE}: {e}")))?;
    state::write_atomic(&dir.join(STATUS_FILE), format!("{text}\n").as_bytes())
}

/// Removes the status file (the daemon is exiting).
pub fn remove(dir: &Path) -> Result<()> {
    let path = dir.join(STATUS_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path.display(), e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_file_says_not_running() {
        let dir = std::env::temp_dir().join(format!("cmlb-status-{}", std::process::id()));
        let status = DaemonStatus {
            pid: 42,
            reapplies: 1,
            backend: "nftables".into(),
            links: vec![LinkStatus {
                interface: "wanb".into(),
                family: "ipv4".into(),
                device: Some("eth2".into()),
                state: "failing".into(),
                usable: true,
                tracked: true,
                rtt_us: Some(1250),
                loss_percent: Some(100),
                window: WindowFigures {
                    rounds: 4,
                    loss_percent: Some(25),
                    rtt: Some(std::time::Duration::from_micros(1500)),
                },
                last_change: 1_700_000_000,
                probe_bytes: (13_200, 13_156, Some(684_288_000)),
                in_use: false,
            }],
        };
        save(&dir, &status).unwrap();
        let error = crate::state::daemon_status(&dir).unwrap_err();
        assert!(
            error.to_string().contains("pid 42 is not a live"),
            "{error}"
        );
        let text = std::fs::read_to_string(dir.join(STATUS_FILE)).unwrap();
        assert!(text.contains("\"loss_percent\": 100"), "{text}");
        assert!(text.contains("\"window_loss_percent\": 25"), "{text}");
        assert!(text.contains("\"window_rtt_us\": 1500"), "{text}");
        assert!(
            text.contains("\"probe_bytes_30d_projected\": 684288000"),
            "{text}"
        );
        assert!(text.contains("\"in_use\": false"), "{text}");
        remove(&dir).unwrap();
        let error = crate::state::daemon_status(&dir).unwrap_err();
        assert!(error.to_string().contains("is not running"), "{error}");
        remove(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
