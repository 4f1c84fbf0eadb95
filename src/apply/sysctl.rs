//! The kernel settings routing by mark needs: forwarding on, reverse-path filtering not
//! strict on the WAN side (replies arrive on the link they were sent from, which strict mode
//! would check against the main table and drop). Each family's settings are touched only when
//! it has links; IPv6 router-advertisement acceptance (`accept_ra`, netifd's business) never.

use crate::config::Family;
use crate::error::{Error, Result};
use crate::plan::Plan;
use std::path::PathBuf;

/// What [`apply`] does, as `(key, value, condition)` lines for `check`.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    if plan.has(Family::Ipv4) {
        out.push_str("net.ipv4.ip_forward = 1\n");
        for dev in rp_filter_devices(plan) {
            out.push_str(&format!(
                "net.ipv4.conf.{dev}.rp_filter = 2 (only if it is 1)\n"
            ));
        }
    }
    if plan.has(Family::Ipv6) {
        out.push_str("net.ipv6.conf.all.forwarding = 1\n");
    }
    out
}

/// Turns forwarding on for each family with links and relaxes strict rp_filter (1) to loose
/// (2) on `all` and every IPv4 WAN device; 0 and 2 are left alone. The kernel uses the larger
/// of `all` and the device's value. IPv6 has no rp_filter.
pub fn apply(plan: &Plan) -> Result<()> {
    if plan.has(Family::Ipv4) {
        ensure(sysctl_path("ipv4/ip_forward"), |v| v != "1", "1")?;
        for dev in rp_filter_devices(plan) {
            ensure(
                sysctl_path(&format!("ipv4/conf/{dev}/rp_filter")),
                |v| v == "1",
                "2",
            )?;
        }
    }
    if plan.has(Family::Ipv6) {
        ensure(sysctl_path("ipv6/conf/all/forwarding"), |v| v != "1", "1")?;
    }
    Ok(())
}

/// `all` and the devices of IPv4 links.
fn rp_filter_devices(plan: &Plan) -> impl Iterator<Item = &str> {
    std::iter::once("all").chain(
        plan.wan_devices()
            .filter(|(link, _)| link.family == Family::Ipv4)
            .map(|(_, d)| d),
    )
}

fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys/net").join(key)
}

/// Writes `value` when the current value satisfies `wrong`; a device that vanished meanwhile
/// is not an error.
fn ensure(path: PathBuf, wrong: impl Fn(&str) -> bool, value: &str) -> Result<()> {
    let current = match std::fs::read_to_string(&path) {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    if wrong(current.trim()) {
        std::fs::write(&path, value).map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}
