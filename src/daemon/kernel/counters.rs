//! Per-link traffic figures, read only when someone asks (the ubus `status` call), so they
//! cost nothing otherwise: the devices' byte counters from `/proc/net/dev` (per network
//! namespace, 64-bit, one read for all links) and the new connections each link was given,
//! from the packet counter of its mark chain, which only a connection's first packet passes
//! (one `nft list table` or `iptables-save -c -t mangle`; the counters restart at every full
//! apply, since the chains are created anew).

use serde_json::{Map, Value, json};

use crate::apply::{Backend, exec};
use crate::daemon::log_error;
use crate::daemon::service::status::Status;
use crate::error::Result;
use crate::live;
use crate::names::NFT_TABLE;
use crate::plan::Plan;
use crate::render::{iptables, nft};

/// What the ubus `status` call answers: `status` (status.json's content) with each link's
/// `rx_bytes` and `tx_bytes` (its device's counters) and `new_connections` (since the last
/// full apply); null where a figure cannot be had (no device, no rules loaded).
pub fn live_status(status: &Status, backend: Backend, plan: &Plan) -> Map<String, Value> {
    let devices = std::fs::read_to_string("/proc/net/dev").unwrap_or_else(|e| {
        log_error(&format!("reading /proc/net/dev: {e}"));
        String::new()
    });
    let rules = read_rules(backend).unwrap_or_else(|e| {
        log_error(&format!("reading the new-connection counters: {e}"));
        String::new()
    });
    let mut reply = match status.to_json() {
        Value::Object(reply) => reply,
        _ => Map::new(),
    };
    if let Some(Value::Array(links)) = reply.get_mut("links") {
        for (json, link) in links.iter_mut().zip(&status.links) {
            let bytes = link
                .device
                .as_ref()
                .and_then(|d| live::net_dev_bytes(&devices, d));
            json["rx_bytes"] = json!(bytes.map(|(rx, _)| rx));
            json["tx_bytes"] = json!(bytes.map(|(_, tx)| tx));
            let planned = plan.links.iter().find(|l| l.name == link.interface);
            let counted = planned.and_then(|l| match backend {
                Backend::Nftables => live::nft_chain_packets(&rules, &nft::mark_chain(&l.name)),
                Backend::Iptables => {
                    live::iptables_chain_packets(&rules, &iptables::mark_chain_name(plan, l.mark))
                }
            });
            json["new_connections"] = json!(counted);
        }
    }
    reply
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
