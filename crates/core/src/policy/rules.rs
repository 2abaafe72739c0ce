//! Both policy kinds, folded into one rule shape.
//!
//! The compiler and `evaluate` both read this shape, so the Kubernetes vs
//! Cilium differences (who a selector may match, what an empty rule means)
//! are decided once, here.

use super::cluster::PodView;
use super::model::{
    CidrBlock, CiliumNetworkPolicy, CiliumRule, Entity, LabelSelector, NetworkPolicy,
    NetworkPolicyPeer, NetworkPolicyRule, PolicyPort, PolicyType,
};
use super::state::{Direction, RuleRef};
use crate::model::ObjectRef;

/// Which pods a policy applies to.
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    /// Pods of `namespace` whose own labels match.
    K8s {
        namespace: String,
        selector: LabelSelector,
    },
    /// Matches selector labels; validation pinned it to the namespace.
    Cilium(LabelSelector),
}

impl Subject {
    pub fn selects(&self, pod: &PodView<'_>) -> bool {
        match self {
            Subject::K8s {
                namespace,
                selector,
            } => pod.pod.meta.namespace == *namespace && selector.matches(&pod.pod.meta.labels),
            Subject::Cilium(selector) => selector.matches(&pod.selector_labels),
        }
    }
}

/// Namespaces a Kubernetes pod peer may come from.
#[derive(Debug, Clone)]
pub(crate) enum NamespaceScope {
    Same(String),
    Matching(LabelSelector),
}

#[derive(Debug, Clone)]
pub(crate) enum PeerSel {
    /// Kubernetes podSelector and/or namespaceSelector.
    Pods {
        namespaces: NamespaceScope,
        pods: Option<LabelSelector>,
    },
    /// Cilium endpoint selector over selector labels.
    Endpoints(LabelSelector),
    Cidr(CidrBlock),
    Entity(Entity),
}

impl PeerSel {
    /// Whether a pod peer is matched by its labels (CIDRs and entities are
    /// matched by the caller, which knows about IPs and the host).
    pub fn matches_pod_labels(&self, pod: &PodView<'_>) -> bool {
        match self {
            PeerSel::Pods { namespaces, pods } => {
                let ns_ok = match namespaces {
                    NamespaceScope::Same(ns) => pod.pod.meta.namespace == *ns,
                    NamespaceScope::Matching(sel) => sel.matches(&pod.namespace_labels),
                };
                ns_ok
                    && pods
                        .as_ref()
                        .is_none_or(|s| s.matches(&pod.pod.meta.labels))
            }
            PeerSel::Endpoints(sel) => sel.matches(&pod.selector_labels),
            PeerSel::Cidr(_) | PeerSel::Entity(_) => false,
        }
    }

    /// Named ports of egress rules resolve against the destination pod,
    /// which only selector-like peers identify; a CIDR peer names
    /// addresses, not pods, so a named port with it allows nothing.
    pub fn resolves_named_ports(&self) -> bool {
        !matches!(self, PeerSel::Cidr(_))
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Peers {
    /// Every peer: pods, host, world.
    All,
    /// The union of these (none: the rule matches nothing).
    Some(Vec<PeerSel>),
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// `id` is filled in by the engine once all policies are known.
    pub rref: RuleRef,
    pub peers: Peers,
    /// Empty: every port of every protocol.
    pub ports: Vec<PolicyPort>,
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub object: ObjectRef,
    pub subject: Subject,
    pub ingress: bool,
    pub egress: bool,
    /// Sorted by (direction, deny, index), the rule-id order.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Whether pods this policy selects are isolated in `dir`.
    pub fn enforces(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}

fn rule(policy: &ObjectRef, direction: Direction, deny: bool, index: usize) -> RuleRef {
    RuleRef {
        id: 0,
        policy: policy.clone(),
        direction,
        index,
        deny,
    }
}

pub(crate) fn from_k8s(np: &NetworkPolicy, object: ObjectRef) -> Policy {
    let ns = &np.meta.namespace;
    let convert = |r: &NetworkPolicyRule| {
        let peers = if r.peers.is_empty() {
            Peers::All
        } else {
            Peers::Some(
                r.peers
                    .iter()
                    .map(|p| match p {
                        NetworkPolicyPeer::Selector {
                            pod_selector,
                            namespace_selector,
                        } => PeerSel::Pods {
                            namespaces: match namespace_selector {
                                Some(s) => NamespaceScope::Matching(s.clone()),
                                None => NamespaceScope::Same(ns.clone()),
                            },
                            pods: pod_selector.clone(),
                        },
                        NetworkPolicyPeer::IpBlock(b) => PeerSel::Cidr(b.clone()),
                    })
                    .collect(),
            )
        };
        (peers, r.ports.clone())
    };
    let ingress = np.has_type(PolicyType::Ingress);
    let egress = np.has_type(PolicyType::Egress);
    let mut rules = Vec::new();
    // Rules of a direction missing from policyTypes are ignored, as in
    // Kubernetes.
    for (enabled, dir, list) in [
        (ingress, Direction::Ingress, &np.ingress),
        (egress, Direction::Egress, &np.egress),
    ] {
        if !enabled {
            continue;
        }
        for (i, r) in list.iter().enumerate() {
            let (peers, ports) = convert(r);
            rules.push(Rule {
                rref: rule(&object, dir, false, i),
                peers,
                ports,
            });
        }
    }
    Policy {
        object,
        subject: Subject::K8s {
            namespace: ns.clone(),
            selector: np.pod_selector.clone(),
        },
        ingress,
        egress,
        rules,
    }
}

fn cilium_peers(r: &CiliumRule) -> Peers {
    if !r.has_peers() {
        // L4-only rule: every peer. Fully empty rule: none (see CiliumRule).
        return if r.ports.is_empty() {
            Peers::Some(Vec::new())
        } else {
            Peers::All
        };
    }
    let mut out: Vec<PeerSel> = r
        .endpoints
        .iter()
        .cloned()
        .map(PeerSel::Endpoints)
        .collect();
    out.extend(r.cidrs.iter().cloned().map(PeerSel::Cidr));
    out.extend(r.entities.iter().copied().map(PeerSel::Entity));
    Peers::Some(out)
}

pub(crate) fn from_cilium(cnp: &CiliumNetworkPolicy, object: ObjectRef) -> Policy {
    let mut rules = Vec::new();
    for (dir, deny, list) in [
        (Direction::Ingress, false, &cnp.ingress),
        (Direction::Ingress, true, &cnp.ingress_deny),
        (Direction::Egress, false, &cnp.egress),
        (Direction::Egress, true, &cnp.egress_deny),
    ] {
        for (i, r) in list.iter().enumerate() {
            rules.push(Rule {
                rref: rule(&object, dir, deny, i),
                peers: cilium_peers(r),
                ports: r.ports.clone(),
            });
        }
    }
    Policy {
        // Deny rules isolate too: Cilium switches the endpoint to default
        // deny for any direction that has rules.
        ingress: !cnp.ingress.is_empty() || !cnp.ingress_deny.is_empty(),
        egress: !cnp.egress.is_empty() || !cnp.egress_deny.is_empty(),
        object,
        subject: Subject::Cilium(cnp.endpoint_selector.clone()),
        rules,
    }
}
