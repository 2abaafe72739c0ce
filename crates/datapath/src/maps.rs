//! Typed access to the pinned maps of one node.
//!
//! [`LbMaps`] opens the maps by their pin paths, so it works in the agent,
//! after an agent restart (the maps outlive it), and in the read-only CLI
//! listings while the agent is down.

use crate::bindings::{
    ct_entry, ct_key, lb_backend, lb_revnat, lb_service, lb_service_key, SLUICE_MAP_BACKENDS,
    SLUICE_MAP_CT, SLUICE_MAP_METRICS, SLUICE_MAP_REVNAT, SLUICE_MAP_SERVICES,
};
use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("cannot open pinned map {path}: {source} (is the agent running, or has it ever run on this node?)")]
    Open {
        path: PathBuf,
        source: Box<MapError>,
    },
    #[error("{op} on map {map} failed: {source}")]
    Write {
        map: &'static str,
        op: &'static str,
        source: Box<MapError>,
    },
    #[error("reading map {map} failed: {source}")]
    Read {
        map: &'static str,
        source: Box<MapError>,
    },
}

/// A frontend as the maps key it: address (0.0.0.0 for NodePort), port, IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    /// `LB_SCOPE_*` (0 = every client; 1 = external clients of an eTP
    /// Local frontend).
    pub scope: u8,
}

/// A backend address as the datapath stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendEntry {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

/// One row of the service map, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceRow {
    Master {
        frontend: FrontendKey,
        count: u16,
        rev_nat_id: u32,
        flags: u8,
        /// Session affinity timeout in seconds (0 = none).
        affinity_timeout: u32,
    },
    Slot {
        frontend: FrontendKey,
        slot: u16,
        backend_id: u32,
    },
}

/// One conntrack entry, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtRow {
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub proto: u8,
    /// `true` for the reply entry (backend → client).
    pub reply: bool,
    pub nat: (Ipv4Addr, u16),
    pub rev_nat_id: u32,
    pub backend_id: u32,
    pub flags: u8,
    pub last_seen_ns: u64,
    pub created_ns: u64,
    /// `CT_FLAG_REDIRECT` flows: the device replies leave through.
    pub ifindex: u32,
    /// Forward: the source the backend sees (SNAT address when
    /// masqueraded, else the client). Reply: the client.
    pub peer: (Ipv4Addr, u16),
}

fn be_ip(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn ip_of(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

fn service_key(f: FrontendKey, slot: u16) -> lb_service_key {
    lb_service_key {
        address: be_ip(f.ip),
        port: f.port.to_be(),
        proto: f.proto,
        scope: f.scope,
        slot,
        ..Default::default()
    }
}

fn frontend_of(k: &lb_service_key) -> FrontendKey {
    FrontendKey {
        ip: ip_of(k.address),
        port: u16::from_be(k.port),
        proto: k.proto,
        scope: k.scope,
    }
}

/// Deleting what is already gone is success: deletes must be idempotent for
/// a reconciler that may be repeating an interrupted plan.
fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(MapError::KeyNotFound) | Err(MapError::ElementNotFound) => Ok(()),
        other => other,
    }
}

fn ct_row(k: &ct_key, v: &ct_entry) -> CtRow {
    CtRow {
        src: (ip_of(k.saddr), u16::from_be(k.sport)),
        dst: (ip_of(k.daddr), u16::from_be(k.dport)),
        proto: k.proto,
        reply: u32::from(k.dir) == crate::bindings::CT_DIR_REPLY,
        nat: (ip_of(v.nat_address), u16::from_be(v.nat_port)),
        rev_nat_id: v.rev_nat_id,
        backend_id: v.backend_id,
        flags: v.flags,
        last_seen_ns: v.last_seen_ns,
        created_ns: v.created_ns,
        ifindex: v.ifindex,
        peer: (ip_of(v.peer_address), u16::from_be(v.peer_port)),
    }
}

pub struct LbMaps {
    pin_dir: PathBuf,
    services: HashMap<MapData, lb_service_key, lb_service>,
    backends: HashMap<MapData, u32, lb_backend>,
    revnat: HashMap<MapData, u32, lb_revnat>,
    ct: HashMap<MapData, ct_key, ct_entry>,
    metrics: PerCpuArray<MapData, u64>,
}

