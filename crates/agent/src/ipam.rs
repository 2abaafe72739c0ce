//! Pod address allocation from the node's pod CIDR.
//!
//! Allocations are persisted before they are handed out, so a restarted
//! agent never gives a used address to another pod. Allocation is idempotent
//! per container id (a runtime retrying ADD gets the same address).

use crate::persist::{self, PersistError};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in pod CIDR {cidr} ({used} in use)")]
    Exhausted { cidr: Ipv4Net, used: usize },
    #[error("requested address {ip} is outside the pod CIDR {cidr}")]
    OutsideCidr { ip: Ipv4Addr, cidr: Ipv4Net },
    #[error("requested address {ip} is reserved in the pod CIDR {cidr} (network, broadcast or the node's first address)")]
    Reserved { ip: Ipv4Addr, cidr: Ipv4Net },
    #[error("requested address {ip} is already allocated to pod {namespace}/{pod}")]
    InUse {
        ip: Ipv4Addr,
        namespace: String,
        pod: String,
    },
    #[error(transparent)]
    Persist(#[from] PersistError),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub namespace: String,
    pub pod: String,
}

pub struct Ipam {
    cidr: Ipv4Net,
    path: PathBuf,
    /// container id → allocation
    allocations: BTreeMap<String, Allocation>,
}

