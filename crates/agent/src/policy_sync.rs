//! Writes compiled NetworkPolicy state ([`PolicyState`]) to the policy maps.
//!
//! Like the Service reconciler it mirrors what the maps hold (read back at
//! start, so a restarted agent writes only the difference) and is the only
//! writer. Writes are ordered so no packet sees a half-applied change open
//! a hole or deny by accident: entries, then identities (ipcache), then the
//! endpoints' enforcement flags, then removals in the reverse order. An
//! endpoint that becomes enforced therefore has its allows before its
//! default deny, one that stops being enforced is opened before its
//! entries go, and an address moved to a new identity finds that
//! identity's entries in place.

use sluice_core::policy::{PolicyKey, PolicyState};
use sluice_datapath::{EndpointValue, IpcacheKey, MapsError, PolicyMaps, PolicyMatch, PolicyValue};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("policy map write failed after {applied} writes: {source}")]
pub struct PolicyWriteError {
    pub applied: usize,
    pub source: MapsError,
}

/// The maps' form of a compiled state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tables {
    ipcache: BTreeMap<IpcacheKey, u32>,
    endpoints: BTreeMap<Ipv4Addr, EndpointValue>,
    entries: BTreeMap<PolicyMatch, PolicyValue>,
}

pub fn policy_match(k: &PolicyKey) -> PolicyMatch {
    PolicyMatch {
        endpoint: k.endpoint,
        identity: k.identity,
        direction: k.direction.as_u8(),
        proto: k.proto,
        port: k.port,
        port_prefix_len: k.port_prefix_len,
    }
}

fn tables_of(state: &PolicyState) -> Tables {
    Tables {
        ipcache: state
            .ipcache
            .iter()
            .map(|(net, id)| {
                (
                    IpcacheKey {
                        addr: net.network(),
                        prefix_len: net.prefix_len(),
                    },
                    *id,
                )
            })
            .collect(),
        endpoints: state
            .endpoints
            .iter()
            .map(|(ip, ep)| {
                (
                    *ip,
                    EndpointValue {
                        identity: ep.identity,
                        ingress_enforced: ep.ingress_enforced,
                        egress_enforced: ep.egress_enforced,
                    },
                )
            })
            .collect(),
        entries: state
            .entries
            .iter()
            .map(|(k, v)| {
                (
                    policy_match(k),
                    PolicyValue {
                        rule_id: v.rule_id,
                        deny: v.deny,
                    },
                )
            })
            .collect(),
    }
}

pub struct PolicyReconciler {
    maps: PolicyMaps,
    applied: Tables,
}

/// Keys of `want` that are new or changed against `have`.
fn upserts<'a, K: Ord + Copy, V: PartialEq + Copy>(
    want: &'a BTreeMap<K, V>,
    have: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = (K, V)> + 'a {
    want.iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
}

fn stale<'a, K: Ord + Copy, V>(
    want: &'a BTreeMap<K, V>,
    have: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = K> + 'a {
    have.keys().filter(|k| !want.contains_key(k)).copied()
}

impl PolicyReconciler {
    /// Opens the pinned maps and reads back what they hold.
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        let maps = PolicyMaps::open(pin_dir)?;
        let applied = Tables {
            ipcache: maps.ipcache_rows()?.into_iter().collect(),
            endpoints: maps.endpoint_rows()?.into_iter().collect(),
            entries: maps.policy_rows()?.into_iter().collect(),
        };
        Ok(Self { maps, applied })
    }

    /// Whether any endpoint in the maps is enforced in some direction.
    pub fn active(&self) -> bool {
        self.applied
            .endpoints
            .values()
            .any(|e| e.ingress_enforced || e.egress_enforced)
    }

    pub fn entry_count(&self) -> usize {
        self.applied.entries.len()
    }

    pub fn maps(&self) -> &PolicyMaps {
        &self.maps
    }

    /// Makes the maps hold `state`. Returns the number of writes; on a
    /// failed write the mirror stays exact (it records every write that
    /// succeeded) and the next call continues from there.
    pub fn apply(&mut self, state: &PolicyState) -> Result<usize, PolicyWriteError> {
        let want = tables_of(state);
        let mut n = 0usize;
        let fail = |applied: usize| move |source| PolicyWriteError { applied, source };

        // Entries before the ipcache: an address that moves to a new
        // (CIDR) identity must find that identity's entries already there.
        let entries: Vec<_> = upserts(&want.entries, &self.applied.entries).collect();
        for (k, v) in entries {
            self.maps.upsert_policy(k, v).map_err(fail(n))?;
            self.applied.entries.insert(k, v);
            n += 1;
        }
        let ipcache: Vec<_> = upserts(&want.ipcache, &self.applied.ipcache).collect();
        for (k, id) in ipcache {
            self.maps.upsert_ipcache(k, id).map_err(fail(n))?;
            self.applied.ipcache.insert(k, id);
            n += 1;
        }
        let endpoints: Vec<_> = upserts(&want.endpoints, &self.applied.endpoints).collect();
        for (ip, v) in endpoints {
            self.maps.upsert_endpoint(ip, v).map_err(fail(n))?;
            self.applied.endpoints.insert(ip, v);
            n += 1;
        }
        let gone: Vec<_> = stale(&want.endpoints, &self.applied.endpoints).collect();
        for ip in gone {
            self.maps.delete_endpoint(ip).map_err(fail(n))?;
            self.applied.endpoints.remove(&ip);
            n += 1;
        }
        // Addresses leave an identity before its entries go.
        let gone: Vec<_> = stale(&want.ipcache, &self.applied.ipcache).collect();
        for k in gone {
            self.maps.delete_ipcache(k).map_err(fail(n))?;
            self.applied.ipcache.remove(&k);
            n += 1;
        }
        let gone: Vec<_> = stale(&want.entries, &self.applied.entries).collect();
        for k in gone {
            self.maps.delete_policy(k).map_err(fail(n))?;
            self.applied.entries.remove(&k);
            n += 1;
        }
        Ok(n)
    }
}
