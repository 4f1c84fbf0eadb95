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
use std::time::Duration;

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

/// The current state of every interface: fixed values from the config, completed from netifd
/// for interfaces that name one. A netifd interface that is down, unknown, or unreachable
/// because ubus is not there makes its link down, never an error; the warnings say why.
pub fn resolve_links(config: &Config, socket: &Path) -> (Vec<LinkState>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut client: Option<ubus::Client> = None;
    let mut states = Vec::with_capacity(config.interfaces.len());
    for iface in &config.interfaces {
        let mut state = LinkState::from_config(iface);
        if let (Some(name), true) = (&iface.netifd, iface.enabled) {
            if client.is_none() {
                match ubus::Client::connect(socket, UBUS_TIMEOUT) {
                    Ok(c) => client = Some(c),
                    Err(e) => warnings.push(format!(
                        "interface '{}': cannot ask netifd about '{name}' ({e}): link down",
                        iface.name
                    )),
                }
            }
            let status = match client
                .as_mut()
                .map(|c| netifd::link_status(c, name, iface.family))
            {
                Some(Ok(status)) => status,
                Some(Err(e)) => {
                    warnings.push(format!(
                        "interface '{}': netifd '{name}': {e}: link down",
                        iface.name
                    ));
                    client = None;
                    netifd::NetifdLink::default()
                }
                None => netifd::NetifdLink::default(),
            };
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
