//! Small state files under the state directory, always replaced atomically.

use crate::error::{Error, Result};
use crate::names::APPLIED_FILE;
use crate::plan::Footprint;
use serde_json::{Value, json};
use std::path::Path;

/// What the last successful apply installed: lets `stop` and a later apply with another
/// backend or other bases find everything of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub backend: String,
    pub footprint: Footprint,
    /// The firewall text that was loaded: the next apply deletes the chains it drops, and a
    /// failed apply restores it.
    pub firewall: String,
    /// Whether IPv6 links were installed: the next apply then reads and cleans IPv6 state even
    /// if the config has no IPv6 link any more.
    pub ipv6: bool,
}

/// Reads the last apply's record; a missing or unreadable file means "nothing recorded".
pub fn load_applied(dir: &Path) -> Option<Applied> {
    let text = std::fs::read_to_string(dir.join(APPLIED_FILE)).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    let number =
        |key: &str| -> Option<u32> { u32::try_from(value["footprint"][key].as_u64()?).ok() };
    Some(Applied {
        backend: value["backend"].as_str()?.to_string(),
        footprint: Footprint {
            mask: number("mask")?,
            priority_base: number("priority_base")?,
            table_base: number("table_base")?,
        },
        firewall: value["firewall"].as_str().unwrap_or_default().to_string(),
        ipv6: value["ipv6"].as_bool().unwrap_or(false),
    })
}

/// Records a successful apply (JSON written by hand: no derive code in the binary).
pub fn save_applied(dir: &Path, applied: &Applied) -> Result<()> {
    let f = &applied.footprint;
    let value = json!({
        "backend": applied.backend,
        "footprint": {
            "mask": f.mask,
            "priority_base": f.priority_base,
            "table_base": f.table_base,
        },
        "firewall": applied.firewall,
        "ipv6": applied.ipv6,
    });
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| Error::Protocol(format!("encoding {APPLIED_FILE}: {e}")))?;
    write_atomic(&dir.join(APPLIED_FILE), text.as_bytes())
}

/// Forgets the last apply (after stop).
pub fn clear_applied(dir: &Path) -> Result<()> {
    let path = dir.join(APPLIED_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path.display(), e)),
        _ => Ok(()),
    }
}

/// Writes a temp file next to `path` and renames it over, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(tmp.display(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_round_trips_and_clears() {
        let dir = std::env::temp_dir().join(format!("cmlb-state-{}", std::process::id()));
        let applied = Applied {
            backend: "nftables".into(),
            footprint: Footprint {
                mask: 0x3f00,
                priority_base: 4000,
                table_base: 4000,
            },
            firewall: "table inet connmark_lb {\n}\n".into(),
            ipv6: true,
        };
        save_applied(&dir, &applied).unwrap();
        assert_eq!(load_applied(&dir), Some(applied));
        clear_applied(&dir).unwrap();
        assert_eq!(load_applied(&dir), None);
        clear_applied(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