/// Opens the map pinned as `name` (a NUL-terminated header constant) in `pin_dir`.
pub(crate) fn open_map(pin_dir: &Path, name: &[u8]) -> Result<Map, MapsError> {
    let name = std::str::from_utf8(name.strip_suffix(b"\0").unwrap_or(name)).unwrap_or("?");
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open {
        path: path.clone(),
        source: Box::new(source),
    })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open {
        path,
        source: Box::new(source),
    })
}

/// Opens a pinned map as its typed aya wrapper (`?` on failure).
macro_rules! typed {
    ($pin_dir:expr, $name:expr) => {{
        let map = $crate::maps::open_map($pin_dir, $name)?;
        map.try_into()
            .map_err(|source| $crate::maps::MapsError::Open {
                path: $pin_dir.join(String::from_utf8_lossy($name).trim_end_matches('\0')),
                source: Box::new(source),
            })?
    }};
}
pub(crate) use typed;

impl LbMaps {
    /// Opens the maps pinned in `pin_dir` (created by [`crate::Datapath::load`]).
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            pin_dir: pin_dir.to_path_buf(),
            services: typed!(pin_dir, SLUICE_MAP_SERVICES),
            backends: typed!(pin_dir, SLUICE_MAP_BACKENDS),
            revnat: typed!(pin_dir, SLUICE_MAP_REVNAT),
            ct: typed!(pin_dir, SLUICE_MAP_CT),
            metrics: typed!(pin_dir, SLUICE_MAP_METRICS),
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn upsert_backend(&mut self, id: u32, b: BackendEntry) -> Result<(), MapsError> {
        let v = lb_backend {
            address: be_ip(b.ip),
            port: b.port.to_be(),
            proto: b.proto,
            flags: 0,
        };
        self.backends
            .insert(id, v, 0)
            .map_err(|source| MapsError::Write {
                map: "sl_backends",
                op: "insert",
                source: Box::new(source),
            })
    }

    pub fn delete_backend(&mut self, id: u32) -> Result<(), MapsError> {
        ignore_missing(self.backends.remove(&id)).map_err(|source| MapsError::Write {
            map: "sl_backends",
            op: "delete",
            source: Box::new(source),
        })
    }

    pub fn upsert_revnat(&mut self, id: u32, f: FrontendKey) -> Result<(), MapsError> {
        let v = lb_revnat {
            address: be_ip(f.ip),
            port: f.port.to_be(),
            proto: f.proto,
            scope: f.scope,
        };
        self.revnat
            .insert(id, v, 0)
            .map_err(|source| MapsError::Write {
                map: "sl_revnat",
                op: "insert",
                source: Box::new(source),
            })
    }

    pub fn delete_revnat(&mut self, id: u32) -> Result<(), MapsError> {
        ignore_missing(self.revnat.remove(&id)).map_err(|source| MapsError::Write {
            map: "sl_revnat",
            op: "delete",
            source: Box::new(source),
        })
    }

    /// `affinity_timeout`: seconds of session affinity (0 = none; the
    /// caller sets `LB_FLAG_AFFINITY` in `flags` with it).
    pub fn upsert_master(
        &mut self,
        f: FrontendKey,
        count: u16,
        rev_nat_id: u32,
        flags: u8,
        affinity_timeout: u32,
    ) -> Result<(), MapsError> {
        let v = lb_service {
            count,
            rev_nat_id,
            flags,
            backend_id: affinity_timeout,
            ..Default::default()
        };
        self.services
            .insert(service_key(f, 0), v, 0)
            .map_err(|source| MapsError::Write {
                map: "sl_services",
                op: "insert master",
                source: Box::new(source),
            })
    }

    pub fn upsert_slot(
        &mut self,
        f: FrontendKey,
        slot: u16,
        backend_id: u32,
    ) -> Result<(), MapsError> {
        let v = lb_service {
            backend_id,
            ..Default::default()
        };
        self.services
            .insert(service_key(f, slot), v, 0)
            .map_err(|source| MapsError::Write {
                map: "sl_services",
                op: "insert slot",
                source: Box::new(source),
            })
    }

