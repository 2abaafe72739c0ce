//! Peers of a rule → the identities the datapath will see for them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::cluster::{Cluster, PodView};
use super::identity::{Identities, ID_HEALTH, ID_HOST, ID_REMOTE_NODE, ID_WORLD};
use super::model::{CidrBlock, Entity};
use super::rules::{PeerSel, Peers};

/// The peers one rule matches, as identities.
#[derive(Default)]
pub(super) struct PeerSet<'c, 'a> {
    /// Every peer: a single [`ID_ANY`](super::identity::ID_ANY) entry.
    pub any: bool,
    pub ids: BTreeSet<u32>,
    /// Pods reached through selectors or pod-bearing entities: the ones an
    /// egress named port is resolved against.
    pub pods: Vec<&'c PodView<'a>>,
}

/// Compile-wide lookups.
pub(super) struct Ctx<'c, 'a> {
    pub cluster: &'c Cluster<'a>,
    pub ids: Identities,
    /// Pod identity → the IPs of the pods that carry it.
    pub members: BTreeMap<u32, Vec<Ipv4Addr>>,
}

impl<'c, 'a> Ctx<'c, 'a> {
    pub fn pod_id(&self, pod: &PodView<'_>) -> Option<u32> {
        self.ids.pod(&pod.identity_labels)
    }

    pub fn resolve(&self, peers: &Peers, deny: bool) -> PeerSet<'c, 'a> {
        let mut out = PeerSet::default();
        match peers {
            Peers::All => {
                out.any = true;
                out.pods = self.cluster.addressed().map(|(_, p)| p).collect();
            }
            Peers::Some(list) => {
                for sel in list {
                    self.resolve_one(sel, deny, &mut out);
                }
            }
        }
        out
    }

    fn add_pods(&self, out: &mut PeerSet<'c, 'a>, pred: impl Fn(&PodView<'a>) -> bool) {
        for (_, p) in self.cluster.addressed() {
            if pred(p) {
                out.ids.extend(self.pod_id(p));
                out.pods.push(p);
            }
        }
    }

    fn resolve_one(&self, sel: &PeerSel, deny: bool, out: &mut PeerSet<'c, 'a>) {
        match sel {
            PeerSel::Pods { .. } | PeerSel::Endpoints(_) => {
                self.add_pods(out, |p| sel.matches_pod_labels(p));
            }
            PeerSel::Cidr(block) => self.resolve_cidr(block, deny, &mut out.ids),
            PeerSel::Entity(Entity::All) => {
                out.any = true;
                self.add_pods(out, |_| true);
            }
            PeerSel::Entity(Entity::World) => {
                out.ids.insert(ID_WORLD);
                out.ids.extend(self.ids.cidrs().map(|(_, id)| id));
            }
            PeerSel::Entity(Entity::Cluster) => {
                self.add_pods(out, |_| true);
                out.ids.extend([ID_HOST, ID_REMOTE_NODE, ID_HEALTH]);
            }
            PeerSel::Entity(Entity::Host) => {
                out.ids.insert(ID_HOST);
            }
            PeerSel::Entity(Entity::RemoteNode) => {
                out.ids.insert(ID_REMOTE_NODE);
            }
            PeerSel::Entity(Entity::Health) => {
                out.ids.insert(ID_HEALTH);
            }
        }
    }

    /// Identities whose addresses all (allow) or any (deny) fall inside
    /// the block. CIDR identities are exact because every `cidr` and
    /// `except` prefix is in the ipcache and policy prefixes nest or are
    /// disjoint: an address resolves to a prefix inside the block and
    /// outside the holes exactly when the address is.
    fn resolve_cidr(&self, block: &CidrBlock, deny: bool, ids: &mut BTreeSet<u32>) {
        let inside =
            |p: &Ipv4Net| block.cidr.contains(p) && !block.except.iter().any(|e| e.contains(p));
        ids.extend(
            self.ids
                .cidrs()
                .filter(|(p, _)| inside(p))
                .map(|(_, id)| id),
        );
        if block.cidr.prefix_len() == 0 {
            ids.insert(ID_WORLD);
        }
        // Pods and the host are in the ipcache as /32s, so their own
        // identities must be listed. One identity may cover several
        // addresses: allow only if all are inside (never too open), deny
        // if any is (never too permissive either).
        let qualifies = |ips: &[Ipv4Addr]| {
            let mut hits = ips.iter().map(|ip| block.contains(*ip));
            if deny {
                hits.any(|h| h)
            } else {
                !ips.is_empty() && hits.all(|h| h)
            }
        };
        for (&id, ips) in &self.members {
            if qualifies(ips) {
                ids.insert(id);
            }
        }
        if qualifies(self.cluster.node_ips) {
            ids.insert(ID_HOST);
        }
    }
}
