//! `connmark-lb run`: link health tracking and failover in one process.

pub mod health;
pub mod probe;
#[cfg(test)]
mod testns;
