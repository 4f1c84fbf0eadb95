//! The two kernel settings routing by mark needs: forwarding on, reverse-path filtering not
//! strict on the WAN side (replies arrive on the link they were sent from, which strict mode
//! would check against the main table and drop).

use crate::error::{Error, Result};
use crate::plan::Plan;
use std::path::PathBuf;

/// Turns forwarding on and relaxes strict rp_filter (1) to loose (2) on `all` and every WAN
/// device; 0 and 2 are left alone. The kernel uses the larger of `all` and the device's value.
pub fn apply(plan: &Plan) -> Result<()> {
    ensure(sysctl_path("ip_forward"), |v| v != "1", "1")?;
    let devices = std::iter::once("all").chain(plan.wan_devices().map(|(_, d)| d));
    for dev in devices {
        ensure(
            sysctl_path(&format!("conf/{dev}/rp_filter")),
            |v| v == "1",
            "2",
        )?;
    }
    Ok(())
}

fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys/net/ipv4").join(key)
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