impl Ipam {
    /// Loads the allocations persisted at `path`.
    pub fn open(cidr: Ipv4Net, path: PathBuf) -> Result<Self, IpamError> {
        let allocations: BTreeMap<String, Allocation> = persist::load(&path)?;
        Ok(Self {
            cidr: cidr.trunc(),
            path,
            allocations,
        })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    pub fn allocate(
        &mut self,
        container_id: &str,
        namespace: &str,
        pod: &str,
    ) -> Result<Allocation, IpamError> {
        self.allocate_ip(container_id, namespace, pod, None)
    }

    /// Like [`Ipam::allocate`], but `requested` asks for exactly that
    /// address: it is granted if it is inside the pod CIDR, not reserved
    /// and free, else the error names it. A retried ADD of the same
    /// container gets its existing allocation back only if it matches.
    pub fn allocate_ip(
        &mut self,
        container_id: &str,
        namespace: &str,
        pod: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Allocation, IpamError> {
        if let Some(a) = self.allocations.get(container_id) {
            if requested.is_none_or(|ip| ip == a.ip) {
                return Ok(a.clone());
            }
        }
        let used: std::collections::BTreeMap<Ipv4Addr, &Allocation> = self
            .allocations
            .iter()
            .filter(|(id, _)| id.as_str() != container_id)
            .map(|(_, a)| (a.ip, a))
            .collect();
        // The network address, the broadcast address and .1 (kept for the
        // node's own use) are never handed out.
        let reserved = [
            self.cidr.network(),
            self.cidr.broadcast(),
            first_host(self.cidr),
        ];
        let ip = match requested {
            Some(ip) => {
                if !self.cidr.contains(&ip) {
                    return Err(IpamError::OutsideCidr {
                        ip,
                        cidr: self.cidr,
                    });
                }
                if reserved.contains(&ip) {
                    return Err(IpamError::Reserved {
                        ip,
                        cidr: self.cidr,
                    });
                }
                if let Some(a) = used.get(&ip) {
                    return Err(IpamError::InUse {
                        ip,
                        namespace: a.namespace.clone(),
                        pod: a.pod.clone(),
                    });
                }
                ip
            }
            None => self
                .cidr
                .hosts()
                .find(|ip| !used.contains_key(ip) && !reserved.contains(ip))
                .ok_or(IpamError::Exhausted {
                    cidr: self.cidr,
                    used: used.len(),
                })?,
        };
        let previous = self.allocations.get(container_id).cloned();
        let a = Allocation {
            ip,
            namespace: namespace.to_string(),
            pod: pod.to_string(),
        };
        self.allocations.insert(container_id.to_string(), a.clone());
        if let Err(e) = persist::store(&self.path, &self.allocations) {
            match previous {
                Some(p) => self.allocations.insert(container_id.to_string(), p),
                None => self.allocations.remove(container_id),
            };
            return Err(e.into());
        }
        Ok(a)
    }

    /// Releasing an unknown id succeeds: DEL must be idempotent.
    pub fn release(&mut self, container_id: &str) -> Result<(), IpamError> {
        if self.allocations.remove(container_id).is_some() {
            persist::store(&self.path, &self.allocations)?;
        }
        Ok(())
    }

    pub fn allocations(&self) -> impl Iterator<Item = (&String, &Allocation)> {
        self.allocations.iter()
    }
}

fn first_host(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).saturating_add(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ipam(dir: &tempfile::TempDir, cidr: &str) -> Ipam {
        Ipam::open(cidr.parse().unwrap(), dir.path().join("ipam.json")).unwrap()
    }

    #[test]
    fn allocates_lowest_free_skipping_reserved_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = ipam(&dir, "10.244.1.0/24");
        let a = i.allocate("c1", "default", "a").unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(i.allocate("c1", "default", "a").unwrap(), a);
        assert_eq!(
            i.allocate("c2", "default", "b").unwrap().ip,
            Ipv4Addr::new(10, 244, 1, 3)
        );
    }

    #[test]
    fn survives_restart_and_never_reuses_a_held_address() {
        let dir = tempfile::tempdir().unwrap();
        let first = ipam(&dir, "10.244.1.0/24")
            .allocate("c1", "d", "a")
            .unwrap();
        let mut again = ipam(&dir, "10.244.1.0/24");
        assert_ne!(again.allocate("c2", "d", "b").unwrap().ip, first.ip);
        again.release("c1").unwrap();
        again.release("c1").unwrap();
        assert_eq!(
            ipam(&dir, "10.244.1.0/24")
                .allocate("c3", "d", "c")
                .unwrap()
                .ip,
            first.ip
        );
    }

    #[test]
    fn a_requested_address_is_granted_exactly_or_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = ipam(&dir, "10.0.0.0/8");
        let want = Ipv4Addr::new(10, 180, 0, 2);
        let a = i.allocate_ip("c1", "d", "a", Some(want)).unwrap();
        assert_eq!(a.ip, want);
        // Idempotent for the same container.
        assert_eq!(i.allocate_ip("c1", "d", "a", Some(want)).unwrap(), a);
        // Taken by another pod: the error names the address and the holder.
        let e = i.allocate_ip("c2", "d", "b", Some(want)).unwrap_err();
        assert!(matches!(e, IpamError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("10.180.0.2"), "{e}");
        assert!(e.to_string().contains("d/a"), "{e}");
        // Outside the CIDR, and reserved addresses.
        let e = i
            .allocate_ip("c3", "d", "c", Some(Ipv4Addr::new(192, 168, 0, 2)))
            .unwrap_err();
        assert!(matches!(e, IpamError::OutsideCidr { .. }), "{e}");
        assert!(e.to_string().contains("192.168.0.2"), "{e}");
        for ip in [Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 1)] {
            let e = i.allocate_ip("c4", "d", "x", Some(ip)).unwrap_err();
            assert!(matches!(e, IpamError::Reserved { .. }), "{e}");
        }
        // Persisted like any allocation; automatic allocation skips it.
        let mut again = ipam(&dir, "10.0.0.0/8");
        assert!(again.allocate_ip("c5", "d", "e", Some(want)).is_err());
        assert_eq!(
            again.allocate("c6", "d", "f").unwrap().ip,
            Ipv4Addr::new(10, 0, 0, 2)
        );
    }

    #[test]
    fn exhaustion_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = ipam(&dir, "10.244.1.0/29"); // hosts .1-.6, .1 reserved
        for n in 0..5 {
            i.allocate(&format!("c{n}"), "d", "p").unwrap();
        }
        assert!(matches!(
            i.allocate("c9", "d", "p"),
            Err(IpamError::Exhausted { .. })
        ));
    }
}
