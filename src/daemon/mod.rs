//! `connmark-lb run`: link health tracking and failover in one process.

pub mod conntrack;
pub mod devices;
pub mod health;
pub mod hook;
pub mod probe;
pub mod status;
#[cfg(test)]
mod testns;
