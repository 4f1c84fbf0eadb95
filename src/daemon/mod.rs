//! `connmark-lb run`: link health tracking and failover in one process.
//!
//! Four rooms, each using only the ones listed before it:
//! - `kernel/`: talks to the kernel (netlink sockets, conntrack, traffic counters);
//! - `watch/`: watches (ICMP probes, passive health, device events, self-healing);
//! - `decide/`: decides (each link's health state machine, re-steering of connections);
//! - `service/`: the loop itself (poll set, signals, rule updates, ubus object, status file,
//!   hook).
//!
//! The modules other parts of the crate name keep their paths (`daemon::status`, ...).

mod decide;
mod kernel;
mod service;
#[cfg(test)]
mod testns;
mod watch;

pub use decide::health;
pub use kernel::conntrack;
pub use service::{Exit, hook, run, status};
pub use watch::{devices, probe};

/// Writes one line about a normal event (started, reloaded, a link's state change) to stdout,
/// which procd logs at info level. A closed stdout must not stop the daemon, so a failed write
/// is ignored.
fn log(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "connmark-lb: {message}");
}

/// Writes one line about a failure to stderr, which procd logs as `daemon.err`.
fn log_error(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "connmark-lb: {message}");
}
