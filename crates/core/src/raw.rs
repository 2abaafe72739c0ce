//! Loose serde mirrors of the manifests, before validation.
//!
//! Numbers are `i64` and IPs/protocols are strings on purpose: a port of
//! 70000 must reach `validate` and get a precise message, instead of dying
//! in serde with a type error. Unknown fields are ignored (serde default).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Set when deletion was requested: the object is terminating.
    pub deletion_timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawNamespace {
    #[serde(default)]
    pub metadata: RawMeta,
}

#[derive(Debug, Deserialize)]
pub struct RawPod {
    #[serde(default)]
    pub metadata: RawMeta,
    #[serde(default)]
    pub spec: RawPodSpec,
    #[serde(default)]
    pub status: RawPodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPodSpec {
    pub containers: Vec<RawContainer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawContainer {
    pub ports: Vec<RawContainerPort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawContainerPort {
    pub name: Option<String>,
    pub container_port: Option<i64>,
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawPodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    pub conditions: Option<Vec<RawPodCondition>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawPodCondition {
    #[serde(rename = "type")]
    pub condition_type: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawService {
    #[serde(default)]
    pub metadata: RawMeta,
    #[serde(default)]
    pub spec: RawServiceSpec,
    #[serde(default)]
    pub status: RawServiceStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawServiceStatus {
    pub load_balancer: RawLoadBalancerStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLoadBalancerStatus {
    pub ingress: Vec<RawLoadBalancerIngress>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawLoadBalancerIngress {
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub ip_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawServiceSpec {
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<RawServicePort>,
    pub session_affinity: Option<String>,
    pub session_affinity_config: Option<RawAffinityConfig>,
    pub internal_traffic_policy: Option<String>,
    #[serde(rename = "externalIPs")]
    pub external_ips: Vec<String>,
    pub load_balancer_source_ranges: Vec<String>,
    pub external_traffic_policy: Option<String>,
    pub health_check_node_port: Option<i64>,
    pub traffic_distribution: Option<String>,
    pub publish_not_ready_addresses: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawAffinityConfig {
    #[serde(rename = "clientIP")]
    pub client_ip: Option<RawClientIpConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawClientIpConfig {
    pub timeout_seconds: Option<i64>,
}

/// Kubernetes `IntOrString`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawServicePort {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub port: Option<i64>,
    pub target_port: Option<IntOrString>,
    pub node_port: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEndpointSlice {
    #[serde(default)]
    pub metadata: RawMeta,
    pub address_type: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    pub ports: Vec<RawEndpointPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawEndpoint {
    pub addresses: Vec<String>,
    pub conditions: RawConditions,
    pub target_ref: Option<RawTargetRef>,
    pub node_name: Option<String>,
    pub hints: Option<RawHints>,
}

/// Topology hints the EndpointSlice controller sets for trafficDistribution.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawHints {
    pub for_zones: Vec<RawZoneHint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawZoneHint {
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTargetRef {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawEndpointPort {
    pub name: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
}
