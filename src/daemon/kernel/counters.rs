//! Per-link traffic figures, read only when someone asks (the ubus `status` call), so they
//! cost nothing otherwise: the devices' byte counters from `/proc/net/dev` (per network
//! namespace, 64-bit, one read for all links) and the new connections each link was given,
//! from the packet counter of its mark chain, which only a connection's first packet passes
//! (one `nft list table` or `iptables-save -c -t mangle`; the counters restart at every full
//! apply, since the chains are created anew).

use crate::apply::{Backend, exec};
use crate::daemon::log_error;
use crate::error::Result;
use crate::live;
use crate::names::NFT_TABLE;
use crate::plan::Plan;
use crate::render::{iptables, nft};

/// The counters read for one `status` call; a source that cannot be read counts as empty (its
/// figures are then unknown) and is logged.
pub struct Counters {
    backend: Backend,
    /// `/proc/net/dev`.
    devices: String,
    /// Our ruleset with its counters.
    rules: String,
}

impl Counters {
    /// Reads the devices' counters and our ruleset's.
    pub fn read(backend: Backend) -> Counters {
        let devices = std::fs::read_to_string("/proc/net/dev").unwrap_or_else(|e| {
            log_error(&format!("reading /proc/net/dev: {e}"));
            String::new()
        });
        let rules = read_rules(backend).unwrap_or_else(|e| {
            log_error(&format!("reading the new-connection counters: {e}"));
            String::new()
        });
        Counters {
            backend,
            devices,
            rules,
        }
    }

    /// The bytes `device` received and sent.
    pub fn device_bytes(&self, device: &str) -> Option<(u64, u64)> {
        live::net_dev_bytes(&self.devices, device)
    }

    /// The new connections `plan`'s link `interface` was given since the last full apply.
    pub fn new_connections(&self, plan: &Plan, interface: &str) -> Option<u64> {
        let link = plan.links.iter().find(|l| l.name == interface)?;
        match self.backend {
            Backend::Nftables => live::nft_chain_packets(&self.rules, &nft::mark_chain(&link.name)),
            Backend::Iptables => live::iptables_chain_packets(
                &self.rules,
                &iptables::mark_chain_name(plan, link.mark),
            ),
        }
    }
}

/// Our ruleset with its counters: the nft table, or iptables' mangle table.
fn read_rules(backend: Backend) -> Result<String> {
    match backend {
        Backend::Nftables => {
            let mut args = vec!["list", "table"];
            args.extend(NFT_TABLE.split(' '));
            exec::run("nft", &args, "")
        }
        Backend::Iptables => exec::run("iptables-save", &["-c", "-t", "mangle"], ""),
    }
}
