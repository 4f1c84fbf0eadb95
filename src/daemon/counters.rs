//! Per-link traffic figures, read only when someone asks (the ubus `status` call), so they
//! cost nothing otherwise: the devices' byte counters from `/proc/net/dev` (per network
//! namespace, 64-bit, one read for all links) and the new connections each link was given,
//! from the packet counter of its mark chain, which only a connection's first packet passes
//! (one `nft list table` or `iptables-save -c -t mangle`; the counters restart at every full
//! apply, since the chains are created anew).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::log_error;
use super::status::Status;
use crate::apply::{Backend, exec};
use crate::error::{Error, Result};
use crate::live;
use crate::names::NFT_TABLE;
use crate::plan::Plan;
use crate::render::{iptables, nft};

/// What the ubus `status` call answers: `status` (status.json's content) with each link's
/// `rx_bytes` and `tx_bytes` (its device's counters) and `new_connections` (since the last
/// full apply); null where a figure cannot be had (no device, no rules loaded).
pub fn live_status(status: &Status, backend: Backend, plan: &Plan) -> Map<String, Value> {
    let bytes = device_bytes().unwrap_or_else(|e| {
        log_error(&format!("reading device counters: {e}"));
        HashMap::new()
    });
    let counted = new_connections(backend, plan).unwrap_or_else(|e| {
        log_error(&format!("reading the new-connection counters: {e}"));
        HashMap::new()
    });
    let mut reply = match status.to_json() {
        Value::Object(reply) => reply,
        _ => Map::new(),
    };
    if let Some(Value::Array(links)) = reply.get_mut("links") {
        for (json, link) in links.iter_mut().zip(&status.links) {
            let device = link.device.as_ref().and_then(|d| bytes.get(d));
            json["rx_bytes"] = json!(device.map(|(rx, _)| rx));
            json["tx_bytes"] = json!(device.map(|(_, tx)| tx));
            json["new_connections"] = json!(counted.get(&link.interface));
        }
    }
    reply
}

/// Received and sent bytes per device of this network namespace.
pub fn device_bytes() -> Result<HashMap<String, (u64, u64)>> {
    let text =
        std::fs::read_to_string("/proc/net/dev").map_err(|e| Error::io("/proc/net/dev", e))?;
    Ok(live::parse_net_dev(&text))
}

/// New connections per link name since the last full apply.
pub fn new_connections(backend: Backend, plan: &Plan) -> Result<HashMap<String, u64>> {
    let (text, chains): (String, Vec<(String, String)>) = match backend {
        Backend::Nftables => {
            let mut args = vec!["list", "table"];
            args.extend(NFT_TABLE.split(' '));
            let text = exec::run("nft", &args, "")?;
            let chains = plan
                .links
                .iter()
                .map(|l| (l.name.clone(), nft::mark_chain(&l.name)))
                .collect();
            (text, chains)
        }
        Backend::Iptables => {
            let text = exec::run("iptables-save", &["-c", "-t", "mangle"], "")?;
            let chains = plan
                .links
                .iter()
                .map(|l| (l.name.clone(), iptables::mark_chain_name(plan, l.mark)))
                .collect();
            (text, chains)
        }
    };
    let counted = match backend {
        Backend::Nftables => live::nft_chain_packets(&text),
        Backend::Iptables => live::iptables_chain_packets(&text),
    };
    Ok(chains
        .into_iter()
        .filter_map(|(link, chain)| counted.get(&chain).map(|n| (link, *n)))
        .collect())
}
