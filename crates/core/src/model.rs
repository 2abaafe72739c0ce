//! Validated, typed Kubernetes objects: the subset Sluice needs.
//!
//! These are produced only by `validate`, so every field here is already
//! checked (IPs parsed, ports in range); the compiler never re-validates.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use serde::{Deserialize, Serialize};

pub use crate::policy::model::{CiliumNetworkPolicy, NetworkPolicy};

/// L4 protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// IPPROTO number as the datapath stores it.
    pub fn as_u8(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Inverse of [`Protocol::as_u8`], for reading maps back.
    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn parse_k8s(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// The kinds we accept; anything else is rejected at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    /// `networking.k8s.io/v1`.
    NetworkPolicy,
    /// `cilium.io/v2`.
    CiliumNetworkPolicy,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Namespace" => Some(Kind::Namespace),
            "Pod" => Some(Kind::Pod),
            "Service" => Some(Kind::Service),
            "EndpointSlice" => Some(Kind::EndpointSlice),
            "NetworkPolicy" => Some(Kind::NetworkPolicy),
            "CiliumNetworkPolicy" => Some(Kind::CiliumNetworkPolicy),
            _ => None,
        }
    }

    /// The only `apiVersion` accepted for this kind, where we check it:
    /// other API groups reuse these kind names (Calico has its own
    /// `NetworkPolicy`), and reading theirs as ours would enforce the
    /// wrong thing.
    pub fn api_version(self) -> Option<&'static str> {
        match self {
            Kind::NetworkPolicy => Some("networking.k8s.io/v1"),
            Kind::CiliumNetworkPolicy => Some("cilium.io/v2"),
            Kind::Namespace | Kind::Pod | Kind::Service | Kind::EndpointSlice => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Identity of an object: what the store keys on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds (Namespace).
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub meta: Meta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub meta: Meta,
    /// All container ports of all containers, in manifest order.
    pub ports: Vec<ContainerPort>,
    /// status.podIP, or the IP the CNI registered (the store applies it).
    pub ip: Option<Ipv4Addr>,
    /// The `Ready` condition; a Pod without `status.conditions` counts as
    /// ready (manifests written by hand, pods known only from the CNI).
    #[serde(default = "ready_by_default")]
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    #[serde(default)]
    pub terminating: bool,
}

fn ready_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Empty when the manifest has no name (allowed for single-port Services).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
    pub node_port: Option<u16>,
}

/// Label that hands a Service to another proxy; kube-proxy skips these.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub meta: Meta,
    pub service_type: ServiceType,
    /// `None` for headless (`clusterIP: None`) and ExternalName Services.
    pub cluster_ip: Option<Ipv4Addr>,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds
    /// (`sessionAffinityConfig.clientIP.timeoutSeconds`, default 10800).
    #[serde(default)]
    pub session_affinity_timeout: Option<u32>,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic only to endpoints
    /// on this node; none there means DROP.
    #[serde(default)]
    pub internal_traffic_local: bool,
    /// Annotation `sluice.io/lb-algorithm`: `Some(true)` maglev,
    /// `Some(false)` random, `None` the node's default.
    #[serde(default)]
    pub maglev: Option<bool>,
    /// `spec.externalIPs`: served like the ClusterIP, from anywhere that
    /// routes them to the node.
    #[serde(default)]
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` of LoadBalancer Services, except
    /// `ipMode: Proxy` ones (the load balancer itself proxies those).
    #[serde(default)]
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.loadBalancerSourceRanges`: only these sources may use the
    /// load-balancer IPs (empty: everyone). NodePorts, the ClusterIP and
    /// externalIPs are not filtered, as in kube-proxy.
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<Ipv4Net>,
    /// `externalTrafficPolicy: Local`: traffic from outside the cluster to
    /// NodePorts, LB IPs and externalIPs goes only to endpoints on this
    /// node, keeping the client's address (none here: drop).
    #[serde(default)]
    pub external_traffic_local: bool,
    /// `spec.healthCheckNodePort` (parsed and validated; served by the
    /// health-check responder).
    #[serde(default)]
    pub health_check_node_port: Option<u16>,
    /// `spec.trafficDistribution: PreferClose` (or the older
    /// `service.kubernetes.io/topology-mode` annotation): prefer endpoints
    /// hinted for this node's zone (see `topology.rs`).
    #[serde(default)]
    pub prefer_close: bool,
    /// `spec.publishNotReadyAddresses`: selected pods are endpoints
    /// whether ready or not (what the EndpointSlice controller publishes).
    #[serde(default)]
    pub publish_not_ready: bool,
}

/// Per-Service choice of backend selection: `maglev` or `random`.
pub const LB_ALGORITHM_ANNOTATION: &str = "sluice.io/lb-algorithm";

/// Kubernetes' default and largest `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

impl Service {
    /// Whether Sluice programs this Service at all. Mirrors kube-proxy:
    /// headless, ExternalName and Services owned by another proxy are skipped.
    pub fn is_proxied(&self) -> bool {
        self.service_type != ServiceType::ExternalName
            && self.cluster_ip.is_some()
            && !self.meta.labels.contains_key(SERVICE_PROXY_NAME_LABEL)
    }

    /// Whether node ports of this Service are programmed.
    pub fn has_node_ports(&self) -> bool {
        matches!(
            self.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressType {
    Ipv4,
    Ipv6,
    Fqdn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Empty unless the slice's address type is IPv4 (others are ignored).
    pub addresses: Vec<Ipv4Addr>,
    /// Unset in the manifest means ready, as in Kubernetes.
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub target_ref: Option<TargetRef>,
    pub node_name: Option<String>,
    /// `hints.forZones[].name`: zones this endpoint should serve.
    #[serde(default)]
    pub zone_hints: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPort {
    pub name: String,
    /// Unset means "all ports" in Kubernetes; kube-proxy cannot use such a port.
    pub port: Option<u16>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSlice {
    pub meta: Meta,
    /// Value of the `kubernetes.io/service-name` label (required).
    pub service_name: String,
    pub address_type: AddressType,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<EndpointPort>,
}

/// One validated object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    NetworkPolicy(NetworkPolicy),
    CiliumNetworkPolicy(CiliumNetworkPolicy),
}

impl Object {
    pub fn meta(&self) -> &Meta {
        match self {
            Object::Namespace(o) => &o.meta,
            Object::Pod(o) => &o.meta,
            Object::Service(o) => &o.meta,
            Object::EndpointSlice(o) => &o.meta,
            Object::NetworkPolicy(o) => &o.meta,
            Object::CiliumNetworkPolicy(o) => &o.meta,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
            Object::CiliumNetworkPolicy(_) => Kind::CiliumNetworkPolicy,
        }
    }

    pub fn object_ref(&self) -> ObjectRef {
        let meta = self.meta();
        ObjectRef {
            kind: self.kind(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        }
    }
}

/// An object-level change, as the store emits it and the engine consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Upsert(Object),
    Delete(ObjectRef),
}
