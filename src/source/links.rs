//! Link facts: what is known about each configured interface right now (its device, next hop,
//! source address, delegated prefixes, liveness), from the config's fixed values and from
//! netifd. The plan is computed from these; nothing here decides anything about balancing.

use super::UBUS_TIMEOUT;
use super::netifd;
use super::ubus;
use crate::config::{Cidr, Config, Interface};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// What is known at apply time about one configured interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// The kernel device, when known (a netifd interface that is down has none).
    pub device: Option<String>,
    pub gateway: Option<IpAddr>,
    pub source: Option<IpAddr>,
    /// The link's IPv6 prefixes: configured ones plus those netifd delegated.
    pub prefixes: Vec<Cidr>,
    /// The link's DNS servers: configured ones plus those netifd has for the interface.
    pub dns: Vec<IpAddr>,
    /// Alive: device present and health tracking (if any) says up.
    pub up: bool,
}

impl LinkState {
    /// The state implied by fixed config values alone: up when enabled and a device is given.
    pub fn from_config(iface: &Interface) -> LinkState {
        LinkState {
            device: iface.device.clone(),
            gateway: iface.gateway,
            source: iface.source,
            prefixes: iface.prefixes.clone(),
            dns: iface.dns.clone(),
            up: iface.enabled && iface.device.is_some(),
        }
    }
}

/// How long resolving every netifd interface of one apply may take in all: a netifd that is
/// slow or silent must not stretch a reload by seconds per interface.
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
            state = LinkState {
                device: iface.device.clone().or(status.device),
                gateway: iface.gateway.or(status.gateway),
                source: iface.source.or(status.address),
                prefixes: joined(&iface.prefixes, status.prefixes),
                dns: joined(&iface.dns, status.dns),
                up: status.up,
            };
        }
        states.push(state);
    }
    (states, warnings)
}

/// The configured values, then those netifd adds, each once.
fn joined<T: PartialEq + Clone>(configured: &[T], resolved: Vec<T>) -> Vec<T> {
    let mut all = configured.to_vec();
    for item in resolved {
        if !all.contains(&item) {
            all.push(item);
        }
    }
    all
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
