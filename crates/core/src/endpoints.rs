//! Which backends a Service port load-balances to.

use crate::compile::BackendAddr;
use crate::index::{Key, Objects};
use crate::model::{Endpoint, Pod, Service, ServicePort, TargetPort};

/// Which endpoints of the slices a frontend may use.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// Every endpoint (externally reachable frontends, iTP Cluster).
    Cluster,
    /// Every endpoint, preferring the ready ones hinted for this zone
    /// (trafficDistribution PreferClose; `topology.rs`).
    ClusterPreferZone(&'a str),
    /// Only endpoints whose `nodeName` is this node (iTP Local).
    Node(Option<&'a str>),
}

/// Backends for one Service port, sorted and deduplicated so every node
/// (and every run) fills slots in the same order.
///
/// As kube-proxy: ready endpoints; when none is ready, the ones still
/// serving while terminating (a rolling update's last pods keep their
/// connections' Service working). Pods selected without EndpointSlices
/// are endpoints as the EndpointSlice controller would publish them: ready
/// when their Ready condition holds and they are not being deleted (any
/// pod with `publishNotReadyAddresses`), serving-terminating when Ready
/// while being deleted; having no node name, they count as local.
pub(crate) fn backends_for(
    objects: &Objects,
    key: &Key,
    svc: &Service,
    port: &ServicePort,
    scope: Scope<'_>,
) -> Vec<BackendAddr> {
    let mut out = if objects.has_slices(key) {
        let ready = match scope {
            Scope::ClusterPreferZone(zone) => crate::topology::same_zone(objects, key, port, zone)
                .unwrap_or_else(|| from_slices(objects, key, port, scope, |e| e.ready)),
            _ => from_slices(objects, key, port, scope, |e| e.ready),
        };
        if ready.is_empty() {
            from_slices(objects, key, port, scope, |e| e.serving && e.terminating)
        } else {
            ready
        }
    } else {
        // What the EndpointSlice controller would publish for each pod.
        let publish = svc.publish_not_ready;
        let ready: Vec<BackendAddr> = objects
            .selected_pods(svc)
            .filter(|p| publish || (p.ready && !p.terminating))
            .filter_map(|pod| from_pod(pod, port))
            .collect();
        if ready.is_empty() {
            objects
                .selected_pods(svc)
                .filter(|p| p.ready && p.terminating)
                .filter_map(|pod| from_pod(pod, port))
                .collect()
        } else {
            ready
        }
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Slices are matched to the Service port by port name (and protocol), like
/// kube-proxy; the slice supplies the numeric target port.
pub(crate) fn from_slices(
    objects: &Objects,
    key: &Key,
    port: &ServicePort,
    scope: Scope<'_>,
    usable: impl Fn(&Endpoint) -> bool,
) -> Vec<BackendAddr> {
    let in_scope = |e: &Endpoint| match scope {
        Scope::Cluster | Scope::ClusterPreferZone(_) => true,
        Scope::Node(node) => node.is_some() && e.node_name.as_deref() == node,
    };
    let mut out = Vec::new();
    for slice in objects.slices_of(key) {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in slice.endpoints.iter().filter(|e| usable(e) && in_scope(e)) {
            // Consumers use only the first address: the others are
            // interchangeable aliases of the same endpoint.
            if let Some(&ip) = ep.addresses.first() {
                out.push(BackendAddr {
                    ip,
                    port: target,
                    proto: port.protocol,
                });
            }
        }
    }
    out
}

fn from_pod(pod: &Pod, port: &ServicePort) -> Option<BackendAddr> {
    let ip = pod.ip?;
    let target = match &port.target_port {
        TargetPort::Number(n) => *n,
        TargetPort::Name(name) => {
            pod.ports
                .iter()
                .find(|c| c.name.as_deref() == Some(name.as_str()) && c.protocol == port.protocol)?
                .port
        }
    };
    Some(BackendAddr {
        ip,
        port: target,
        proto: port.protocol,
    })
}
