//! Reading the daemon's `status.json` for `status`, `explain` and the ubus object: the daemon
//! writes it, everyone else only reads it, and believes it only while its writer is alive.

use super::read;
use crate::error::{Error, Result};
use crate::names::STATUS_FILE;
use serde_json::Value;
use std::path::Path;

/// Reads the status file in `dir` as JSON. A missing file, or one whose pid is no longer a
/// running `connmark-lb run` (killed with SIGKILL, or OOM: it had no chance to remove the
/// file), means no daemon is running.
pub fn daemon_status(dir: &Path) -> Result<Value> {
    let path = dir.join(STATUS_FILE);
    let not_running =
        |why: String| Error::State(format!("{why}: `connmark-lb run` is not running"));
    let text = read(&path)?.ok_or_else(|| not_running(format!("no {}", path.display())))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::State(format!("{}: unexpected content: {e}", path.display())))?;
    match value["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
        Some(pid) if is_daemon(pid) => Ok(value),
        pid => Err(not_running(format!(
            "{} is stale (its pid {} is not a live connmark-lb daemon)",
            path.display(),
            pid.map_or("?".to_string(), |p| p.to_string())
        ))),
    }
}

/// Whether `pid` is a running `run` of this very program (same executable, verb `run`): a
/// recycled pid belongs to someone else.
fn is_daemon(pid: u32) -> bool {
    let exe = |proc: &str| {
        std::fs::read_link(format!("/proc/{proc}/exe"))
            .ok()
            .map(|p| {
                let p = p.to_string_lossy().into_owned();
                p.strip_suffix(" (deleted)")
                    .map(str::to_string)
                    .unwrap_or(p)
            })
    };
    let ours = exe("self");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    ours.is_some()
        && exe(&pid.to_string()) == ours
        && cmdline.split(|&b| b == 0).any(|arg| arg == b"run")
}
