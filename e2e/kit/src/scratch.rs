//! Scratch directories for fixtures (config, data and logs of the processes they start).
//!
//! One type for every fixture, on the `tempfile` crate: a fresh directory per fixture,
//! removed on drop unless an environment variable asks to keep it for a post-mortem.

use std::path::Path;

use anyhow::{Context, Result};

/// A fresh directory under the system temp dir named `PREFIX-…`, removed on drop unless the
/// environment variable it was created with is set.
#[derive(Debug)]
pub(crate) struct TempDir {
    dir: Option<tempfile::TempDir>,
    keep_var: &'static str,
}

impl TempDir {
    /// Creates `PREFIX-<random>`; `keep_var` set at drop time keeps it.
    pub(crate) fn new(prefix: &str, keep_var: &'static str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .with_context(|| format!("could not create a {prefix} directory"))?;
        Ok(Self {
            dir: Some(dir),
            keep_var,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives until drop")
            .path()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if std::env::var_os(self.keep_var).is_some() {
            eprintln!("keeping fixture directory {}", dir.keep().display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TempDir;

    #[test]
    fn is_fresh_prefixed_and_removed_on_drop() {
        let a = TempDir::new("herald-scratch-test", "HERALD_KEEP_SCRATCH_TEST_DIRS").unwrap();
        let b = TempDir::new("herald-scratch-test", "HERALD_KEEP_SCRATCH_TEST_DIRS").unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("herald-scratch-test-"), "{name}");
        std::fs::write(a.path().join("CORP\\alice \"🦀\".log"), "x").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists(), "{} outlived its TempDir", path.display());
        assert!(b.path().is_dir());
    }
}
