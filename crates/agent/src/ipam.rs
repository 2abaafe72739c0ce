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
        if let Some(a) = self.allocations.get(container_id) {
            return Ok(a.clone());
        }
        let used: std::collections::BTreeSet<Ipv4Addr> =
            self.allocations.values().map(|a| a.ip).collect();
        // The network address, the broadcast address and .1 (kept for the
        // node's own use) are never handed out.
        let reserved = [
            self.cidr.network(),
            self.cidr.broadcast(),
            first_host(self.cidr),
        ];
        let ip = self
            .cidr
            .hosts()
            .find(|ip| !used.contains(ip) && !reserved.contains(ip))
            .ok_or(IpamError::Exhausted {
                cidr: self.cidr,
                used: used.len(),
            })?;
        let a = Allocation {
            ip,
            namespace: namespace.to_string(),
            pod: pod.to_string(),
        };
        self.allocations.insert(container_id.to_string(), a.clone());
        if let Err(e) = persist::store(&self.path, &self.allocations) {
            self.allocations.remove(container_id);
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
