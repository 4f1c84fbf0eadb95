//! What watches: the ICMP probes of each link, passive health (the LAN's own connections),
//! device events, and self-healing (our rules, ip rules and routes changed behind our back).
//! Each watcher reports what it saw; the daemon's loop decides what to do about it.

pub mod devices;
pub mod passive;
pub mod probe;
pub mod selfheal;
