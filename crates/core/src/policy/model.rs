//! Validated NetworkPolicy and CiliumNetworkPolicy objects.
//!
//! Produced only by the policy validators, so selectors have known
//! operators, CIDRs are IPv4 networks and ports are in range. Absent and
//! empty lists are already folded where the API treats them alike; where it
//! does not (Kubernetes `ingress: []` vs `ingress: [{}]`), the shape here
//! keeps the difference.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{Meta, Protocol};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl SelectorOperator {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "In" => Some(Self::In),
            "NotIn" => Some(Self::NotIn),
            "Exists" => Some(Self::Exists),
            "DoesNotExist" => Some(Self::DoesNotExist),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    /// Non-empty for In/NotIn, empty for Exists/DoesNotExist.
    pub values: Vec<String>,
}

impl SelectorRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            // Kubernetes: a missing key satisfies NotIn.
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// A Kubernetes label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// All requirements hold (they are ANDed).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether any requirement mentions `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.match_labels.contains_key(key) || self.match_expressions.iter().any(|r| r.key == key)
    }

    /// Whether any requirement's key starts with `prefix`.
    pub fn has_key_prefix(&self, prefix: &str) -> bool {
        self.match_labels.keys().any(|k| k.starts_with(prefix))
            || self
                .match_expressions
                .iter()
                .any(|r| r.key.starts_with(prefix))
    }
}

/// A CIDR minus holes: Kubernetes `ipBlock`, Cilium `fromCIDRSet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidrBlock {
    /// Host bits already cleared (`10.244.1.7/4` is stored as `0.0.0.0/4`).
    pub cidr: Ipv4Net,
    /// Each one inside `cidr`.
    pub except: Vec<Ipv4Net>,
}

impl CidrBlock {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

/// Which ports of a protocol a rule names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortMatch {
    All,
    /// Inclusive; `start == end` for a single port.
    Range {
        start: u16,
        end: u16,
    },
    /// A container port name, resolved against the destination pod.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPort {
    /// `None` is Cilium's `ANY` (TCP, UDP and SCTP).
    pub protocol: Option<Protocol>,
    pub port: PortMatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// One `from`/`to` element of a Kubernetes NetworkPolicy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkPolicyPeer {
    /// At least one of the two is set. Only `pod_selector`: pods of the
    /// policy's namespace; only `namespace_selector`: every pod of the
    /// matching namespaces; both: the pods matching both.
    Selector {
        pod_selector: Option<LabelSelector>,
        namespace_selector: Option<LabelSelector>,
    },
    IpBlock(CidrBlock),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicyRule {
    /// Empty (or absent in the manifest): every peer, pods or not.
    pub peers: Vec<NetworkPolicyPeer>,
    /// Empty (or absent): every port of every protocol.
    pub ports: Vec<PolicyPort>,
}

/// `networking.k8s.io/v1` NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub meta: Meta,
    pub pod_selector: LabelSelector,
    /// After Kubernetes defaulting: sorted, without duplicates, never empty.
    pub policy_types: Vec<PolicyType>,
    pub ingress: Vec<NetworkPolicyRule>,
    pub egress: Vec<NetworkPolicyRule>,
}

impl NetworkPolicy {
    pub fn has_type(&self, t: PolicyType) -> bool {
        self.policy_types.contains(&t)
    }
}

/// Cilium's named peer groups (`fromEntities` / `toEntities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entity {
    All,
    World,
    Cluster,
    Host,
    RemoteNode,
    Health,
}

impl Entity {
    pub const ALL: [Entity; 6] = [
        Entity::All,
        Entity::World,
        Entity::Cluster,
        Entity::Host,
        Entity::RemoteNode,
        Entity::Health,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Entity::All => "all",
            Entity::World => "world",
            Entity::Cluster => "cluster",
            Entity::Host => "host",
            Entity::RemoteNode => "remote-node",
            Entity::Health => "health",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of a CiliumNetworkPolicy, allow or deny, either direction.
///
/// Peers are the union of `endpoints`, `cidrs` and `entities`. With none of
/// them the rule still applies to all peers when it has `toPorts` (Cilium's
/// "L4-only" rule), but a fully empty rule (`- {}`) allows nothing: Cilium
/// documents it as the way to switch an endpoint to default deny.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumRule {
    /// Selectors over identity labels (see [`crate::policy::identity`]),
    /// `k8s:` prefixes removed, and scoped to the policy's namespace unless
    /// they name a namespace themselves (as Cilium does).
    pub endpoints: Vec<LabelSelector>,
    /// `fromCIDR`/`toCIDR` (as blocks without holes), then the CIDR sets.
    pub cidrs: Vec<CidrBlock>,
    pub entities: Vec<Entity>,
    /// Flattened `toPorts[*].ports`; empty (no `toPorts`) means every port.
    /// A `toPorts` element without `ports` becomes one all-ports entry, so
    /// this is empty exactly when the manifest has no `toPorts`.
    pub ports: Vec<PolicyPort>,
}

impl CiliumRule {
    pub fn has_peers(&self) -> bool {
        !self.endpoints.is_empty() || !self.cidrs.is_empty() || !self.entities.is_empty()
    }
}

/// `cilium.io/v2` CiliumNetworkPolicy (single `spec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumNetworkPolicy {
    pub meta: Meta,
    /// Over identity labels, always restricted to the policy's namespace.
    pub endpoint_selector: LabelSelector,
    pub ingress: Vec<CiliumRule>,
    pub ingress_deny: Vec<CiliumRule>,
    pub egress: Vec<CiliumRule>,
    pub egress_deny: Vec<CiliumRule>,
}
