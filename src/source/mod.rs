//! Where the config and the link facts come from: files given on the command line, or the
//! router's own services over ubus (uci for the config, netifd for each interface's device,
//! next hop and liveness). This layer sits between the typed config and the plan: it reads,
//! it does not decide.
//!
//! - `mod.rs`: [`ConfigSource`], reading and validating the config from a file or ubus;
//! - `links`: [`LinkState`], one interface's facts, resolved from the config and netifd;
//! - `netifd`: what netifd's interface status means for a link;
//! - `ubus`: the ubus client (and the object the daemon registers).

pub mod links;
pub mod netifd;
pub mod ubus;

pub use links::{LinkState, RESOLVE_DEADLINE, resolve_links, shared_devices};

use crate::config::Config;
use crate::config::raw::RawConfig;
use crate::error::{Context, Error, Result};
use crate::names::{MAX_INPUT, UCI_PACKAGE};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one ubus exchange may take: a hung ubusd must not hang a reload.
pub const UBUS_TIMEOUT: Duration = Duration::from_secs(3);

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
                let reply = client.call("uci", "get", &json!({ "config": UCI_PACKAGE }))?;
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
