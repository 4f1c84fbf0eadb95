//! Footprint on the router's flash: the size of each artifact we ship.

use std::path::PathBuf;

/// One shipped file and its size.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub label: String,
    pub path: PathBuf,
    pub bytes: u64,
}

impl Artifact {
    /// Flash is counted in KiB by the targets.
    pub fn kib(&self) -> f64 {
        self.bytes as f64 / 1024.0
    }
}

/// Sizes of `label=path` artifacts; a missing file is an error, not a blank in the report.
pub fn measure(artifacts: &[(String, PathBuf)]) -> Vec<Artifact> {
    artifacts
        .iter()
        .map(|(label, path)| {
            let bytes = std::fs::metadata(path)
                .unwrap_or_else(|e| panic!("artifact {label} at {}: {e}", path.display()))
                .len();
            Artifact {
                label: label.clone(),
                path: path.clone(),
                bytes,
            }
        })
        .collect()
}
