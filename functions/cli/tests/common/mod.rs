//! Helpers shared by the CLI's tests.

use std::path::{Path, PathBuf};

/// The repository's rules.
pub fn repo_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules")
}

/// Copies a folder and everything in it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// The first rule-set version (`r-…`) a command printed.
pub fn version_in(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("r-"))
        .unwrap_or_else(|| panic!("a version in: {out}"))
        .to_string()
}
