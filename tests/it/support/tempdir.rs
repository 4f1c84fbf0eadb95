//! The one scratch directory type of the tests, and the unique tag that keeps the directories
//! and namespaces of tests running at the same time apart.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A tag no other test (in this process or another) uses: pid plus a per-process counter.
pub fn unique_tag() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory under the system temp dir, removed with everything in it when dropped (also
/// while unwinding from a panic).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty directory whose name holds `tag` (for a reader of /tmp) and a unique tag.
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("connmark-lb-it-{}-{tag}", unique_tag()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `rel` inside the directory.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes `contents` to `name` inside the directory and returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("cleanup: rm -r {}: {e}", self.path.display());
        }
    }
}
