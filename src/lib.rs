//! connmark-lb: multi-WAN connmark load balancing for OpenWrt routers.
//!
//! Pipeline: config source -> validated [`config::Config`] -> pure plan -> text renderers ->
//! appliers that spawn `nft`/`iptables-restore`/`ip`. Only the edges touch the system.

pub mod apply;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod explain;
pub mod hash;
pub mod inspect;
pub mod live;
pub mod names;
pub mod netifd;
pub mod plan;
pub mod render;
pub mod source;
pub mod state;
