//! The endpoint registry: pods the CNI plugin wired to this node.
//!
//! Persisted under the state dir so a restarted agent knows its pods (and
//! their IPs, which Services without EndpointSlices need); checked against
//! the kernel on start: an endpoint whose interface vanished is NotReady.

use crate::persist::{self, PersistError};
use serde::{Deserialize, Serialize};
use sluice_api::{EndpointInfo, EndpointRegistration, EndpointState};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRecord {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
    pub host_ifname: String,
    pub ifname: String,
    pub netns: String,
}

impl EndpointRecord {
    pub fn new(container_id: &str, reg: &EndpointRegistration) -> Self {
        Self {
            container_id: container_id.to_string(),
            namespace: reg.namespace.clone(),
            pod: reg.pod.clone(),
            ip: reg.ip,
            host_ifname: reg.host_ifname.clone(),
            ifname: reg.ifname.clone(),
            netns: reg.netns.clone(),
        }
    }

    pub fn info(&self, state: EndpointState, reason: Option<String>) -> EndpointInfo {
        EndpointInfo {
            container_id: self.container_id.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            ip: self.ip,
            host_ifname: self.host_ifname.clone(),
            ifname: self.ifname.clone(),
            netns: self.netns.clone(),
            state,
            reason,
        }
    }
}

pub struct Registry {
    path: PathBuf,
    records: BTreeMap<String, EndpointRecord>,
}

impl Registry {
    pub fn open(path: PathBuf) -> Result<Self, PersistError> {
        let records = persist::load(&path)?;
        Ok(Self { path, records })
    }

    pub fn upsert(&mut self, rec: EndpointRecord) -> Result<Option<EndpointRecord>, PersistError> {
        let old = self.records.insert(rec.container_id.clone(), rec);
        persist::store(&self.path, &self.records)?;
        Ok(old)
    }

    pub fn remove(&mut self, container_id: &str) -> Result<Option<EndpointRecord>, PersistError> {
        let old = self.records.remove(container_id);
        if old.is_some() {
            persist::store(&self.path, &self.records)?;
        }
        Ok(old)
    }

    pub fn get(&self, container_id: &str) -> Option<&EndpointRecord> {
        self.records.get(container_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `namespace/pod` of the endpoint holding `ip`, for listings.
    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<String> {
        self.records
            .values()
            .find(|r| r.ip == ip)
            .map(|r| format!("{}/{}", r.namespace, r.pod))
    }
}
