//! What every pinned map of a node is and how full it is (`sluice map list`,
//! the agent's map pressure metrics), and which kernel features the datapath
//! can use (`sluice status`).
//!
//! Works on any pinned map, not only the ones this build knows, so a map added
//! later (policy, NAT) shows up without code here.

use aya::maps::{MapData, MapType};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MapInfoError {
    #[error("cannot read pin directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open pinned map {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<aya::maps::MapError>,
    },
}

/// One pinned map, as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedMap {
    /// The pin's file name (the map's name).
    pub name: String,
    /// Kernel map type, e.g. `hash`, `lru_hash`, `percpu_array`, `ringbuf`.
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    /// Capacity: entries, or bytes for a ring buffer.
    pub max_entries: u32,
    /// Entries in use for maps that fill up (hash-like); `None` for arrays
    /// (always full by construction) and ring buffers.
    pub entries: Option<u64>,
    /// Bytes the kernel charges for the map (`memlock` in fdinfo).
    pub memlock_bytes: Option<u64>,
}

impl PinnedMap {
    /// Entries in use as a percentage of capacity, for maps that fill up.
    pub fn pressure_percent(&self) -> Option<f64> {
        let entries = self.entries?;
        if self.max_entries == 0 {
            return None;
        }
        Some(entries as f64 * 100.0 / f64::from(self.max_entries))
    }
}

fn type_name(t: Result<MapType, aya::maps::MapError>) -> (String, bool) {
    // (name, whether entries are counted)
    match t {
        Ok(MapType::Hash) => ("hash".into(), true),
        Ok(MapType::LruHash) => ("lru_hash".into(), true),
        Ok(MapType::PerCpuHash) => ("percpu_hash".into(), true),
        Ok(MapType::LruPerCpuHash) => ("lru_percpu_hash".into(), true),
        Ok(MapType::LpmTrie) => ("lpm_trie".into(), true),
        Ok(MapType::HashOfMaps) => ("hash_of_maps".into(), true),
        Ok(MapType::Array) => ("array".into(), false),
        Ok(MapType::PerCpuArray) => ("percpu_array".into(), false),
        Ok(MapType::ArrayOfMaps) => ("array_of_maps".into(), false),
        Ok(MapType::RingBuf) => ("ringbuf".into(), false),
        Ok(other) => (format!("{other:?}").to_ascii_lowercase(), false),
        Err(_) => ("unknown".into(), false),
    }
}

/// `BPF_MAP_GET_NEXT_KEY` attributes (union bpf_attr, map element commands).
#[repr(C)]
struct NextKeyAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// Counts a hash-like map's keys by walking them. aya's typed iterators need
/// the key type; this works on any map. Bounded: when entries are deleted
/// during the walk the kernel restarts from the first key, so a busy LRU map
/// could otherwise be walked forever.
fn count_keys(fd: i32, key_size: u32, max_entries: u32) -> Option<u64> {
    let mut cur = vec![0u8; key_size as usize];
    let mut next = vec![0u8; key_size as usize];
    let mut first = true;
    let mut n: u64 = 0;
    let limit = u64::from(max_entries).saturating_mul(2).max(1);
    loop {
        let attr = NextKeyAttr {
            map_fd: fd as u32,
            _pad: 0,
            key: if first { 0 } else { cur.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: `attr` points at buffers of the map's key size that live
        // across the call; the kernel writes at most key_size bytes to next_key.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const NextKeyAttr,
                std::mem::size_of::<NextKeyAttr>() as libc::c_uint,
            )
        };
        if rc != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error();
            return (errno == Some(libc::ENOENT)).then_some(n);
        }
        n += 1;
        if n > limit {
            return Some(u64::from(max_entries));
        }
        std::mem::swap(&mut cur, &mut next);
        first = false;
    }
}

/// The `memlock:` line of our fd's fdinfo: what the kernel charges for the map.
fn memlock(fd: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Describes one pinned map.
pub fn describe(path: &Path) -> Result<PinnedMap, MapInfoError> {
    let err = |source| MapInfoError::Open {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let data = MapData::from_pin(path).map_err(err)?;
    let info = data.info().map_err(err)?;
    let (map_type, counted) = type_name(info.map_type());
    let fd = data.fd().as_fd().as_raw_fd();
    Ok(PinnedMap {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        map_type,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        entries: if counted {
            count_keys(fd, info.key_size(), info.max_entries())
        } else {
            None
        },
        memlock_bytes: memlock(fd),
    })
}

/// Every map pinned in a node's pin directory (links are skipped), by name.
pub fn list_pinned(pin_dir: &Path) -> Result<Vec<PinnedMap>, MapInfoError> {
    let rd = std::fs::read_dir(pin_dir).map_err(|source| MapInfoError::Dir {
        path: pin_dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file {
            continue; // links/ and anything else that is not a pinned object
        }
        match describe(&entry.path()) {
            Ok(m) => out.push(m),
            // A pinned program or link is not a map: skip it.
            Err(e) => tracing::debug!(error = %e, "skipping pinned object"),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Kernel features the datapath uses or could use, probed cheaply (no
/// attachment is made).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelFeatures {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// tcx links (Linux ≥ 6.6): the attach mode Sluice prefers.
    pub tcx: bool,
    /// BTF of the running kernel at /sys/kernel/btf/vmlinux.
    pub btf: bool,
    /// BPF ring buffer maps (flow events).
    pub ringbuf: bool,
    /// XDP programs can be loaded (native or generic depends on the driver).
    pub xdp: bool,
    /// cgroup socket-address hooks (connect4 etc.) for socket-level LB.
    pub socket_hooks: bool,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Probes the running kernel (loads and frees a trivial program per type).
pub fn probe_features() -> KernelFeatures {
    use aya::programs::ProgramType;
    use aya::sys::{is_map_supported, is_program_supported};
    let tcx = aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
        .unwrap_or(false);
    KernelFeatures {
        kernel: kernel_release(),
        tcx,
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
        ringbuf: is_map_supported(MapType::RingBuf).unwrap_or(false),
        xdp: is_program_supported(ProgramType::Xdp).unwrap_or(false),
        socket_hooks: is_program_supported(ProgramType::CgroupSockAddr).unwrap_or(false),
    }
}
