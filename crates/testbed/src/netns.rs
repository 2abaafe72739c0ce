//! Entering network namespaces from Rust.

use crate::error::{io, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Where `ip netns add NAME` puts the namespace.
pub fn netns_path(name: &str) -> std::path::PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `f` on a fresh thread that has joined the network namespace at
/// `netns`, and returns its result. A fresh thread because `setns` affects
/// only the calling thread and there is no cheap way back for a pooled one;
/// sockets created inside `f` stay in that namespace after it returns.
pub fn run_in_netns<T, F>(netns: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let file = File::open(netns).map_err(io(format!("cannot open netns {}", netns.display())))?;
    let what = format!("cannot enter netns {}", netns.display());
    let handle = std::thread::Builder::new()
        .name("slc-netns".into())
        .spawn(move || -> std::io::Result<T> {
            // SAFETY: setns on a valid fd we own; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            drop(file);
            Ok(f())
        })
        .map_err(io("cannot spawn a thread"))?;
    match handle.join() {
        Ok(res) => res.map_err(io(what)),
        // Re-raise: a panicking test closure should fail the test as usual.
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Writes a sysctl inside `netns` (/proc/sys/net is per namespace of the
/// writing thread), never in the machine's own namespace.
pub fn sysctl_in(netns: &Path, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    let what = format!("cannot set {key}={value} in {}", netns.display());
    run_in_netns(netns, move || std::fs::write(&path, value))?.map_err(io(what))
}
