//! Where configuration and link state come from: files given on the command line, or the
//! router's own services over ubus.

pub mod ubus;

use crate::config::Config;
use crate::config::raw::RawConfig;
use crate::error::{Context, Error, Result};
use crate::netifd;
use crate::plan::LinkState;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one ubus exchange may take: a hung ubusd must not hang a hotplug reload.
pub const UBUS_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest config input read: a real config is a few KiB; `--uci /dev/zero` must not
/// fill the memory.
pub const MAX_INPUT: u64 = 1 << 20;

/// The UCI package we read.
pub const PACKAGE: &str = "connmark-lb";

/// Where the config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `ubus call uci get` JSON in a file.
    Json(PathBuf),
    /// The /etc/config text format.
    Uci(PathBuf),
    /// Live over ubus.
    Ubus(PathBuf),
}

impl ConfigSource {
    /// Reads and validates the config.
    pub fn load(&self) -> Result<Config> {
        let raw = match self {
            ConfigSource::Json(path) => RawConfig::from_json_text(&read(path)?)?,
            ConfigSource::Uci(path) => crate::config::uci_text::parse(&read(path)?)?,
            ConfigSource::Ubus(socket) => {
                let mut client = ubus::Client::connect(socket, UBUS_TIMEOUT)
                    .with_context(|| format!("connecting to ubus at {}", socket.display()))?;
                let reply = client.call("uci", "get", &json!({ "config": PACKAGE }))?;
                RawConfig::from_json(&reply)?
            }
        };
        Config::from_raw(&raw)
    }
}

/// Reads a config file of at most [`MAX_INPUT`] bytes. A file that cannot be read, is too big
/// or is not UTF-8 is bad input (exit 2), reported before anything is changed.
fn read(path: &Path) -> Result<String> {
    use std::io::Read;
    let shown = path.display().to_string();
    let bad = |why: String| Error::config(&shown, None, why);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_INPUT + 1).read_to_end(&mut bytes))
        .map_err(|e| bad(format!("cannot read the config: {e}")))?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(bad(format!(
            "the config is larger than {MAX_INPUT} bytes: refusing to read it"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "the config is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// How long resolving every netifd interface of one apply may take in all: a netifd that is
/// slow or silent must not stretch a hotplug reload by seconds per interface.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);

/// The current state of every interface: fixed values from the config, completed from netifd
/// for interfaces that name one, over one ubus connection and within [`RESOLVE_DEADLINE`]. A
/// netifd interface that is down, unknown, unreachable because ubus is not there or not
/// answered in time makes its link down, never an error; the warnings say why.
pub fn resolve_links(config: &Config, socket: &Path) -> (Vec<LinkState>, Vec<String>) {
    let deadline = Instant::now() + RESOLVE_DEADLINE;
    let mut warnings = Vec::new();
    let mut client: Option<ubus::Client> = None;
    // Why netifd cannot be asked any more (connection failed or broken, deadline passed).
    let mut gone: Option<String> = None;
    let mut states = Vec::with_capacity(config.interfaces.len());
    for iface in &config.interfaces {
        let mut state = LinkState::from_config(iface);
        if let (Some(name), true) = (&iface.netifd, iface.enabled) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && gone.is_none() {
                gone = Some(format!(
                    "no time left: netifd did not answer within {} s in all",
                    RESOLVE_DEADLINE.as_secs()
                ));
            }
            if client.is_none() && gone.is_none() {
                match ubus::Client::connect(socket, UBUS_TIMEOUT.min(left)) {
                    Ok(c) => client = Some(c),
                    Err(e) => gone = Some(e.to_string()),
                }
            }
            let asked = match (&gone, client.as_mut()) {
                (None, Some(c)) => {
                    c.set_timeout(UBUS_TIMEOUT.min(left));
                    netifd::link_status(c, name, iface.family).map_err(|e| e.to_string())
                }
                (why, _) => Err(why.clone().unwrap_or_default()),
            };
            let status = asked.unwrap_or_else(|e| {
                warnings.push(format!(
                    "interface '{}': cannot ask netifd about '{name}' ({e}): link down",
                    iface.name
                ));
                if gone.is_none() {
                    gone = Some(format!("an earlier call failed: {e}"));
                }
                netifd::NetifdLink::default()
            });
            let mut prefixes = iface.prefixes.clone();
            for prefix in status.prefixes {
                if !prefixes.contains(&prefix) {
                    prefixes.push(prefix);
                }
            }
            state = LinkState {
                device: iface.device.clone().or(status.device),
                gateway: iface.gateway.or(status.gateway),
                source: iface.source.or(status.address),
                prefixes,
                up: status.up,
            };
        }
        states.push(state);
    }
    (states, warnings)
}

/// Two enabled interfaces of one family whose (resolved) device is the same cannot both be
/// links (wan and wan6 on one device can): the later one is made down (no device) and the
/// conflict is returned, naming both.
pub fn shared_devices(config: &Config, states: &mut [LinkState]) -> Vec<String> {
    let mut conflicts = Vec::new();
    for i in 0..states.len().min(config.interfaces.len()) {
        let Some(device) = states[i].device.clone() else {
            continue;
        };
        let first = (0..i).find(|&j| {
            config.interfaces[j].enabled
                && config.interfaces[j].family == config.interfaces[i].family
                && states[j].device.as_deref() == Some(device.as_str())
        });
        if let (Some(j), true) = (first, config.interfaces[i].enabled) {
            conflicts.push(format!(
                "interfaces '{}' and '{}' both resolve to device {device} (the later one cannot \
                 be used)",
                config.interfaces[j].name, config.interfaces[i].name
            ));
            states[i].device = None;
            states[i].up = false;
        }
    }
    conflicts
}
