//! Finding the sluice binaries next to whoever is running.

use crate::error::{Result, TestbedError};
use std::path::{Path, PathBuf};

/// Looks for `name` in `$SLUICE_BIN_DIR`, then next to the current
/// executable, then in its parent directory (cargo puts test binaries in
/// target/<profile>/deps and the real binaries in target/<profile>).
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let env_dir = std::env::var_os("SLUICE_BIN_DIR").map(PathBuf::from);
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let candidates = candidate_dirs(env_dir, exe_dir);
    for dir in &candidates {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(TestbedError::BinaryNotFound {
        name: name.to_string(),
        searched: candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn candidate_dirs(env_dir: Option<PathBuf>, exe_dir: Option<PathBuf>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    dirs.extend(env_dir);
    if let Some(d) = exe_dir {
        if let Some(parent) = d.parent() {
            let parent = parent.to_path_buf();
            dirs.push(d);
            dirs.push(parent);
        } else {
            dirs.push(d);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order() {
        let d = candidate_dirs(Some("/opt/bin".into()), Some("/x/target/debug/deps".into()));
        assert_eq!(
            d,
            vec![
                PathBuf::from("/opt/bin"),
                PathBuf::from("/x/target/debug/deps"),
                PathBuf::from("/x/target/debug")
            ]
        );
    }

    #[test]
    fn missing_binary_names_dirs() {
        let e = find_binary("slc-no-such-binary").expect_err("absent");
        assert!(e.to_string().contains("SLUICE_BIN_DIR"));
    }
}
