//! Memory readings from the kernel's own accounting.

use std::path::Path;

/// Sum of `memlock` over the maps pinned under `pin_dir` (bytes): the
/// kernel's charge for each map, read from /proc/self/fdinfo.
pub fn bpf_map_bytes(pin_dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(pin_dir) else {
        return 0;
    };
    let mut total = 0;
    for e in rd.flatten() {
        let p = e.path();
        if !p.is_file() {
            continue;
        }
        if let Ok(data) = aya::maps::MapData::from_pin(&p) {
            use std::os::fd::{AsFd, AsRawFd};
            let fd = data.fd().as_fd().as_raw_fd();
            if let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) {
                total += field(&info, "memlock:");
            }
        }
    }
    total
}

/// Slab memory of the whole machine (bytes): rule memory shows up here.
pub fn slab_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .map(|m| field(&m, "Slab:") * 1024)
        .unwrap_or(0)
}

pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| field(&s, "VmRSS:") * 1024)
        .unwrap_or(0)
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
