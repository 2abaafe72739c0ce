//! Helpers shared by the root test binaries of the testbed.

use sluice_testbed::is_root;
use std::path::{Path, PathBuf};

/// Whether to run a root test: yes as root; a loud skip when not root and
/// SLUICE_SKIP_ROOT_TESTS=1; otherwise a failure (a skipped test must never
/// pass silently).
pub fn need_root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("SLUICE_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("!!! SKIPPING root test: not root and SLUICE_SKIP_ROOT_TESTS=1 !!!");
        return false;
    }
    panic!("these tests need root (set SLUICE_SKIP_ROOT_TESTS=1 to skip them explicitly)");
}

/// The `workload` example binary next to this test binary.
pub fn example_workload() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples/workload"))
        .expect("dir");
    assert!(
        p.exists(),
        "build the example first: cargo build -p sluice-testbed --examples ({})",
        p.display()
    );
    p
}
