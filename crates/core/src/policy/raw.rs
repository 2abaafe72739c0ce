//! Serde mirrors of NetworkPolicy and CiliumNetworkPolicy manifests.
//!
//! Unlike the other kinds, unknown fields are rejected (except in
//! `metadata`): a misspelt field in a policy silently changes what is
//! allowed (`podSelectr` would select every pod), which is worse than a
//! rejected object whose last good version stays in force. Scalars stay
//! loose (`i64`, strings) so `validate` can give precise messages.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::raw::{IntOrString, RawMeta};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<RawRequirement>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCidrBlock {
    pub cidr: Option<String>,
    pub except: Option<Vec<String>>,
}

// ---- networking.k8s.io/v1 NetworkPolicy ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNetworkPolicy {
    #[allow(dead_code)] // checked by parse before decoding
    pub api_version: Option<IgnoredAny>,
    #[allow(dead_code)]
    pub kind: Option<IgnoredAny>,
    #[serde(default)]
    pub metadata: RawMeta,
    #[serde(default)]
    pub spec: RawNetworkPolicySpec,
    /// Written by some API server versions; never input.
    #[allow(dead_code)]
    pub status: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNetworkPolicySpec {
    pub pod_selector: Option<RawSelector>,
    pub policy_types: Option<Vec<String>>,
    pub ingress: Option<Vec<RawIngressRule>>,
    pub egress: Option<Vec<RawEgressRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngressRule {
    pub from: Option<Vec<RawPeer>>,
    pub ports: Option<Vec<RawPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgressRule {
    pub to: Option<Vec<RawPeer>>,
    pub ports: Option<Vec<RawPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPeer {
    pub pod_selector: Option<RawSelector>,
    pub namespace_selector: Option<RawSelector>,
    pub ip_block: Option<RawCidrBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPort {
    pub protocol: Option<String>,
    pub port: Option<IntOrString>,
    pub end_port: Option<i64>,
}

// ---- cilium.io/v2 CiliumNetworkPolicy ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCiliumNetworkPolicy {
    #[allow(dead_code)] // checked by parse before decoding
    pub api_version: Option<IgnoredAny>,
    #[allow(dead_code)]
    pub kind: Option<IgnoredAny>,
    #[serde(default)]
    pub metadata: RawMeta,
    pub spec: Option<RawCiliumSpec>,
    /// Known but unsupported: rejected with its own message.
    pub specs: Option<IgnoredAny>,
    /// Written by the Cilium operator; never input.
    #[allow(dead_code)]
    pub status: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCiliumSpec {
    pub endpoint_selector: Option<RawSelector>,
    pub ingress: Option<Vec<RawCiliumIngress>>,
    pub ingress_deny: Option<Vec<RawCiliumIngress>>,
    pub egress: Option<Vec<RawCiliumEgress>>,
    pub egress_deny: Option<Vec<RawCiliumEgress>>,
    /// Free text; carried by Cilium, meaningless to enforcement.
    #[allow(dead_code)]
    pub description: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCiliumIngress {
    pub from_endpoints: Option<Vec<RawSelector>>,
    #[serde(rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<RawCidrBlock>>,
    pub from_entities: Option<Vec<String>>,
    pub to_ports: Option<Vec<RawPortRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCiliumEgress {
    pub to_endpoints: Option<Vec<RawSelector>>,
    #[serde(rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<RawCidrBlock>>,
    pub to_entities: Option<Vec<String>>,
    pub to_ports: Option<Vec<RawPortRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPortRule {
    pub ports: Option<Vec<RawPortProtocol>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPortProtocol {
    pub port: Option<IntOrString>,
    pub protocol: Option<String>,
    pub end_port: Option<i64>,
}

/// Ingress and egress Cilium rules differ only in field names; validation
/// works on this common view and uses `names` for error paths.
pub struct RawCiliumRule {
    pub endpoints: Option<Vec<RawSelector>>,
    pub cidr: Option<Vec<String>>,
    pub cidr_set: Option<Vec<RawCidrBlock>>,
    pub entities: Option<Vec<String>>,
    pub to_ports: Option<Vec<RawPortRule>>,
    pub names: &'static CiliumFieldNames,
}

pub struct CiliumFieldNames {
    pub endpoints: &'static str,
    pub cidr: &'static str,
    pub cidr_set: &'static str,
    pub entities: &'static str,
}

pub const INGRESS_NAMES: CiliumFieldNames = CiliumFieldNames {
    endpoints: "fromEndpoints",
    cidr: "fromCIDR",
    cidr_set: "fromCIDRSet",
    entities: "fromEntities",
};

pub const EGRESS_NAMES: CiliumFieldNames = CiliumFieldNames {
    endpoints: "toEndpoints",
    cidr: "toCIDR",
    cidr_set: "toCIDRSet",
    entities: "toEntities",
};

impl From<RawCiliumIngress> for RawCiliumRule {
    fn from(r: RawCiliumIngress) -> Self {
        Self {
            endpoints: r.from_endpoints,
            cidr: r.from_cidr,
            cidr_set: r.from_cidr_set,
            entities: r.from_entities,
            to_ports: r.to_ports,
            names: &INGRESS_NAMES,
        }
    }
}

impl From<RawCiliumEgress> for RawCiliumRule {
    fn from(r: RawCiliumEgress) -> Self {
        Self {
            endpoints: r.to_endpoints,
            cidr: r.to_cidr,
            cidr_set: r.to_cidr_set,
            entities: r.to_entities,
            to_ports: r.to_ports,
            names: &EGRESS_NAMES,
        }
    }
}
