//! ip rules and routes: read the kernel's with one `ip -j` per family, change them with one
//! `ip -batch` per family, and undo exactly what a run changed when a later step fails.

use super::exec;
use crate::config::Family;
use crate::error::{Error, Result};
use crate::live::{IP_READ_BATCH, IP_READ_RULES_ROUTES, IpState};
use crate::render::ip::{self, IpOp};
use crate::source::LinkState;

/// Reads `family`'s rules and routes (and, for IPv4, the devices) with one `ip` process.
pub fn read_ip(family: Family) -> Result<IpState> {
    let batch = match family {
        Family::Ipv4 => IP_READ_BATCH,
        Family::Ipv6 => IP_READ_RULES_ROUTES,
    };
    IpState::parse(&exec::run(
        "ip",
        &[family.ip_flag(), "-j", "-batch", "-"],
        batch,
    )?)
}

/// The ip changes of one apply, per family.
pub type IpChanges = Vec<(Family, Vec<IpOp>)>;

/// Runs each family's operations as one `ip -batch`; if one fails, what ran before it (in its
/// batch and the batches before) is undone and the failure reported.
pub fn run_ip_changes(changes: &IpChanges) -> Result<()> {
    for (i, (family, ops)) in changes.iter().enumerate() {
        if let Err(e) = run_ip(*family, ops) {
            return Err(undo_ip(&changes[..i], e));
        }
    }
    Ok(())
}

/// Runs `ops` as one `ip -batch` of `family`; if a line fails, undoes the lines before it and
/// reports the failure.
pub fn run_ip(family: Family, ops: &[IpOp]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let Err(error) = exec::run("ip", &[family.ip_flag(), "-batch", "-"], &ip::batch(ops)) else {
        return Ok(());
    };
    let done = failed_line(&error).map_or(0, |line| line.saturating_sub(1));
    let error = match ops.get(done) {
        Some(op) if failed_line(&error).is_some() => error.wrap(format!("`ip {op}`")),
        _ => error,
    };
    match undo(family, &ops[..done.min(ops.len())]) {
        Ok(()) => Err(error),
        Err(rollback) => Err(rollback_failed(error, rollback)),
    }
}

/// `ip -batch` names the failing line as `Command failed -:N`.
fn failed_line(error: &Error) -> Option<usize> {
    let Error::Exec { stderr, .. } = error else {
        return None;
    };
    let at = stderr.find("Command failed -:")? + "Command failed -:".len();
    stderr[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Marks links whose device does not exist (yet) as unknown: no route, no inbound rule; once it
/// appears, netifd's event for it reloads us and we re-apply.
pub fn present_devices(mut states: Vec<LinkState>, live: &IpState) -> Vec<LinkState> {
    for s in &mut states {
        if s.device.as_ref().is_some_and(|d| !live.devices.contains(d)) {
            s.device = None;
            s.up = false;
        }
    }
    states
}

/// Undoes `changes` (batches that fully succeeded), last first, after a later step failed.
pub fn undo_ip(changes: &[(Family, Vec<IpOp>)], error: Error) -> Error {
    for (family, ops) in changes.iter().rev() {
        if let Err(rollback) = undo(*family, ops) {
            return rollback_failed(error, rollback);
        }
    }
    error
}

/// Reverts `ops` (which all succeeded), last first, in one forced `ip -batch`.
fn undo(family: Family, ops: &[IpOp]) -> Result<()> {
    let undo: Vec<IpOp> = ops.iter().rev().filter_map(IpOp::inverse).collect();
    if undo.is_empty() {
        return Ok(());
    }
    exec::run(
        "ip",
        &[family.ip_flag(), "-batch", "-", "-force"],
        &ip::batch(&undo),
    )
    .map(drop)
}

/// The failure that started a rollback, with the rollback's own failure beside it.
fn rollback_failed(error: Error, rollback: Error) -> Error {
    Error::Many(vec![error, rollback.wrap("rolling back ip changes")])
}
