//! The node's own IPv4 addresses: policy gives them the `host` identity.

use std::net::Ipv4Addr;

/// Every IPv4 address on an interface of the agent's network namespace,
/// except loopback and link-local (the pods' gateway is link-local and
/// answered by a static neighbour entry, not a node address).
pub fn node_ipv4_addrs() -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for (_, ip) in ipv4_addrs_by_interface() {
        if !ip.is_loopback() && !ip.is_link_local() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out.sort();
    out
}

/// (interface name, IPv4 address) pairs in the order the kernel lists them.
pub fn ipv4_addrs_by_interface() -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot list node addresses");
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr whose
            // family tells its real type.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                let name = if ifa.ifa_name.is_null() {
                    String::new()
                } else {
                    // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                    unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
                        .to_string_lossy()
                        .into_owned()
                };
                out.push((name, ip));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_lists_loopback() {
        assert!(super::node_ipv4_addrs().iter().all(|ip| !ip.is_loopback()));
    }
}
