//! Identifying a pod's network namespace the way the kernel programs do.
//!
//! The socket hooks see `bpf_get_netns_cookie()`; user space gets the same
//! number with `getsockopt(SO_NETNS_COOKIE)` (Linux ≥ 5.14) on any socket
//! created in that namespace. The socket is made on a short-lived thread
//! that joined the namespace, because setns(2) changes only the calling
//! thread and the controller's thread must stay in the node's namespace.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `SO_NETNS_COOKIE` from <asm-generic/socket.h> (libc does not export it).
const SO_NETNS_COOKIE: libc::c_int = 71;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read the cookie of network namespace {path}: {source}")]
    Cookie {
        path: String,
        source: std::io::Error,
    },
}

/// The cookie of the network namespace at `path` (e.g. a pod's CNI_NETNS).
pub fn netns_cookie(path: &Path) -> Result<u64, NetnsError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: shown.clone(),
        source,
    })?;
    let cookie_err = |source| NetnsError::Cookie {
        path: shown.clone(),
        source,
    };
    let worker = std::thread::Builder::new()
        .name("sluice-netns".into())
        .spawn(move || -> std::io::Result<u64> {
            // SAFETY: setns on an fd we own; it affects only this thread,
            // which ends right after.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: plain socket(2); the fd is owned (closed) at once.
            let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh fd nobody else owns.
            let sock = unsafe { OwnedFd::from_raw_fd(raw) };
            let mut cookie: u64 = 0;
            let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
            // SAFETY: the kernel writes at most `len` bytes into `cookie`.
            let rc = unsafe {
                libc::getsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_NETNS_COOKIE,
                    (&mut cookie as *mut u64).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(cookie)
        })
        .map_err(cookie_err)?;
    match worker.join() {
        Ok(r) => r.map_err(cookie_err),
        Err(_) => Err(cookie_err(std::io::Error::other("netns thread panicked"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_has_a_stable_cookie() {
        let a = netns_cookie(Path::new("/proc/self/ns/net"));
        let b = netns_cookie(Path::new("/proc/self/ns/net"));
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_ne!(a, 0);
                assert_eq!(a, b);
            }
            // Unprivileged runs cannot setns; the e2e test covers root.
            (Err(NetnsError::Cookie { .. }), _) => {}
            (a, b) => panic!("{a:?} {b:?}"),
        }
    }
}
