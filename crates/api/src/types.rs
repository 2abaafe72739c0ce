use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// Machine-readable kind, e.g. `ipam_exhausted`, `bad_request`, `not_found`, `datapath`.
    pub kind: String,
    /// A sentence a person can act on.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamRequest {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamAllocation {
    pub ip: Ipv4Addr,
    /// Prefix length to put on the pod's interface (32: pods get a host route).
    pub prefix_len: u8,
    /// Next hop the pod uses for everything (a link-local address answered by
    /// a static neighbour entry pointing at the host side of the veth).
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamRelease {
    pub container_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRegistration {
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
    /// Host-side veth name, in the agent's network namespace.
    pub host_ifname: String,
    /// Interface name inside the pod (CNI_IFNAME).
    pub ifname: String,
    /// Path of the pod's network namespace (CNI_NETNS).
    pub netns: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Programs attached, traffic flows.
    Ready,
    /// Registered but its interface is gone or programs could not be attached.
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
    pub host_ifname: String,
    pub ifname: String,
    pub netns: String,
    pub state: EndpointState,
    /// Why the endpoint is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RejectedObject {
    pub file: String,
    /// `kind namespace/name`, or the document index when the name is unknown.
    pub object: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendInfo {
    pub id: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Pod `namespace/name` behind this address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `namespace/name`.
    pub service: String,
    /// `ClusterIP` or `NodePort`.
    pub kind: String,
    /// Frontend address; `0.0.0.0` for a NodePort (every node address).
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub port_name: String,
    pub rev_nat_id: u32,
    pub backends: Vec<BackendInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatapathStatus {
    /// How the tc programs are attached: `tcx` or `tc` (clsact fallback).
    pub attach_mode: String,
    pub pin_dir: String,
    /// Devices serving NodePort.
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub node_name: String,
    pub version: String,
    pub pod_cidr: String,
    pub manifests: String,
    pub datapath: DatapathStatus,
    pub services: usize,
    pub frontends: usize,
    pub backends: usize,
    pub endpoints: usize,
    /// Unix seconds of the last successful sync to the maps.
    pub last_sync_unix: Option<u64>,
    /// Map writes of the last sync.
    pub last_sync_writes: usize,
    /// Map writes that failed (e.g. map full) since start.
    pub map_write_errors: u64,
    pub rejected: Vec<RejectedObject>,
}
