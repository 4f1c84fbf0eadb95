//! connmark-lb: multi-WAN connmark load balancing for OpenWrt routers.
//!
//! Pipeline: config source -> validated [`config::Config`] -> pure plan -> text renderers ->
//! appliers that spawn `nft`/`iptables-restore`/`ip`. Only the edges touch the system.
//!
//! Layers, lowest first. A module may use the modules of its own layer's predecessors and
//! never one listed after it (`tests/layers.rs` fails on an upward `use`):
//!
//! 1. `error`, `hash`, `names`: the error type, the hash we share with the kernel's rules,
//!    every name we create;
//! 2. `config`: the typed, validated config;
//! 3. `source`: where the config and the link facts come from (files, uci, netifd over ubus);
//! 4. `plan`: what the system should hold, pure data;
//! 5. `live`: the kernel's state as read back, parsed;
//! 6. `render`: plan -> tool input (nft, iptables-restore, ip -batch), pure text;
//! 7. `explain`: which way a connection would go, pure;
//! 8. `state`: the state directory (lock, record of the last apply, the daemon's status);
//! 9. `apply`: the effects (spawning `nft`, `iptables-restore`, `ip`, writing sysctls);
//! 10. `context`: the steps every verb and the daemon share;
//! 11. `daemon`: `connmark-lb run`;
//! 12. `cli`: the command line.

pub mod error;
pub mod hash;
pub mod names;

pub mod config;

pub mod source;

pub mod plan;

pub mod live;

pub mod render;

pub mod explain;

pub mod state;

pub mod apply;

pub mod context;

pub mod daemon;

pub mod cli;