    pub fn delete_service_entry(&mut self, f: FrontendKey, slot: u16) -> Result<(), MapsError> {
        ignore_missing(self.services.remove(&service_key(f, slot))).map_err(|source| {
            MapsError::Write {
                map: "sl_services",
                op: "delete",
                source: Box::new(source),
            }
        })
    }

    pub fn service_rows(&self) -> Result<Vec<ServiceRow>, MapsError> {
        let mut rows = Vec::new();
        for item in self.services.iter() {
            let (k, v) = item.map_err(|source| MapsError::Read {
                map: "sl_services",
                source: Box::new(source),
            })?;
            let frontend = frontend_of(&k);
            rows.push(if k.slot == 0 {
                ServiceRow::Master {
                    frontend,
                    count: v.count,
                    rev_nat_id: v.rev_nat_id,
                    flags: v.flags,
                    affinity_timeout: v.backend_id,
                }
            } else {
                ServiceRow::Slot {
                    frontend,
                    slot: k.slot,
                    backend_id: v.backend_id,
                }
            });
        }
        Ok(rows)
    }

    pub fn backend_rows(&self) -> Result<Vec<(u32, BackendEntry)>, MapsError> {
        let mut rows = Vec::new();
        for item in self.backends.iter() {
            let (id, v) = item.map_err(|source| MapsError::Read {
                map: "sl_backends",
                source: Box::new(source),
            })?;
            rows.push((
                id,
                BackendEntry {
                    ip: ip_of(v.address),
                    port: u16::from_be(v.port),
                    proto: v.proto,
                },
            ));
        }
        Ok(rows)
    }

    pub fn revnat_rows(&self) -> Result<Vec<(u32, FrontendKey)>, MapsError> {
        let mut rows = Vec::new();
        for item in self.revnat.iter() {
            let (id, v) = item.map_err(|source| MapsError::Read {
                map: "sl_revnat",
                source: Box::new(source),
            })?;
            rows.push((
                id,
                FrontendKey {
                    ip: ip_of(v.address),
                    port: u16::from_be(v.port),
                    proto: v.proto,
                    scope: v.scope,
                },
            ));
        }
        Ok(rows)
    }

    pub fn ct_rows(&self) -> Result<Vec<CtRow>, MapsError> {
        let mut rows = Vec::new();
        for item in self.ct.iter() {
            let (k, v) = item.map_err(|source| MapsError::Read {
                map: "sl_ct",
                source: Box::new(source),
            })?;
            rows.push(ct_row(&k, &v));
        }
        Ok(rows)
    }

    /// Deletes conntrack entries matching `pred` (e.g. flows to a removed UDP backend).
    pub fn ct_delete_where(&mut self, pred: impl Fn(&CtRow) -> bool) -> Result<usize, MapsError> {
        let victims: Vec<ct_key> = {
            let mut v = Vec::new();
            for item in self.ct.iter() {
                let (k, e) = item.map_err(|source| MapsError::Read {
                    map: "sl_ct",
                    source: Box::new(source),
                })?;
                let row = ct_row(&k, &e);
                if pred(&row) {
                    v.push(k);
                }
            }
            v
        };
        for k in &victims {
            ignore_missing(self.ct.remove(k)).map_err(|source| MapsError::Write {
                map: "sl_ct",
                op: "delete",
                source: Box::new(source),
            })?;
        }
        Ok(victims.len())
    }

    /// Per-CPU counters summed, indexed by `sluice_metric`.
    pub fn metrics(&self) -> Result<Vec<u64>, MapsError> {
        let mut out = Vec::new();
        for item in self.metrics.iter() {
            let per_cpu = item.map_err(|source| MapsError::Read {
                map: "sl_metrics",
                source: Box::new(source),
            })?;
            out.push(per_cpu.iter().sum());
        }
        Ok(out)
    }
}

/// `sl_sock_optout`: network namespace cookies whose sockets skip socket-level
/// LB (pods annotated `sluice.io/socket-lb: "false"`). Written by the agent's
/// controller only; exists when the socket programs were loaded.
pub struct SockOptOutMap {
    map: HashMap<MapData, u64, u8>,
}

