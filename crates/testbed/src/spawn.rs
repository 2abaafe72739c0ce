//! Starting processes inside a network namespace (and a cgroup) without
//! `ip netns exec`, which would remount /sys and hide bpffs.

use crate::error::{io, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

/// Spawns `cmd` so that the child joins `netns` and, when given, the cgroup
/// `cgroup_dir` before it execs: it never runs a single instruction of its
/// own program outside them.
pub fn spawn_in(mut cmd: Command, netns: &Path, cgroup_dir: Option<&Path>) -> Result<Child> {
    let ns = File::open(netns).map_err(io(format!("cannot open netns {}", netns.display())))?;
    let procs: Option<File> = match cgroup_dir {
        Some(dir) => {
            let p = dir.join("cgroup.procs");
            Some(
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(io(format!("cannot open {}", p.display())))?,
            )
        }
        None => None,
    };
    let ns_fd = ns.as_raw_fd();
    let procs_fd = procs.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: between fork and exec the closure only makes async-signal-safe
    // syscalls (setns, write) on fds that stay open in the parent until
    // spawn returns (they are CLOEXEC, so the program never inherits them).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_fd {
                // "0" moves the writing process: the child itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = format!("{:?}", cmd.get_program());
    let child = cmd
        .spawn()
        .map_err(io(format!("cannot start {program} in {}", netns.display())))?;
    drop(ns);
    drop(procs);
    Ok(child)
}

/// Last lines of a log, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// SIGKILL and reap; quiet if it already exited.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
