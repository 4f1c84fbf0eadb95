//! Names of everything we create in the kernel and on disk, written once.

/// Our nftables table (family inet): kept across applies (its chains are flushed and
/// redefined in one transaction), deleted by `stop`.
pub const NFT_TABLE: &str = "inet connmark_lb";
/// Prefix of every iptables chain we own.
pub const IPT_PREFIX: &str = "CMLB_";
/// (table, built-in chain, our chain) jumps we install, at the top of the built-in chain,
/// while the ruleset has that chain (the DNS translation only when DNS is steered).
pub const JUMPS: [(&str, &str, &str); 5] = [
    ("mangle", "PREROUTING", "PREROUTING"),
    ("mangle", "OUTPUT", "OUTPUT"),
    ("nat", "POSTROUTING", "POSTROUTING"),
    ("nat", "PREROUTING", "DNAT"),
    ("nat", "OUTPUT", "DNAT"),
];
/// Where apply and the daemon keep their state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/run/connmark-lb";
/// What apply installed (backend, footprint, links, chains), so the next apply and stop know
/// exactly what is ours.
pub const APPLIED_FILE: &str = "applied.json";
/// The lock file every change of the system takes (`flock`), holding the holder's pid.
pub const LOCK_FILE: &str = "lock";
/// The daemon's per-link status for `status`, LuCI and scripts.
pub const STATUS_FILE: &str = "status.json";
/// The user's event script, run by the daemon on every link state change (mwan3.user's role).
pub const DEFAULT_HOOK: &str = "/etc/connmark-lb.user";
/// The UCI package our config lives in (`/etc/config/connmark-lb`).
pub const UCI_PACKAGE: &str = "connmark-lb";
/// The largest config input read: a real config is a few KiB; `--uci /dev/zero` must not
/// fill the memory.
pub const MAX_INPUT: u64 = 1 << 20;

/// Whether `name` can be a kernel object name we made (a chain or set): ASCII letters, digits
/// and `_` only, so a name read back from a state file can never change the meaning of the
/// tool input it is written into.
pub fn is_kernel_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