impl SockOptOutMap {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            map: typed!(pin_dir, crate::bindings::SLUICE_MAP_SOCK_OPTOUT),
        })
    }

    pub fn insert(&mut self, netns_cookie: u64) -> Result<(), MapsError> {
        self.map
            .insert(netns_cookie, 1, 0)
            .map_err(|source| MapsError::Write {
                map: "sl_sock_optout",
                op: "insert",
                source: Box::new(source),
            })
    }

    pub fn remove(&mut self, netns_cookie: u64) -> Result<(), MapsError> {
        ignore_missing(self.map.remove(&netns_cookie)).map_err(|source| MapsError::Write {
            map: "sl_sock_optout",
            op: "delete",
            source: Box::new(source),
        })
    }

    /// Every cookie in the map (to drop stale ones after a restart).
    pub fn cookies(&self) -> Result<Vec<u64>, MapsError> {
        self.map
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| MapsError::Read {
                map: "sl_sock_optout",
                source: Box::new(source),
            })
    }
}

/// `sl_sock_revnat` (read-only here): which frontend a socket-LB-translated
/// socket asked for, keyed by (socket cookie, backend). The agent uses it to
/// tell a socket that reached a backend through a Service from one that
/// addressed the pod directly. Exists when the socket programs were loaded.
pub struct SockRevNatMap {
    map: HashMap<MapData, crate::bindings::sock_revnat_key, crate::bindings::sock_revnat_entry>,
}

impl SockRevNatMap {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            map: typed!(pin_dir, crate::bindings::SLUICE_MAP_SOCK_REVNAT),
        })
    }

    /// The frontend (address, port) socket `cookie` was given `backend`
    /// for, if the socket layer translated it (and the LRU still holds it).
    pub fn frontend_of(&self, cookie: u64, backend: SocketAddrV4) -> Option<SocketAddrV4> {
        let key = crate::bindings::sock_revnat_key {
            cookie,
            address: be_ip(*backend.ip()),
            port: backend.port().to_be(),
            pad0: 0,
        };
        let v = self.map.get(&key, 0).ok()?;
        Some(SocketAddrV4::new(ip_of(v.address), u16::from_be(v.port)))
    }

    /// Every (socket cookie, backend, frontend) the map holds (the LRU may
    /// have forgotten old sockets). Unreadable entries are skipped.
    pub fn entries(&self) -> Vec<(u64, SocketAddrV4, SocketAddrV4)> {
        self.map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                (
                    k.cookie,
                    SocketAddrV4::new(ip_of(k.address), u16::from_be(k.port)),
                    SocketAddrV4::new(ip_of(v.address), u16::from_be(v.port)),
                )
            })
            .collect()
    }
}

/// `sl_maglev`: the Maglev tables of the frontends that use Maglev, in
/// chunks of `MAGLEV_CHUNK` slot numbers. Written by the agent only.
pub struct MaglevMap {
    map: HashMap<MapData, crate::bindings::maglev_key, crate::bindings::maglev_chunk>,
}

/// Entries per chunk of a Maglev table.
pub const MAGLEV_CHUNK: usize = crate::bindings::MAGLEV_CHUNK as usize;

impl MaglevMap {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            map: typed!(pin_dir, crate::bindings::SLUICE_MAP_MAGLEV),
        })
    }

    /// Writes chunk `chunk` of frontend `rev_nat_id`'s table; `slots`
    /// shorter than a chunk (the table's tail) is padded with 0 (no slot).
    pub fn upsert_chunk(
        &mut self,
        rev_nat_id: u32,
        chunk: u32,
        slots: &[u16],
    ) -> Result<(), MapsError> {
        let mut v = crate::bindings::maglev_chunk {
            slots: [0; MAGLEV_CHUNK],
        };
        let n = slots.len().min(MAGLEV_CHUNK);
        v.slots[..n].copy_from_slice(&slots[..n]);
        let k = crate::bindings::maglev_key { rev_nat_id, chunk };
        self.map.insert(k, v, 0).map_err(|source| MapsError::Write {
            map: "sl_maglev",
            op: "insert",
            source: Box::new(source),
        })
    }

    pub fn delete_chunk(&mut self, rev_nat_id: u32, chunk: u32) -> Result<(), MapsError> {
        let k = crate::bindings::maglev_key { rev_nat_id, chunk };
        ignore_missing(self.map.remove(&k)).map_err(|source| MapsError::Write {
            map: "sl_maglev",
            op: "delete",
            source: Box::new(source),
        })
    }

    /// Every (rev-NAT id, chunk) the map holds.
    pub fn keys(&self) -> Result<Vec<(u32, u32)>, MapsError> {
        self.map
            .keys()
            .map(|k| k.map(|k| (k.rev_nat_id, k.chunk)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| MapsError::Read {
                map: "sl_maglev",
                source: Box::new(source),
            })
    }
}

