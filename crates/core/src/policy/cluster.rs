//! A read-only view of the pods as policy sees them: each with its
//! namespace's labels and derived label sets, plus who owns which IP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::identity::{identity_labels, selector_labels, NAMESPACE_NAME_LABEL};
use super::state::Peer;
use crate::model::Pod;

pub(crate) struct PodView<'a> {
    pub pod: &'a Pod,
    pub namespace_labels: BTreeMap<String, String>,
    /// What Cilium selectors match (see [`selector_labels`]).
    pub selector_labels: BTreeMap<String, String>,
    /// Canonical identity labels (see [`identity_labels`]).
    pub identity_labels: Vec<String>,
    /// The pod's IP if it owns it (see [`Cluster::new`]).
    pub ip: Option<Ipv4Addr>,
}

/// The other end of a connection, as `evaluate` sees it.
pub(crate) enum Remote<'c, 'a> {
    Pod(&'c PodView<'a>),
    /// One of this node's addresses.
    Host(Ipv4Addr),
    World(Ipv4Addr),
    /// A pod name that is not known: matches only "every peer".
    Unknown,
}

impl Remote<'_, '_> {
    pub fn ip(&self) -> Option<Ipv4Addr> {
        match self {
            Remote::Pod(p) => p.ip,
            Remote::Host(ip) | Remote::World(ip) => Some(*ip),
            Remote::Unknown => None,
        }
    }
}

pub(crate) struct Cluster<'a> {
    /// In (namespace, name) order.
    pub pods: Vec<PodView<'a>>,
    by_ip: BTreeMap<Ipv4Addr, usize>,
    by_name: BTreeMap<(&'a str, &'a str), usize>,
    pub node_ips: &'a [Ipv4Addr],
}

/// Labels of a namespace, with the name label the API server always sets
/// (also for namespaces we have no object for).
pub(crate) fn namespace_labels(
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = labels.cloned().unwrap_or_default();
    out.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    out
}

impl<'a> Cluster<'a> {
    /// When two pods report the same IP (a stale object), the first in
    /// (namespace, name) order owns it, here and in the ipcache alike.
    pub fn new(
        pods: impl IntoIterator<Item = &'a Pod>,
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
        node_ips: &'a [Ipv4Addr],
    ) -> Self {
        let mut out = Cluster {
            pods: Vec::new(),
            by_ip: BTreeMap::new(),
            by_name: BTreeMap::new(),
            node_ips,
        };
        for pod in pods {
            let ns = pod.meta.namespace.as_str();
            let namespace_labels = namespace_labels(ns, namespaces.get(ns));
            let index = out.pods.len();
            let ip = pod.ip.filter(|ip| !out.by_ip.contains_key(ip));
            if let Some(ip) = ip {
                out.by_ip.insert(ip, index);
            }
            out.by_name.insert((ns, pod.meta.name.as_str()), index);
            out.pods.push(PodView {
                selector_labels: selector_labels(&pod.meta.labels, ns, &namespace_labels),
                identity_labels: identity_labels(&pod.meta.labels, ns, &namespace_labels),
                namespace_labels,
                pod,
                ip,
            });
        }
        out
    }

    /// Pods that own an IP: the only ones the datapath can see.
    pub fn addressed(&self) -> impl Iterator<Item = (Ipv4Addr, &PodView<'a>)> + '_ {
        self.pods.iter().filter_map(|p| p.ip.map(|ip| (ip, p)))
    }

    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&PodView<'a>> {
        self.by_ip.get(&ip).and_then(|&i| self.pods.get(i))
    }

    /// A pod IP is that pod even when it is also a node address (pods
    /// are more specific in the ipcache too).
    pub fn resolve(&self, peer: &Peer) -> Remote<'_, 'a> {
        match peer {
            Peer::Pod { namespace, name } => self
                .by_name
                .get(&(namespace.as_str(), name.as_str()))
                .and_then(|&i| self.pods.get(i))
                .map_or(Remote::Unknown, Remote::Pod),
            Peer::Ip(ip) => match self.pod_by_ip(*ip) {
                Some(p) => Remote::Pod(p),
                None if self.node_ips.contains(ip) => Remote::Host(*ip),
                None => Remote::World(*ip),
            },
        }
    }
}
