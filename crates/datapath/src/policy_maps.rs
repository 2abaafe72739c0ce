//! Typed access to the NetworkPolicy maps (`bpf/lib/policy.h`): the ipcache
//! (prefix → identity), the local endpoints (identity, enforced directions)
//! and the per-endpoint policy entries. Written by the agent's reconciler
//! only; readable while the agent is down.

use crate::bindings::{
    endpoint_info, ipcache_entry, policy_entry, policy_match, EP_F_EGRESS_ENFORCED,
    EP_F_INGRESS_ENFORCED, POLICY_PREFIX_FIXED, SLUICE_MAP_ENDPOINTS, SLUICE_MAP_IPCACHE,
    SLUICE_MAP_POLICY, SLUICE_MAP_POLICY_CT,
};
use crate::maps::{typed, MapsError};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, MapError};
use std::net::Ipv4Addr;
use std::path::Path;

/// One ipcache prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcacheKey {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// One local endpoint as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointValue {
    pub identity: u32,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
}

/// One policy entry's key. `proto` 0 matches every protocol (then `port`
/// and `port_prefix_len` are 0); `port_prefix_len` 0 matches every port of
/// `proto`, 16 exactly `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyMatch {
    pub endpoint: Ipv4Addr,
    pub identity: u32,
    /// `POLICY_INGRESS` (0) or `POLICY_EGRESS` (1).
    pub direction: u8,
    pub proto: u8,
    pub port: u16,
    pub port_prefix_len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyValue {
    pub rule_id: u32,
    pub deny: bool,
}

fn be_ip(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn ip_of(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

fn write_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Write {
        map,
        op,
        source: Box::new(source),
    }
}

fn read_err(map: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Read {
        map,
        source: Box::new(source),
    }
}

/// Deleting what is already gone is success (an interrupted plan repeats).
fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(MapError::KeyNotFound) | Err(MapError::ElementNotFound) => Ok(()),
        other => other,
    }
}

fn policy_key(m: &PolicyMatch) -> Key<policy_match> {
    let prefix = if m.proto == 0 {
        POLICY_PREFIX_FIXED
    } else {
        POLICY_PREFIX_FIXED + 8 + u32::from(m.port_prefix_len.min(16))
    };
    Key::new(
        prefix,
        policy_match {
            endpoint: be_ip(m.endpoint),
            identity: m.identity,
            direction: m.direction,
            proto: m.proto,
            dport: m.port.to_be(),
        },
    )
}

fn policy_match_of(k: &Key<policy_match>) -> PolicyMatch {
    let d = k.data();
    let port_bits = k
        .prefix_len()
        .saturating_sub(POLICY_PREFIX_FIXED + 8)
        .min(16) as u8;
    PolicyMatch {
        endpoint: ip_of(d.endpoint),
        identity: d.identity,
        direction: d.direction,
        proto: d.proto,
        port: u16::from_be(d.dport),
        port_prefix_len: port_bits,
    }
}

pub struct PolicyMaps {
    ipcache: LpmTrie<MapData, u32, ipcache_entry>,
    endpoints: HashMap<MapData, u32, endpoint_info>,
    policy: LpmTrie<MapData, policy_match, policy_entry>,
    flows: HashMap<MapData, crate::bindings::pol_ct_key, crate::bindings::pol_ct_entry>,
}

impl PolicyMaps {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            ipcache: typed!(pin_dir, SLUICE_MAP_IPCACHE),
            endpoints: typed!(pin_dir, SLUICE_MAP_ENDPOINTS),
            policy: typed!(pin_dir, SLUICE_MAP_POLICY),
            flows: typed!(pin_dir, SLUICE_MAP_POLICY_CT),
        })
    }

    pub fn upsert_ipcache(&mut self, k: IpcacheKey, identity: u32) -> Result<(), MapsError> {
        let key = Key::new(u32::from(k.prefix_len), be_ip(k.addr));
        let v = ipcache_entry { identity, pad0: 0 };
        self.ipcache
            .insert(&key, v, 0)
            .map_err(write_err("sl_ipcache", "insert"))
    }

    pub fn delete_ipcache(&mut self, k: IpcacheKey) -> Result<(), MapsError> {
        let key = Key::new(u32::from(k.prefix_len), be_ip(k.addr));
        ignore_missing(self.ipcache.remove(&key)).map_err(write_err("sl_ipcache", "delete"))
    }

    pub fn ipcache_rows(&self) -> Result<Vec<(IpcacheKey, u32)>, MapsError> {
        let mut out = Vec::new();
        for item in self.ipcache.iter() {
            let (k, v) = item.map_err(read_err("sl_ipcache"))?;
            let key = IpcacheKey {
                addr: ip_of(k.data()),
                prefix_len: k.prefix_len().min(32) as u8,
            };
            out.push((key, v.identity));
        }
        Ok(out)
    }

    pub fn upsert_endpoint(&mut self, ip: Ipv4Addr, v: EndpointValue) -> Result<(), MapsError> {
        let mut flags = 0;
        if v.ingress_enforced {
            flags |= EP_F_INGRESS_ENFORCED;
        }
        if v.egress_enforced {
            flags |= EP_F_EGRESS_ENFORCED;
        }
        let value = endpoint_info {
            identity: v.identity,
            flags,
        };
        self.endpoints
            .insert(be_ip(ip), value, 0)
            .map_err(write_err("sl_endpoints", "insert"))
    }

    pub fn delete_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), MapsError> {
        ignore_missing(self.endpoints.remove(&be_ip(ip)))
            .map_err(write_err("sl_endpoints", "delete"))
    }

    pub fn endpoint_rows(&self) -> Result<Vec<(Ipv4Addr, EndpointValue)>, MapsError> {
        let mut out = Vec::new();
        for item in self.endpoints.iter() {
            let (k, v) = item.map_err(read_err("sl_endpoints"))?;
            out.push((
                ip_of(k),
                EndpointValue {
                    identity: v.identity,
                    ingress_enforced: v.flags & EP_F_INGRESS_ENFORCED != 0,
                    egress_enforced: v.flags & EP_F_EGRESS_ENFORCED != 0,
                },
            ));
        }
        Ok(out)
    }

    pub fn upsert_policy(&mut self, m: PolicyMatch, v: PolicyValue) -> Result<(), MapsError> {
        let value = policy_entry {
            rule_id: v.rule_id,
            deny: u8::from(v.deny),
            pad0: [0; 3],
        };
        self.policy
            .insert(&policy_key(&m), value, 0)
            .map_err(write_err("sl_policy", "insert"))
    }

    pub fn delete_policy(&mut self, m: PolicyMatch) -> Result<(), MapsError> {
        ignore_missing(self.policy.remove(&policy_key(&m)))
            .map_err(write_err("sl_policy", "delete"))
    }

    pub fn policy_rows(&self) -> Result<Vec<(PolicyMatch, PolicyValue)>, MapsError> {
        let mut out = Vec::new();
        for item in self.policy.iter() {
            let (k, v) = item.map_err(read_err("sl_policy"))?;
            out.push((
                policy_match_of(&k),
                PolicyValue {
                    rule_id: v.rule_id,
                    deny: v.deny != 0,
                },
            ));
        }
        Ok(out)
    }

    /// Flows with a policy verdict (for listings).
    pub fn flow_count(&self) -> usize {
        self.flows.keys().filter(Result::is_ok).count()
    }
}