/// `sl_node_addrs`: the node's IPv4 addresses (host sources), flagged when
/// they serve NodePorts (`NODE_ADDR_F_NODEPORT`). Written by the agent.
pub struct NodeAddrMap {
    map: HashMap<MapData, u32, crate::bindings::node_addr_info>,
}

/// `NODE_ADDR_F_NODEPORT`: the address serves NodePorts.
pub const NODE_ADDR_NODEPORT: u32 = crate::bindings::NODE_ADDR_F_NODEPORT;

impl NodeAddrMap {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            map: typed!(pin_dir, crate::bindings::SLUICE_MAP_NODE_ADDRS),
        })
    }

    /// Makes the map hold exactly `addrs` (address → `NODE_ADDR_*` flags).
    pub fn sync(&mut self, addrs: &[(Ipv4Addr, u32)]) -> Result<(), MapsError> {
        for (ip, flags) in addrs {
            let v = crate::bindings::node_addr_info { flags: *flags };
            self.map
                .insert(be_ip(*ip), v, 0)
                .map_err(|source| MapsError::Write {
                    map: "sl_node_addrs",
                    op: "insert",
                    source: Box::new(source),
                })?;
        }
        let stale: Vec<u32> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !addrs.iter().any(|(ip, _)| be_ip(*ip) == *k))
            .collect();
        for k in stale {
            ignore_missing(self.map.remove(&k)).map_err(|source| MapsError::Write {
                map: "sl_node_addrs",
                op: "delete",
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// Every (address, flags) the map holds.
    pub fn entries(&self) -> Vec<(Ipv4Addr, u32)> {
        self.map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (ip_of(k), v.flags))
            .collect()
    }
}

/// `sl_src_ranges` (LPM trie): loadBalancerSourceRanges, keyed by the LB
/// frontend's rev-NAT id and a source prefix. Written by the agent.
pub struct SrcRangeMap {
    map: aya::maps::lpm_trie::LpmTrie<MapData, [u8; 8], u8>,
}

/// One allowed source prefix of one frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcRange {
    pub rev_nat_id: u32,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl SrcRange {
    fn key(&self) -> aya::maps::lpm_trie::Key<[u8; 8]> {
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&self.rev_nat_id.to_ne_bytes());
        data[4..].copy_from_slice(&self.addr.octets());
        aya::maps::lpm_trie::Key::new(32 + u32::from(self.prefix_len.min(32)), data)
    }
}

impl SrcRangeMap {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            map: typed!(pin_dir, crate::bindings::SLUICE_MAP_SRC_RANGES),
        })
    }

    pub fn insert(&mut self, r: SrcRange) -> Result<(), MapsError> {
        self.map
            .insert(&r.key(), 1, 0)
            .map_err(|source| MapsError::Write {
                map: "sl_src_ranges",
                op: "insert",
                source: Box::new(source),
            })
    }

    pub fn remove(&mut self, r: SrcRange) -> Result<(), MapsError> {
        ignore_missing(self.map.remove(&r.key())).map_err(|source| MapsError::Write {
            map: "sl_src_ranges",
            op: "delete",
            source: Box::new(source),
        })
    }

    /// Every entry the map holds (read back after a restart).
    pub fn entries(&self) -> Vec<SrcRange> {
        self.map
            .keys()
            .filter_map(Result::ok)
            .map(|k| {
                let d = k.data();
                let mut id = [0u8; 4];
                id.copy_from_slice(&d[..4]);
                SrcRange {
                    rev_nat_id: u32::from_ne_bytes(id),
                    addr: Ipv4Addr::new(d[4], d[5], d[6], d[7]),
                    prefix_len: k.prefix_len().saturating_sub(32).min(32) as u8,
                }
            })
            .collect()
    }
}
