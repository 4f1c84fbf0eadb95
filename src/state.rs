//! Small state files under the state directory, always replaced atomically.

use crate::error::{Error, Result};
use crate::names::APPLIED_FILE;
use crate::plan::Footprint;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What the last successful apply installed: lets `stop` and a later apply with another
/// backend or other bases find everything of ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub backend: String,
    pub footprint: Footprint,
}

/// Reads the last apply's record; a missing or unreadable file means "nothing recorded".
pub fn load_applied(dir: &Path) -> Option<Applied> {
    let text = std::fs::read_to_string(dir.join(APPLIED_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Records a successful apply.
pub fn save_applied(dir: &Path, applied: &Applied) -> Result<()> {
    let text = serde_json::to_string_pretty(applied)
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
        };
        save_applied(&dir, &applied).unwrap();
        assert_eq!(load_applied(&dir), Some(applied));
        clear_applied(&dir).unwrap();
        assert_eq!(load_applied(&dir), None);
        clear_applied(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
