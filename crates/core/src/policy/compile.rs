//! Policies → the tables the datapath enforces (see [`PolicyState`]).
//!
//! The datapath, for a new connection of local endpoint E in direction D
//! where E is enforced, resolves the peer IP to an identity through the
//! ipcache (longest prefix; no match is world), then does two longest
//! prefix lookups in `entries`: with the peer identity and with
//! [`ID_ANY`](super::identity::ID_ANY). A deny from either wins, then an allow from either, else
//! default deny. Everything here serves that procedure: identities are
//! chosen so the ipcache lookup reproduces the policies' peer selection,
//! and allow entries that a less specific deny covers are turned into
//! denies, since the trie would otherwise prefer the more specific allow.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::cluster::PodView;
use super::engine::PolicyEngine;
use super::entries::{deny_wins, host_entry, rule_entries};
use super::identity::{Identities, ID_HOST, ID_WORLD};
use super::resolve::Ctx;
use super::rules::{PeerSel, Peers};
use super::state::{Direction, EndpointPolicy, PolicyState};
use crate::model::{Kind, ObjectRef};

fn pod_ref(pod: &PodView<'_>) -> ObjectRef {
    ObjectRef {
        kind: Kind::Pod,
        namespace: pod.pod.meta.namespace.clone(),
        name: pod.pod.meta.name.clone(),
    }
}

impl PolicyEngine {
    /// Full compile for a node whose local pods have the IPs in `local`.
    /// Identities and the ipcache cover the whole cluster; endpoints and
    /// entries only the local pods.
    pub fn compile(&self, local: &BTreeSet<Ipv4Addr>) -> PolicyState {
        let cluster = self.cluster();
        let prefixes = self.policies.values().flat_map(|p| &p.rules).flat_map(|r| {
            let sels: &[PeerSel] = match &r.peers {
                Peers::Some(list) => list,
                Peers::All => &[],
            };
            sels.iter().flat_map(|s| match s {
                PeerSel::Cidr(b) => std::iter::once(b.cidr).chain(b.except.clone()).collect(),
                _ => Vec::new(),
            })
        });
        let ids = Identities::allocate(
            cluster.addressed().map(|(_, p)| p.identity_labels.clone()),
            prefixes,
        );
        let mut members: BTreeMap<u32, Vec<Ipv4Addr>> = BTreeMap::new();
        let mut ipcache: BTreeMap<Ipv4Net, u32> = ids.cidrs().collect();
        for ip in &self.node_ips {
            ipcache.insert(Ipv4Net::from(*ip), ID_HOST);
        }
        for (ip, pod) in cluster.addressed() {
            if let Some(id) = ids.pod(&pod.identity_labels) {
                ipcache.insert(Ipv4Net::from(ip), id);
                members.entry(id).or_default().push(ip);
            }
        }
        let ctx = Ctx {
            cluster: &cluster,
            ids,
            members,
        };

        let local_pods: Vec<(Ipv4Addr, &PodView<'_>)> = local
            .iter()
            .filter_map(|&ip| cluster.pod_by_ip(ip).map(|p| (ip, p)))
            .collect();
        let mut endpoints = BTreeMap::new();
        for &(ip, pod) in &local_pods {
            let selecting = |dir| -> Vec<ObjectRef> {
                self.policies
                    .values()
                    .filter(|p| p.enforces(dir) && p.subject.selects(pod))
                    .map(|p| p.object.clone())
                    .collect()
            };
            let selected_by_ingress = selecting(Direction::Ingress);
            let selected_by_egress = selecting(Direction::Egress);
            endpoints.insert(
                ip,
                EndpointPolicy {
                    pod: pod_ref(pod),
                    identity: ctx.pod_id(pod).unwrap_or(ID_WORLD),
                    ingress_enforced: !selected_by_ingress.is_empty(),
                    egress_enforced: !selected_by_egress.is_empty(),
                    selected_by_ingress,
                    selected_by_egress,
                },
            );
        }

        let mut entries = BTreeMap::new();
        for policy in self.policies.values() {
            let selected: Vec<_> = local_pods
                .iter()
                .filter(|(_, p)| policy.subject.selects(p))
                .collect();
            if selected.is_empty() {
                continue;
            }
            for rule in &policy.rules {
                let peers = ctx.resolve(&rule.peers, rule.rref.deny);
                for &&(ip, pod) in &selected {
                    rule_entries(&ctx, rule, ip, pod, &peers, &mut entries);
                }
            }
        }
        for (ip, ep) in &endpoints {
            if ep.ingress_enforced {
                host_entry(&mut entries, *ip, Direction::Ingress);
            }
            if ep.egress_enforced {
                host_entry(&mut entries, *ip, Direction::Egress);
            }
        }
        deny_wins(&mut entries);

        let used: BTreeSet<u32> = entries.values().map(|e| e.rule_id).collect();
        let rules = self
            .policies
            .values()
            .flat_map(|p| &p.rules)
            .filter(|r| used.contains(&r.rref.id))
            .map(|r| (r.rref.id, r.rref.clone()))
            .collect();
        PolicyState {
            identities: ctx.ids.infos(),
            ipcache,
            endpoints,
            entries,
            rules,
        }
    }
}
