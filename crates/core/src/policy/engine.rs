//! The policy engine's copy of the objects policy depends on.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::cluster::Cluster;
use super::rules::{from_cilium, from_k8s, Policy};
use super::state::RuleRef;
use crate::model::{Change, Kind, Object, ObjectRef, Pod};

/// Namespaces, pods and policies; compiles them into [`super::PolicyState`]
/// ([`PolicyEngine::compile`]) and answers "would this be allowed"
/// ([`PolicyEngine::evaluate`]).
#[derive(Debug, Clone, Default)]
pub struct PolicyEngine {
    pub(crate) node_ips: Vec<Ipv4Addr>,
    /// Namespace name → its labels as in the manifest.
    pub(crate) namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub(crate) pods: BTreeMap<(String, String), Pod>,
    pub(crate) policies: BTreeMap<ObjectRef, Policy>,
}

impl PolicyEngine {
    /// `node_ips`: this node's addresses, which the ipcache maps to the
    /// host identity.
    pub fn new(node_ips: Vec<Ipv4Addr>) -> Self {
        Self {
            node_ips,
            ..Self::default()
        }
    }

    pub fn node_ips(&self) -> &[Ipv4Addr] {
        &self.node_ips
    }

    pub fn set_node_ips(&mut self, node_ips: Vec<Ipv4Addr>) {
        self.node_ips = node_ips;
    }

    /// Takes the same changes as the Service engine; kinds policy does not
    /// depend on (Services, EndpointSlices) are ignored.
    pub fn apply(&mut self, changes: &[Change]) {
        let mut policies_changed = false;
        for change in changes {
            match change {
                Change::Upsert(Object::Namespace(n)) => {
                    self.namespaces
                        .insert(n.meta.name.clone(), n.meta.labels.clone());
                }
                Change::Upsert(Object::Pod(p)) => {
                    let key = (p.meta.namespace.clone(), p.meta.name.clone());
                    self.pods.insert(key, p.clone());
                }
                Change::Upsert(o @ Object::NetworkPolicy(np)) => {
                    let r = o.object_ref();
                    self.policies.insert(r.clone(), from_k8s(np, r));
                    policies_changed = true;
                }
                Change::Upsert(o @ Object::CiliumNetworkPolicy(cnp)) => {
                    let r = o.object_ref();
                    self.policies.insert(r.clone(), from_cilium(cnp, r));
                    policies_changed = true;
                }
                Change::Upsert(Object::Service(_) | Object::EndpointSlice(_)) => {}
                Change::Delete(r) => match r.kind {
                    Kind::Namespace => {
                        self.namespaces.remove(&r.name);
                    }
                    Kind::Pod => {
                        self.pods.remove(&(r.namespace.clone(), r.name.clone()));
                    }
                    Kind::NetworkPolicy | Kind::CiliumNetworkPolicy => {
                        policies_changed |= self.policies.remove(r).is_some();
                    }
                    Kind::Service | Kind::EndpointSlice => {}
                },
            }
        }
        if policies_changed {
            self.number_rules();
        }
    }

    /// Rule ids: 1.. in order of (policy, direction, deny, index), so the
    /// same policies give the same ids on every node. 0 means default deny.
    fn number_rules(&mut self) {
        let mut next = 1u32;
        for policy in self.policies.values_mut() {
            for rule in &mut policy.rules {
                rule.rref.id = next;
                next = next.saturating_add(1);
            }
        }
    }

    /// Every rule of every policy, by id (for `sluice policy` listings).
    pub fn rules(&self) -> BTreeMap<u32, RuleRef> {
        self.policies
            .values()
            .flat_map(|p| &p.rules)
            .map(|r| (r.rref.id, r.rref.clone()))
            .collect()
    }

    /// The policies currently known, in order.
    pub fn policies(&self) -> impl Iterator<Item = &ObjectRef> {
        self.policies.keys()
    }

    pub(crate) fn cluster(&self) -> Cluster<'_> {
        Cluster::new(self.pods.values(), &self.namespaces, &self.node_ips)
    }
}
