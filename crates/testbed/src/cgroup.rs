//! A cgroup v2 directory of the sandbox's own.

use crate::error::{io, Result, TestbedError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first cgroup2 mount point in a mountinfo text (hybrid hosts mount it
/// at /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup).
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = pre.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn cgroup2_mount() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("cannot read /proc/self/mountinfo"))?;
    parse_cgroup2_mount(&text).ok_or(TestbedError::NoCgroup2)
}

/// Creates `dir` (a child of the cgroup2 mount root; never the root itself).
pub fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).map_err(io(format!("cannot create cgroup {}", dir.display())))
}

/// Kills every process in the cgroup, waits until it is empty and removes
/// it. A missing cgroup is not an error: teardown may run twice.
pub fn destroy(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // cgroup.kill (5.14+) kills the whole subtree atomically, including
    // processes forked while we look; fall back to signalling each pid.
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for pid in procs(dir) {
            // SAFETY: plain kill(2) on a pid read from our own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // EBUSY until the killed processes are gone.
            Err(e) if Instant::now() < deadline => {
                tracing::trace!(error = %e, "cgroup not empty yet");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(TestbedError::Io {
                    what: format!(
                        "cannot remove cgroup {} (processes left: {:?})",
                        dir.display(),
                        procs(dir)
                    ),
                    source: e,
                })
            }
        }
    }
}

pub fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_unified_mount() {
        let mi = "25 31 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
                  35 25 0:30 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                  42 35 0:39 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw"),
            None
        );
    }

    #[test]
    fn unescapes_spaces() {
        let mi = "41 31 0:38 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw";
        assert_eq!(parse_cgroup2_mount(mi), Some(PathBuf::from("/mnt/my cg")));
    }
}
